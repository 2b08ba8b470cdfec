"""Where a torch.compile'd gate (no CUDA graphs) spends its host time: RouterLinear against nn.Linear, compiled
the same way, and a profile of one compiled call's CPU side. M = 1, gpt-oss-120b's gate (N = 128, K = 2880).

    python notes/eager/compile_probe.py [out.txt]
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from cutlass_router import RouterLinear  # noqa: E402


def per_call(fn, n=2000, rounds=5):
    for _ in range(100):
        fn()
    torch.cuda.synchronize()
    best = 1e9
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t) / n * 1e6)
    return best


def main():
    torch.manual_seed(0)
    N, K = 128, 2880
    x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
    gate = RouterLinear(K, N, device="cuda").requires_grad_(False)
    lin = torch.nn.Linear(K, N, device="cuda", dtype=torch.bfloat16).requires_grad_(False)
    rows = {"RouterLinear eager": gate, "nn.Linear eager": lin,
            "RouterLinear compiled": torch.compile(gate), "nn.Linear compiled": torch.compile(lin),
            "RouterLinear compiled, dynamic=False": torch.compile(gate, dynamic=False)}
    lines = [f"{torch.cuda.get_device_name()} torch {torch.__version__}"]
    for name, m in rows.items():
        lines.append(f"{name:40s} {per_call(lambda: m(x)):8.2f} us/call")
        print(lines[-1], flush=True)
    from torch.profiler import profile, ProfilerActivity
    c = rows["RouterLinear compiled"]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(200):
            c(x)
        torch.cuda.synchronize()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    print(table)
    lines.append(table)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
