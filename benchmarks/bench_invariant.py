"""Batch-invariant mode against the default, per M: what `batch_invariant=True` costs (issue 10's target: within
1.25x of the default at every M in 1..8192), F.linear in the same run, the kernel each mode picks named.

By default as `tune` measures: M <= 512 in the decode-layer loop (cutlass_router.yardstick: cold weights, an
RMSNorm before the router, µs per layer), larger M by isolated CUDA-graph replay (median; the loop's own time
drowns the difference there). --method isolated times every M back to back, as the earlier tables did.

    python benchmarks/bench_invariant.py [--method decode|isolated] [--out benchmarks/results]

Writes <out>/<date>-<card>-invariant[-isolated].{json,md}.
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
from cutlass_router.tune import DECODE_MAX_M
from cutlass_router.yardstick import DecodeLoop

SHAPES = (("gpt-oss-20b", 32, 2880), ("gpt-oss-120b", 128, 2880), ("deepseek-v3", 256, 7168))
MS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


def bench_us(fn, rep_ms: int) -> float:
    return triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median") * 1000.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--rep-ms", type=int, default=20)
    ap.add_argument("--method", choices=("decode", "isolated"), default="decode")
    args = ap.parse_args()
    card = torch.cuda.get_device_name()
    date = datetime.date.today().isoformat()
    records = []
    lines = [f"# batch_invariant=True against the default on {card}, {date}", "",
             f"Command: `python benchmarks/bench_invariant.py --method {args.method}`. "
             + ("µs per layer in the decode-layer loop (CUDA-graph replay, median) up to M = "
                f"{DECODE_MAX_M}, isolated CUDA-graph replay (median, µs) above; " if args.method == "decode" else
                "Isolated CUDA-graph replay, median, µs; ") + "bf16 out, bias on, PDL off.", "",
             "| model | M | measure | default | invariant | ratio | F.linear | default kernel | invariant kernel |",
             "|---|---:|---|---:|---:|---:|---:|---|---|"]
    for name, N, K in SHAPES:
        g = torch.Generator(device="cuda").manual_seed(N)
        for M in MS:
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, generator=g)
            w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(torch.bfloat16)
            b = torch.randn(N, device="cuda", dtype=torch.bfloat16, generator=g)
            fns = {"default": lambda x, w, b: cutlass_router.router_gemm(x, w, b, pdl=False),
                   "invariant": lambda x, w, b: cutlass_router.router_gemm(x, w, b, pdl=False, batch_invariant=True),
                   "F.linear": lambda x, w, b: F.linear(x, w, b)}
            if args.method == "decode" and M <= DECODE_MAX_M:
                how = "decode layer"
                loop = DecodeLoop(N, K, M)
                t = loop.measure({k: (lambda i, x, w, b, f=f: f(x, w, b)) for k, f in fns.items()},
                                 rep_ms=2 * args.rep_ms)
            else:
                how = "isolated"
                t = {k: bench_us(lambda f=f: f(x, w, b), args.rep_ms) for k, f in fns.items()}
            t_def, t_inv, t_lin = t["default"], t["invariant"], t["F.linear"]
            k_def, k_inv = dispatch.choose(N, K, M, "bf16"), dispatch.choose_invariant(N, K, M, "bf16")
            records.append(dict(model=name, N=N, K=K, M=M, measure=how, default_us=round(t_def, 3),
                                invariant_us=round(t_inv, 3),
                                flinear_us=round(t_lin, 3), default_kernel=k_def, invariant_kernel=k_inv,
                                card=card, date=date))
            line = (f"| {name} | {M} | {how} | {t_def:.2f} | {t_inv:.2f} | {t_inv / t_def:.2f} | {t_lin:.2f} | "
                    f"`{k_def}` | `{k_inv}` |")
            lines.append(line)
            print(line, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = (f"{date}-{re.sub(r'[^a-z0-9]+', '-', card.lower()).strip('-')}-invariant"
            f"{'-isolated' if args.method == 'isolated' else ''}")
    (out / f"{stem}.json").write_text(json.dumps(records, indent=1) + "\n")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
