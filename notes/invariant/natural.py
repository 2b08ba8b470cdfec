"""Experiment: tiled kernels with natural-order MMA steps (ldmatrix fragments, `natural=1`) against the committed ones
(the split kernels' interleaved steps), isolated CUDA-graph replay per M. Timing only: their bits differ by design.

    python notes/invariant/natural.py [--json out.json]

Needs the experiment's kernels in the manifest (a `natural` field of SplitKSpec, `kNatural` in splitk_tiled, their
specs in catalog.py): not in the tree, see notes/PERF.md (seventh session). Kept as the record of run 9.
"""
import argparse
import json

import torch
import triton.testing

import cutlass_router
from cutlass_router import manifest, ops
from cutlass_router.families import splitk_mma

SHAPES = {"gpt-oss-20b": (32, 2880), "gpt-oss-120b": (128, 2880), "deepseek-v3": (256, 7168)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--ms", type=int, nargs="*", default=[512, 1024, 2048, 4096, 8192])
    args = ap.parse_args()
    tiled = sorted(s for s, e in manifest.entries().items()
                   if e.family == "splitk_mma" and e.out_dtype == "bf16" and e.config.get("stages"))
    g = torch.Generator(device="cuda").manual_seed(0)
    recs = []
    for name, (N, K) in SHAPES.items():
        for M in args.ms:
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, generator=g)
            w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(torch.bfloat16)
            b = torch.randn(N, device="cuda", dtype=torch.bfloat16, generator=g)
            ref = x.double() @ w.double().T + b.double()
            us = {"default": triton.testing.do_bench_cudagraph(
                lambda: cutlass_router.router_gemm(x, w, b, pdl=False), rep=10, return_mode="median") * 1e3}
            for s in tiled:
                if splitk_mma.blocker(manifest.entry(s), M, N):
                    continue
                out = ops.run_kernel(s, x, w, b, torch.float32 if False else torch.bfloat16, pdl=False)
                err = float((out.double() - ref).abs().max())
                assert err < 0.05, (s, M, err)  # a wrong layout would be far off
                us[s] = triton.testing.do_bench_cudagraph(
                    lambda s=s: ops.run_kernel(s, x, w, b, torch.bfloat16, pdl=False), rep=10,
                    return_mode="median") * 1e3
            best = {k: min((v, s) for s, v in us.items() if "tiled" in s and s.endswith(k)) for k in ("x1", "x1n")}
            print(f"{name} M={M}: default {us['default']:.2f} | interleaved {best['x1'][0]:.2f} {best['x1'][1][16:]} "
                  f"| natural {best['x1n'][0]:.2f} {best['x1n'][1][16:]} | ratios {best['x1'][0] / us['default']:.2f} "
                  f"-> {best['x1n'][0] / us['default']:.2f}", flush=True)
            recs.append(dict(model=name, N=N, K=K, M=M, us=us))
    if args.json:
        json.dump(recs, open(args.json, "w"), indent=1)


if __name__ == "__main__":
    main()
