"""Host cost of one eager call at M=1 (no graph): our ops next to F.linear and tinygemm2 (a C++ extension), and
the pieces of our path.

Run on the GPU: python scripts/eager_cost.py [--json FILE]. Each figure is wall time per call over 5000 calls after
warm-up, with a device sync at both ends; at M=1 the kernels finish long before the host issues the next call, so
this is the host's cost per call.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cutlass_router import RouterLinear, launch, plan, route, router_gemm  # noqa: E402


def per_call_us(fn, n=5000):
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e6


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    N, K = 128, 2880
    x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
    w = (torch.randn(N, K, device="cuda") * K ** -0.5).to(torch.bfloat16)
    b = torch.randn(N, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(1, N, device="cuda", dtype=torch.bfloat16)
    gate = RouterLinear(K, N, device="cuda").requires_grad_(False)
    compiled = torch.compile(gate)  # default mode: Inductor, no CUDA graphs
    pw, pb = torch.nn.Parameter(w.clone()), torch.nn.Parameter(b.clone())  # as a patched model's gate holds them

    @torch.no_grad()
    def gate_route(x, weight, bias):  # as transformers' generate calls a patched gate
        return route(x, weight, bias, 4)

    parts = {
        "F.linear(x, w, b)": lambda: F.linear(x, w, b),
        "cutlass_router.router_gemm": lambda: router_gemm(x, w, b),
        "cutlass_router.router_gemm(out=)": lambda: router_gemm(x, w, b, out=out),
        "torch.ops.cutlass_router.router_gemm": lambda: torch.ops.cutlass_router.router_gemm(x, w, b),
        "torch.compile(RouterLinear) (no graphs)": lambda: compiled(x),
        "HF gpt-oss routing: F.linear+topk+softmax": lambda: torch.softmax(F.linear(x, w, b).topk(4, dim=-1)[0],
                                                                           dim=1),
        "cutlass_router.route (top-4)": lambda: route(x, w, b, 4),
        "route, nn.Parameter weights, no_grad (a model's gate)": lambda: gate_route(x, pw, pb),
    }
    try:
        sys.path.insert(0, str(ROOT / ".anchor"))
        import tg2

        ext = tg2.load()
        parts["tinygemm2 (C++ extension)"] = lambda: ext.tg2(x, w, b, True)
        parts["empty kernel (C++ extension)"] = lambda: ext.empty(False, 8)
    except Exception as e:  # the peer is measuring equipment: note its absence and go on
        print(f"tinygemm2 not available: {type(e).__name__}: {e}")
    p_ = plan.gemm(x, w, b, None, None, False)
    k = p_.kernel
    parts.update({
        "  plan.gemm (the cached plan)": lambda: plan.gemm(x, w, b, None, None, False),
        "  plan.run_gemm (the plan's launch + alloc)": lambda: plan.run_gemm(p_, x, w, b, None, False),
        "  plan.launch_gemm (pack + launch)": lambda: plan.launch_gemm(k, x, w, b, out, True),
        "  launch.launch (the foreign call)": lambda: launch.launch(k, 0, plan.raw_stream(0), True, (8, 1, 1)),
        "  x.new_empty": lambda: x.new_empty((1, N)),
        "  torch.empty(device=0)": lambda: torch.empty((1, N), dtype=torch.bfloat16, device=0),
    })
    rows = {}
    for name, fn in parts.items():
        rows[name] = per_call_us(fn)
        print(f"{name:<46} {rows[name]:6.2f} us/call", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"card": torch.cuda.get_device_name(), "M": 1, "N": N, "K": K,
                                         "us_per_call": rows}, indent=1))


if __name__ == "__main__":
    main()
