"""Where does a small-M split-K call spend its time? Time variants of the template with stages removed.

Scratch experiment (results are wrong by design); run on the GPU: python scripts/profile_splitk.py
"""
import torch
import triton.testing

from cutlass_router import launch, manifest, plan
from cutlass_router.families.splitk_mma import SplitKSpec

LOOP = "for (int c0 = c_begin; c0 < c_end; c0 += kUnroll) {"
XLOAD = "xv[u][t][v] = detail::load_16B(xrow[t] + (c0 + u) * 64 + 32 * v,"
EXCH = "  if constexpr (kCluster > 1) {\n    cute::cluster_wait();\n    if (threadIdx.x == 0) {"
SKIP_LOOP = (LOOP, "for (int c0 = c_begin; c0 < c_begin - 1; c0 += kUnroll) {")
VARIANTS = {
    "full": [],
    "no_mainloop": [SKIP_LOOP],
    "no_x_load": [(XLOAD, "xv[u][t][v] = u >= 0 ? wv[u][0][0][v] : detail::load_16B(xrow[t] + (c0 + u) * 64 + 32 * v,")],
    "no_exchange": [(EXCH, "  if constexpr (kCluster > 1) cute::cluster_wait();\n  if (threadIdx.x < 8) static_cast<OutT*>"
                           "(p.out)[threadIdx.x] = detail::from_float<OutT>(acc[0][0][0][0]);\n  return;\n" + EXCH)],
    "empty": [SKIP_LOOP, (EXCH, "  if constexpr (kCluster > 1) cute::cluster_wait();\n  return;\n" + EXCH)],
}


def loaded(spec, name, edits):
    src = manifest.expand(spec.emit())
    for old, new in edits:
        assert old in src, (name, old)
        src = src.replace(old, new)
    entry = manifest.KernelEntry(spec.symbol, "splitk_mma", "", "", "", spec.out_dtype, spec.config(), spec.launch())
    return launch.load_entry(entry, src)


def main():
    N, K = 128, 2880
    w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(N, device="cuda", dtype=torch.bfloat16)
    specs = [SplitKSpec("bf16", 4, 4, 1, 1, 4), SplitKSpec("bf16", 4, 8, 1, 1, 2), SplitKSpec("bf16", 16, 1, 1, 1, 2),
             SplitKSpec("bf16", 4, 16, 1, 1, 1), SplitKSpec("bf16", 8, 8, 1, 1, 1), SplitKSpec("bf16", 4, 8, 1, 2, 2)]
    print(f"{'kernel':<34} " + " ".join(f"{v:>12}" for v in VARIANTS) + "   (us, M=1 and M=16, N=128, PDL)")
    for M in (1, 16):
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
        out = torch.empty(M, N, device="cuda", dtype=torch.bfloat16)
        for spec in specs:
            row = []
            for name, edits in VARIANTS.items():
                k = loaded(spec, name, edits)
                fn = lambda: plan.launch_gemm(k, x, w, b, out, True)
                row.append(triton.testing.do_bench_cudagraph(fn, rep=30, return_mode="median") * 1000)
            print(f"{spec.symbol + f' M={M}':<34} " + " ".join(f"{t:12.2f}" for t in row), flush=True)


if __name__ == "__main__":
    main()
