"""Router GEMM benchmark: cutlass_router against torch (F.linear -> cuBLAS), CUDA-graph replay, median.

    python benchmarks/bench_router_gemm.py --model openai/gpt-oss-20b --max-batch-size 8192

Prints the upstream-style table (batch_size, PyTorch TFLOPs, cutlass_router TFLOPs) with microseconds, the
ratio and the empty-kernel floor, with PDL on and off; writes <out>/<date>-<card>-<model>.{json,md,png}.
Same input every replay, as the upstream router-GEMM benchmarks do, so W and small x stay in L2.
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton.testing

import cutlass_router
from cutlass_router import launch, manifest, models

EMPTY_SOURCE = r"""
struct Params72 { unsigned long long v[9]; };  // the size of SplitKParams, which the launcher packs
extern "C" __global__ void crt_empty_kernel(const __grid_constant__ Params72 p) {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  asm volatile("griddepcontrol.wait;" ::: "memory");
}
"""


def bench_us(fn, rep_ms: int) -> float:
    return triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median") * 1000.0


def empty_kernel(ctas: int, pdl: bool):
    """A do-nothing kernel through this library's launcher: the floor any launch pays (one CTA per 'expert')."""
    from cutlass_router import plan

    entry = manifest.KernelEntry("crt_empty_kernel", "splitk_mma", "", "", "", "bf16", {},
                                 {"block_threads": 128, "cluster": 1, "tile_tokens": 1, "tile_experts": 1})
    k = launch.load_entry(entry, EMPTY_SOURCE)
    x = torch.zeros(1, 8, device="cuda", dtype=torch.bfloat16)
    w = torch.zeros(ctas, 8, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(1, ctas, device="cuda", dtype=torch.bfloat16)
    return lambda: plan.launch_gemm(k, x, w, None, out, pdl)


def decode_step(w, b, use_ours: bool):
    """RMSNorm -> router GEMM -> top-4 softmax: the part of an MoE decode step around the router."""
    norm_w = torch.ones(w.shape[1], device=w.device, dtype=torch.bfloat16)

    def step(h):
        x = F.rms_norm(h, (h.shape[-1],), norm_w, 1e-5)
        logits = cutlass_router.router_gemm(x, w, b) if use_ours else F.linear(x, w, b)
        vals, idx = logits.topk(4, dim=-1)
        return torch.softmax(vals.float(), dim=-1), idx

    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="openai/gpt-oss-120b")
    p.add_argument("--max-batch-size", type=int, default=8192)
    p.add_argument("--rep-ms", type=int, default=50)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = p.parse_args(argv)
    N, K = models.shape(args.model)
    name = args.model.split("/")[-1]
    card = torch.cuda.get_device_name()
    date = datetime.date.today().isoformat()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    w = (torch.randn(N, K, device=dev) * K ** -0.5).to(torch.bfloat16)
    b = torch.randn(N, device=dev, dtype=torch.bfloat16)
    records, lines = [], []
    Ms = [m for m in (2 ** i for i in range(20)) if m <= args.max_batch_size]

    def rec(M, provider, pdl, us):
        records.append({"model": name, "experts": N, "hidden": K, "M": M, "provider": provider, "pdl": pdl,
                        "us": round(us, 3), "card": card, "date": date})

    floor = {pdl: bench_us(empty_kernel(N // 16, pdl), args.rep_ms) for pdl in (True, False)}
    head = (f"{'batch_size':>10} {'PyTorch TFLOPs':>14} {'cutlass_router TFLOPs':>21} {'torch us':>9} "
            f"{'ours us':>8} {'ours no-PDL us':>14} {'fp32-out us':>11} {'invariant us':>12} {'ratio':>6}")
    print(f"{name}: N={N} K={K}, {card}, {date}; empty-kernel floor {floor[True]:.2f} us (PDL), "
          f"{floor[False]:.2f} us (no PDL)")
    print(head)
    lines.append(head)
    for M in Ms:
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        t_torch = bench_us(lambda: F.linear(x, w, b), args.rep_ms)
        t_ours = bench_us(lambda: cutlass_router.router_gemm(x, w, b, pdl=True), args.rep_ms)
        t_nopdl = bench_us(lambda: cutlass_router.router_gemm(x, w, b, pdl=False), args.rep_ms)
        t_f32 = bench_us(lambda: cutlass_router.router_gemm(x, w, b, out_dtype=torch.float32), args.rep_ms)
        t_inv = bench_us(lambda: cutlass_router.router_gemm(x, w, b, batch_invariant=True), args.rep_ms)
        rec(M, "torch", False, t_torch)
        rec(M, "cutlass_router", True, t_ours)
        rec(M, "cutlass_router", False, t_nopdl)
        records.append(dict(records[-2], provider="cutlass_router_fp32_out", us=round(t_f32, 3)))
        records.append(dict(records[-3], provider="cutlass_router_batch_invariant", us=round(t_inv, 3)))
        flops = 2.0 * M * N * K
        line = (f"{M:>10} {flops / t_torch / 1e6:>14.2f} {flops / t_ours / 1e6:>21.2f} {t_torch:>9.2f} "
                f"{t_ours:>8.2f} {t_nopdl:>14.2f} {t_f32:>11.2f} {t_inv:>12.2f} {t_torch / t_ours:>5.2f}x")
        print(line, flush=True)
        lines.append(line)
    step_rows = []
    for M in (1, 8, 64):
        h = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        t_ref = bench_us(lambda: decode_step(w, b, False)(h), args.rep_ms)
        t_new = bench_us(lambda: decode_step(w, b, True)(h), args.rep_ms)
        step_rows.append(f"| {M} | {t_ref:.2f} | {t_new:.2f} | {100 * (t_ref - t_new) / t_ref:.0f}% |")
        rec(M, "decode_step_torch", False, t_ref)
        rec(M, "decode_step_cutlass_router", True, t_new)
    stem = f"{date}-{re.sub('[^A-Za-z0-9]+', '-', card).strip('-').lower()}-{name}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(records, indent=1) + "\n")
    md = [f"# {name} router GEMM (N={N}, K={K}) on {card}, {date}", "",
          f"Command: `python benchmarks/bench_router_gemm.py --model {args.model} --max-batch-size "
          f"{args.max_batch_size}` (torch {torch.__version__}; CUDA-graph replay, median of "
          f"`triton.testing.do_bench_cudagraph`, rep={args.rep_ms} ms; bias on, bf16 out unless noted).", "",
          f"Empty kernel through the same launcher: {floor[True]:.2f} us with PDL, {floor[False]:.2f} us without.", "",
          "```", *lines, "```", "", "Decode-step stand-in (RMSNorm, router GEMM, top-4 softmax), us:", "",
          "| M | with F.linear | with cutlass_router | saved |", "|---:|---:|---:|---:|", *step_rows, ""]
    (args.out / f"{stem}.md").write_text("\n".join(md))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for prov, pdl, label in (("torch", False, "torch F.linear (cuBLAS)"),
                                 ("cutlass_router", True, "cutlass_router (PDL)"),
                                 ("cutlass_router", False, "cutlass_router (no PDL)")):
            pts = [(r["M"], r["us"]) for r in records if r["provider"] == prov and r["pdl"] == pdl]
            ax.plot(*zip(*pts), marker="o", label=label)
        ax.axhline(floor[True], color="gray", ls="--", label="empty kernel (PDL)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("tokens M")
        ax.set_ylabel("us per call (graph replay)")
        ax.set_title(f"{name} router GEMM, N={N} K={K}, {card}")
        ax.legend()
        ax.grid(True, which="both", alpha=0.3)
        fig.tight_layout()
        fig.savefig(args.out / f"{stem}.png", dpi=120)
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    print(f"wrote {args.out / stem}.{{json,md,png}}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
