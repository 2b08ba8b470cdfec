"""gpt-oss-20b's router: 32 experts, hidden 2880. Run: python examples/gpt_oss_20b.py [--checkpoint DIR --layer L]"""
from router_demo import run

if __name__ == "__main__":
    run("gpt-oss-20b", experts=32, hidden=2880)
