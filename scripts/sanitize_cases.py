"""Every kernel dispatch can pick (tuned and default ladders, both output dtypes), once each at
odd sizes, checked against fp64: the workload for scripts/sanitize.sh under compute-sanitizer."""
import os
import sys

import torch

from cutlass_router import dispatch, manifest, ops

SHAPES = [(1, 32, 2880), (13, 60, 1000), (127, 128, 2880), (1000, 128, 2888)]


def main() -> int:
    symbols = dispatch.reachable()
    only = os.environ.get("SANITIZE_ONLY")  # comma-separated symbols: check these instead
    if only:
        symbols = set(only.split(","))
    skip = os.environ.get("SANITIZE_EXCLUDE")  # comma-separated symbols a tool cannot check (sanitize.sh says why)
    if skip:
        symbols -= set(skip.split(","))
    shapes = SHAPES
    if os.environ.get("SANITIZE_SHAPES"):  # "M,N,K;M,N,K": narrow a finding down
        shapes = [tuple(int(v) for v in item.split(",")) for item in os.environ["SANITIZE_SHAPES"].split(";")]
    bad = 0
    for sym in sorted(symbols):
        dtype = torch.bfloat16 if manifest.entry(sym).out_dtype == "bf16" else torch.float32
        for M, N, K in shapes:
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            w = (torch.randn(N, K, device="cuda") * K ** -0.5).to(torch.bfloat16)
            b = torch.randn(N, device="cuda", dtype=torch.bfloat16)
            out = torch.full((M, N), float("nan"), device="cuda", dtype=dtype)
            if os.environ.get("SANITIZE_VERBOSE"):  # a tool that kills the process: the last line names the case
                print(f"{sym} M={M} N={N} K={K}", flush=True)
            try:
                ops.run_kernel(sym, x, w, b, dtype, out=out)
            except ValueError:  # a TMA kernel and an N it cannot store: dispatch never sends it there
                continue
            ref = x.double() @ w.double().T + b.double()
            err = ((out.double() - ref).norm() / ref.norm()).item()
            if not err < (1e-2 if dtype == torch.bfloat16 else 1e-5):
                bad += 1
                print(f"WRONG {sym} M={M} N={N} K={K}: {err}")
    torch.cuda.synchronize()
    print(f"{len(symbols)} kernels x {len(shapes)} shapes, {bad} wrong")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
