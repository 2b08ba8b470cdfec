"""Experiment: tiled serial kernels (splitk_tiled) against the split kernels of the same order and the default, per
M, and their bits against a split kernel of their order. Isolated CUDA-graph replay, median, µs; bf16 out, bias on.

    python notes/invariant/tiles.py [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys

import torch
import triton.testing

import cutlass_router
from cutlass_router import manifest, ops
from cutlass_router.families import splitk_mma

SHAPES = {"gpt-oss-20b": (32, 2880, ((32, 1, 1),)),
          "gpt-oss-120b": (128, 2880, ((32, 1, 1),)),
          "deepseek-v3": (256, 7168, ((32, 1, 1),))}
MS = (1, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def of_order(order, tiled):
    out = []
    for s, e in manifest.entries().items():
        if e.family != "splitk_mma" or e.out_dtype != "bf16":
            continue
        is_tiled = bool(e.config.get("stages"))
        if is_tiled == tiled and (tiled or not e.config.get("order_slices")) and splitk_mma.order(e) == order:
            out.append(s)
    return sorted(out)


def bench(fn, rep):
    return triton.testing.do_bench_cudagraph(fn, rep=rep, return_mode="median") * 1000.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--rep-ms", type=int, default=10)
    ap.add_argument("--models", nargs="*", default=list(SHAPES))
    ap.add_argument("--min-m", type=int, default=1)
    args = ap.parse_args()
    g = torch.Generator(device="cuda").manual_seed(0)
    records, bad = [], 0
    for name in args.models:
        N, K, orders = SHAPES[name]
        for order in orders:
            tiled, split = of_order(order, True), of_order(order, False)
            print(f"== {name} order {order}: {len(tiled)} tiled, split {split}", flush=True)
            if not split:
                continue
            # Bits: every tiled kernel against the first split kernel of its order, odd shapes included.
            for (n, k) in ((N, K), (60, 1000)):
                for M in (1, 13, 300, 1000, 3000):
                    x = torch.randn(M, k, device="cuda", dtype=torch.bfloat16, generator=g)
                    x[min(5, M - 1)] = -0.0
                    w = (torch.randn(n, k, device="cuda", generator=g) * k ** -0.5).to(torch.bfloat16)
                    b = torch.randn(n, device="cuda", dtype=torch.bfloat16, generator=g)
                    ref = torch.full((M, n), float("nan"), device="cuda", dtype=torch.bfloat16)
                    ops.run_kernel(split[0], x, w, b, torch.bfloat16, out=ref)
                    for s in tiled:
                        out = torch.full((M, n), float("nan"), device="cuda", dtype=torch.bfloat16)
                        try:
                            ops.run_kernel(s, x, w, b, torch.bfloat16, out=out)
                        except Exception as exc:  # noqa: BLE001 - report and go on
                            print("ERROR", s, exc, flush=True)
                            bad += 1
                            continue
                        if not torch.equal(out, ref):
                            d = (out.float() - ref.float()).abs()
                            print(f"BITS DIFFER {s} vs {split[0]} n={n} k={k} M={M}: {int((d > 0).sum())} elements, "
                                  f"nan {int(out.isnan().sum())}, max {float(d.nan_to_num(1e9).max()):.3g}", flush=True)
                            bad += 1
            torch.cuda.synchronize()
            for M in (m for m in MS if m >= args.min_m):
                x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, generator=g)
                w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(torch.bfloat16)
                b = torch.randn(N, device="cuda", dtype=torch.bfloat16, generator=g)
                t = {"default": bench(lambda: cutlass_router.router_gemm(x, w, b, pdl=False), args.rep_ms)}
                for s in split + (tiled if M >= 128 else []):
                    if splitk_mma.blocker(manifest.entry(s), M, N):
                        continue
                    t[s] = bench(lambda s=s: ops.run_kernel(s, x, w, b, torch.bfloat16, pdl=False), args.rep_ms)
                bt = min((v, s) for s, v in t.items() if "tiled" in s) if M >= 128 else (float("inf"), "-")
                bs = min((v, s) for s, v in t.items() if s in split)
                best = min(bt[0], bs[0])
                print(f"{name} {order} M={M}: default {t['default']:.2f} | split {bs[0]:.2f} {bs[1][16:]} | "
                      f"tiled {bt[0]:.2f} {bt[1][16:]} | ratio {best / t['default']:.2f}", flush=True)
                records.append(dict(model=name, N=N, K=K, order=list(order), M=M, us=t))
    print("bit mismatches / errors:", bad)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
