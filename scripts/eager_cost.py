"""Host cost of one eager call at M=1 (no graph): our ops next to F.linear and tinygemm2 (a C++ extension), and
the pieces of our path.

Run on the GPU: python scripts/eager_cost.py [--json FILE] [--rounds R]. Each figure is wall time per call over 2000
calls after warm-up, with a device sync at both ends; at M=1 the kernels finish long before the host issues the next
call, so this is the host's cost per call. The rows are measured in R interleaved rounds (default 7) and each
reports its median round: a lent host's speed drifts by 1.5x within a minute (2026-11-29: router_gemm 13.9 and
18.9 us in two runs), which one pass per row would charge to whichever row it hit.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from cutlass_router import RouterLinear, launch, ops, plan, route, router_gemm  # noqa: E402


def per_call_us(fn, n=2000, warm=200):
    for _ in range(warm):
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
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    N, K = 128, 2880
    x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16)
    w = (torch.randn(N, K, device="cuda") * K ** -0.5).to(torch.bfloat16)
    b = torch.randn(N, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(1, N, device="cuda", dtype=torch.bfloat16)
    route_out = (torch.empty(1, 4, device="cuda"), torch.empty(1, 4, device="cuda", dtype=torch.int32))
    gate = RouterLinear(K, N, device="cuda").requires_grad_(False)
    compiled = torch.compile(gate)  # default mode: Inductor, no CUDA graphs
    # The peer compiled the same way: what a compiled gate costs with cuBLAS behind it (the wrapper Inductor
    # generates, Dynamo's guards and the AOT runtime wrapper are common to both).
    linear = torch.nn.Linear(K, N, device="cuda", dtype=torch.bfloat16).requires_grad_(False)
    compiled_linear = torch.compile(linear)
    pw, pb = torch.nn.Parameter(w.clone()), torch.nn.Parameter(b.clone())  # as a patched model's gate holds them

    @torch.no_grad()
    def gate_route(x, weight, bias):  # as transformers' generate calls a patched gate
        return route(x, weight, bias, 4)

    capturing = ops._capturing

    def graph_kernels_route():  # the kernels a CUDA graph would capture (GEMM + select), launched eagerly
        ops._capturing = lambda: True
        try:
            return route(x, w, b, 4)
        finally:
            ops._capturing = capturing

    parts = {
        "F.linear(x, w, b)": lambda: F.linear(x, w, b),
        "cutlass_router.router_gemm": lambda: router_gemm(x, w, b),
        "cutlass_router.router_gemm(out=)": lambda: router_gemm(x, w, b, out=out),
        "torch.ops.cutlass_router.router_gemm": lambda: torch.ops.cutlass_router.router_gemm(x, w, b),
        "torch.compile(RouterLinear) (no graphs)": lambda: compiled(x),
        "torch.compile(nn.Linear) (no graphs)": lambda: compiled_linear(x),
        "HF gpt-oss routing: F.linear+topk+softmax": lambda: torch.softmax(F.linear(x, w, b).topk(4, dim=-1)[0],
                                                                           dim=1),
        "cutlass_router.route (top-4)": lambda: route(x, w, b, 4),
        "route(out=) (top-4)": lambda: route(x, w, b, 4, out=route_out),
        "route on the graph's kernels (GEMM + select)": graph_kernels_route,
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
    r_args = ops._args(4, "topk_softmax", False, 1, 1, 1.0, "bf16", None, torch.float32, torch.int32)
    rp = plan.route(x, w, b, None, r_args, False, one_launch=True)
    k = p_.kernel
    parts.update({
        "  plan.gemm (the cached plan)": lambda: plan.gemm(x, w, b, None, None, False),
        "  plan.run_gemm (the plan's launch + alloc)": lambda: plan.run_gemm(p_, x, w, b, None, False),
        "  plan.launch_gemm (pack + launch)": lambda: plan.launch_gemm(k, x, w, b, out, True),
        "  launch.launch (the foreign call)": lambda: launch.launch(k, 0, plan.raw_stream(0), True, (8, 1, 1)),
        "  x.new_empty": lambda: x.new_empty((1, N)),
        "  torch.empty(device=0)": lambda: torch.empty((1, N), dtype=torch.bfloat16, device=0),
        "  plan.route (route's cached plan)": lambda: plan.route(x, w, b, None, r_args, False, one_launch=True),
        "  plan.run_route (route's launch + 2 allocs)": lambda: plan.run_route(rp, x, w, b, None, None, False),
        "  ops._one_launch (asks whether capturing)": lambda: ops._one_launch(x, r_args, None),
    })
    rounds = {name: [] for name in parts}
    for r in range(args.rounds):
        for name, fn in parts.items():
            rounds[name].append(per_call_us(fn, warm=200 if r == 0 else 20))
    rows = {name: statistics.median(v) for name, v in rounds.items()}
    for name, v in rounds.items():
        print(f"{name:<54} {rows[name]:6.2f} us/call (rounds {min(v):.2f}-{max(v):.2f})", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"card": torch.cuda.get_device_name(), "M": 1, "N": N, "K": K,
                                         "rounds": args.rounds, "us_per_call": rows,
                                         "us_per_call_rounds": rounds}, indent=1))


if __name__ == "__main__":
    main()
