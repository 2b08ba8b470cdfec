"""The README's performance table from benchmarks/results/*.json: ours against F.linear (same run) and against
tinygemm2's anchor figures (../shared/anchors-h100.md, H100, not re-measured here).

    python benchmarks/summarize.py benchmarks/results/<date>-<card>-gpt-oss-20b.json ...-gpt-oss-120b.json
"""
import json
import math
import sys

# tinygemm2, us, CUDA-graph replay on the lent H100 (anchors-h100.md, 2026-11-27), K = 2880
TINYGEMM2 = {
    32: {1: 2.08, 2: 2.03, 4: 2.03, 8: 2.03, 16: 2.06, 32: 2.04, 64: 2.08, 128: 2.12, 256: 2.17, 512: 2.99,
         1024: 5.96, 2048: 11.87, 4096: 22.79, 8192: 46.49},
    128: {1: 2.11, 2: 2.11, 4: 2.11, 8: 2.11, 16: 2.14, 32: 2.10, 64: 2.39, 128: 3.17, 256: 6.23, 512: 12.27,
          1024: 24.04, 2048: 46.61, 4096: 86.50, 8192: 173.61},
}


def main(paths):
    rows = []
    for path in paths:
        recs = json.load(open(path))
        t = {(r["provider"], r["pdl"], r["M"]): r["us"] for r in recs}
        N = recs[0]["experts"]
        for M in sorted(m for (p, _, m) in t if p == "torch"):
            torch_us, ours = t[("torch", False, M)], t[("cutlass_router", True, M)]
            tiny = TINYGEMM2.get(N, {}).get(M, math.inf)
            rows.append((N, M, torch_us, tiny, ours, t[("cutlass_router", False, M)],
                         t[("cutlass_router_fp32_out", True, M)], t[("cutlass_router_batch_invariant", True, M)],
                         min(torch_us, tiny) / ours))
    print("| N | M | F.linear | tinygemm2 (anchor) | cutlass_router | no PDL | fp32 out | batch-invariant "
          "| best peer / ours |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print("| " + " | ".join([str(r[0]), str(r[1])] + [f"{v:.2f}" for v in r[2:]]) + " |")
    g = math.exp(sum(math.log(r[-1]) for r in rows) / len(rows))
    worst = min(rows, key=lambda r: r[-1])
    f32 = max(r[6] / r[4] for r in rows)
    print(f"\nGeometric mean of (best peer / ours) over these {len(rows)} points: **{g:.2f}**; lowest "
          f"{worst[-1]:.2f} (N={worst[0]}, M={worst[1]}). fp32 logits: at most {100 * (f32 - 1):.1f}% slower than "
          "bf16 output.")


if __name__ == "__main__":
    main(sys.argv[1:])
