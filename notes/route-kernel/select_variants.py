"""Scratch experiment: why is the select kernel slower than the Triton stand-in in isolated replay? Variants of
templates/route.cuh's select kernel, compiled from edited copies of the template, timed side by side with Triton
on the same logits (do_bench_cudagraph, median, hot L2).

    python notes/route-kernel/select_variants.py --build-only   # compile every variant into the cache (no GPU)
    python notes/route-kernel/select_variants.py                # the table (GPU)

Variants (each an edit of the template, asserted to apply):
    base    the shipped kernel (one router, its slot count, 8 rows per 256-thread CTA)
    nogdc   without griddepcontrol.launch_dependents / griddepcontrol.wait
    w1      one row per 32-thread CTA (Triton's num_warps=1 shape; since the fifth session the kernel reads its rows
            per CTA from blockDim, so only the launch differs, and the sigmoid router ships it up to M = 256)
    fast    __expf and fast reciprocal/division in the weights (NOT accurate enough to ship: a probe)
    all     nogdc + w1 + fast
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from cutlass_router import manifest, resolve  # noqa: E402
from cutlass_router.families import route as fam  # noqa: E402

TEMPLATE = (ROOT / "cutlass_router" / "templates" / "route.cuh").read_text().replace("#pragma once\n", "")


def edit(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


def nogdc(t):
    t = edit(t, '''  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if (p.mode != kMode''', '''  if (p.mode != kMode''')
    return edit(t, '''  asm volatile("griddepcontrol.wait;" ::: "memory");  // the logits come from the previous kernel
''', "")


def w1(t):
    return edit(t, "constexpr int kSelectWarps = 8;", "constexpr int kSelectWarps = 1;")


def fast(t):
    start, end = t.index("__device__ __forceinline__ void select_row("), t.index("// Fused router GEMM + selection.")
    body = t[start:end]
    body = edit(body, "1.0f / (1.0f + expf(-v[i]))", "__frcp_rn(1.0f + __expf(-v[i]))")
    body = body.replace("expf(", "__expf(").replace("____expf(", "__expf(")
    body = edit(body, "wgt = e / s;", "wgt = __fdividef(e, s);")
    body = edit(body, "__expf(my_val - mx) / sum", "__fdividef(__expf(my_val - mx), sum)")
    return t[:start] + body + t[end:]


VARIANTS = {"base": [], "nogdc": [nogdc], "w1": [w1], "fast": [fast], "all": [nogdc, w1, fast]}
CASES = [  # label, N, top_k, scoring, n_group, topk_group, logits fp32, Ms
    ("gpt-oss-20b", 32, 4, "topk_softmax", 1, 1, False, (1, 256)),
    ("gpt-oss-120b", 128, 4, "topk_softmax", 1, 1, False, (1, 256)),
    ("deepseek-v3", 256, 8, "sigmoid", 8, 4, True, (1, 256)),
]


def source(symbol: str, variant: str) -> str:
    t = TEMPLATE
    for f in VARIANTS[variant]:
        t = f(t)
    cfg = manifest.entry(symbol).config
    rows = 1 if w1 in VARIANTS[variant] else fam.SELECT_ROWS
    return (t + f'\nextern "C" __global__ void __launch_bounds__({32 * rows})\n'
            f"{symbol}(const __grid_constant__ cutlass_router::RouteParams params) {{\n"
            f"  cutlass_router::route_select_mode<{fam.MODES[cfg['mode']]}, {cfg['slots']}>(params);\n}}\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-only", action="store_true")
    args = ap.parse_args()
    symbols = sorted({fam.select_symbol(c[1], c[3]) for c in CASES})
    if args.build_only:
        for s in symbols:
            for v in VARIANTS:
                resolve.cubin(manifest.expand(source(s, v)), s)
                print("built", s, v)
        return
    import torch
    import triton.testing
    import triton_peers

    from cutlass_router import launch, plan

    print(f"{torch.cuda.get_device_name()}; select kernel variants, isolated replay, µs (median of 3 benches)")
    print(f"{'case':<14} {'M':>5} " + " ".join(f"{v:>7}" for v in VARIANTS) + f" {'triton':>7}")
    for label, N, top_k, scoring, ng, tg, f32, Ms in CASES:
        symbol = fam.select_symbol(N, scoring)
        kernels = {v: launch.load_entry(manifest.entry(symbol), source=source(symbol, v)) for v in VARIANTS}
        for v, k in kernels.items():
            if w1 in VARIANTS[v]:
                k.block_threads = 32  # the manifest entry says 256
        g = torch.Generator(device="cuda").manual_seed(0)
        corr = torch.randn(N, device="cuda", generator=g) * 0.01 if scoring == "sigmoid" else None
        a = plan.RouteArgs(top_k, scoring, scoring == "sigmoid", ng, tg, 2.5 if scoring == "sigmoid" else 1.0,
                           "fp32" if f32 else "bf16", None, torch.float32, torch.int32)
        for M in Ms:
            logits = torch.randn(M, N, device="cuda", generator=g).to(torch.float32 if f32 else torch.bfloat16)
            weights = torch.empty(M, top_k, device="cuda")
            ids = torch.empty(M, top_k, device="cuda", dtype=torch.int32)
            if scoring == "sigmoid":
                ref = triton_peers.sigmoid_grouped_topk(logits, top_k, ng, tg, corr, 2.5)
                tri = lambda: triton_peers.sigmoid_grouped_topk(logits, top_k, ng, tg, corr, 2.5)  # noqa: E731
            else:
                ref = triton_peers.topk_softmax(logits, top_k)
                tri = lambda: triton_peers.topk_softmax(logits, top_k)  # noqa: E731
            times = {}
            for v, k in kernels.items():
                rows = 1 if w1 in VARIANTS[v] else fam.SELECT_ROWS
                c = fam.route_consts(k.entry, M=M, N=N, K=0, ldx=0, ldw=0, top_k=top_k, mode=fam.MODES[scoring],
                                     flags=plan.route_flags(a, f32), n_group=ng, topk_group=tg,
                                     scale=a.routed_scaling_factor)
                grid = (-(-M // rows), 1, 1)

                def run(k=k, c=c, grid=grid):
                    fam.pack_route(launch.params_buffer()[0], c, 0, 0, 0, 0 if corr is None else corr.data_ptr(),
                                   logits.data_ptr(), 0, weights.data_ptr(), ids.data_ptr(), logits.stride(0), 0,
                                   weights.stride(0))
                    launch.launch(k, 0, plan.raw_stream(0), False, grid, (1, 1, 1))

                ids.fill_(-1)
                run()
                torch.cuda.synchronize()
                assert torch.equal(ids.long(), ref[1].long()), (label, M, v)
                times[v] = run
            times["triton"] = tri
            res = {v: [] for v in times}
            for _ in range(3):  # interleaved
                for v, fn in times.items():
                    res[v].append(triton.testing.do_bench_cudagraph(fn, rep=30, return_mode="median") * 1000)
            print(f"{label:<14} {M:>5} " + " ".join(f"{sorted(res[v])[1]:7.2f}" for v in times), flush=True)


if __name__ == "__main__":
    main()
