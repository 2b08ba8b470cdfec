"""Batch-invariant mode against the default, per M: what `batch_invariant=True` costs (issue 10's target: within
1.25x of the default at every M in 1..8192). Isolated CUDA-graph replay (median; the same inputs every replay, as
bench_router_gemm.py), F.linear in the same run, the kernel each mode picks named.

    python benchmarks/bench_invariant.py [--out benchmarks/results]

Writes <out>/<date>-<card>-invariant.{json,md}.
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
from pathlib import Path

import torch
import torch.nn.functional as F
import triton.testing

import cutlass_router
from cutlass_router import dispatch

SHAPES = (("gpt-oss-20b", 32, 2880), ("gpt-oss-120b", 128, 2880), ("deepseek-v3", 256, 7168))
MS = (1, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def bench_us(fn, rep_ms: int) -> float:
    return triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median") * 1000.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--rep-ms", type=int, default=20)
    args = ap.parse_args()
    card = torch.cuda.get_device_name()
    date = datetime.date.today().isoformat()
    records = []
    lines = [f"# batch_invariant=True against the default on {card}, {date}", "",
             "Command: `python benchmarks/bench_invariant.py`. Isolated CUDA-graph replay, median, µs; bf16 out, "
             "bias on, PDL off.", "",
             "| model | M | default | invariant | ratio | F.linear | default kernel | invariant kernel |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for name, N, K in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(N)
        for M in MS:
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, generator=g)
            w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(torch.bfloat16)
            b = torch.randn(N, device="cuda", dtype=torch.bfloat16, generator=g)
            t_def = bench_us(lambda: cutlass_router.router_gemm(x, w, b, pdl=False), args.rep_ms)
            t_inv = bench_us(lambda: cutlass_router.router_gemm(x, w, b, pdl=False, batch_invariant=True), args.rep_ms)
            t_lin = bench_us(lambda: F.linear(x, w, b), args.rep_ms)
            k_def, k_inv = dispatch.choose(N, K, M, "bf16"), dispatch.choose_invariant(N, K, M, "bf16")
            records.append(dict(model=name, N=N, K=K, M=M, default_us=round(t_def, 3), invariant_us=round(t_inv, 3),
                                flinear_us=round(t_lin, 3), default_kernel=k_def, invariant_kernel=k_inv,
                                card=card, date=date))
            line = (f"| {name} | {M} | {t_def:.2f} | {t_inv:.2f} | {t_inv / t_def:.2f} | {t_lin:.2f} | "
                    f"`{k_def}` | `{k_inv}` |")
            lines.append(line)
            print(line, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{date}-{re.sub(r'[^a-z0-9]+', '-', card.lower()).strip('-')}-invariant"
    (out / f"{stem}.json").write_text(json.dumps(records, indent=1) + "\n")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
