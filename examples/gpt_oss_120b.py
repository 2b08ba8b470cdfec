"""gpt-oss-120b's router: 128 experts, hidden 2880. Run: python examples/gpt_oss_120b.py [--checkpoint DIR --layer L]"""
from router_demo import run

if __name__ == "__main__":
    run("gpt-oss-120b", experts=128, hidden=2880)
