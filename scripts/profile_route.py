"""Where does route's time go? The select kernel alone against the Triton stand-in on the same logits, the fused
kernel against router_gemm alone, isolated replay (do_bench_cudagraph, median, hot L2).

    python scripts/profile_route.py            # the table
    ncu --section WarpStateStats --section SourceCounters -k regex:"crt_route|_topk|_sigmoid" \
        python scripts/profile_route.py --once  # each kernel of the table once, for a profiler

Scratch measurement, run on the GPU; not part of the library or its tests.
"""
import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import triton_peers  # noqa: E402

from cutlass_router import dispatch, launch, ops, plan  # noqa: E402
from cutlass_router.families import route as fam  # noqa: E402

CASES = [  # (label, N, K, top_k, scoring, n_group, topk_group, Ms)
    ("gpt-oss-20b", 32, 2880, 4, "topk_softmax", 1, 1, (1, 64, 4096)),
    ("gpt-oss-120b", 128, 2880, 4, "topk_softmax", 1, 1, (1, 64, 256, 1024)),
    ("deepseek-v3", 256, 7168, 8, "sigmoid", 8, 4, (1, 16, 256)),
]


def select_only(logits, corr, a: plan.RouteArgs, weights, ids, symbol):
    """Launch a select kernel on logits that are already there (what the two-kernel path runs second)."""
    k = launch.load(symbol)
    M, N = logits.shape
    c = fam.route_consts(k.entry, M=M, N=N, K=0, ldx=0, ldw=0, top_k=a.top_k, mode=fam.MODES[a.scoring],
                         flags=plan.route_flags(a, logits.dtype == torch.float32), n_group=a.n_group,
                         topk_group=a.topk_group, scale=a.routed_scaling_factor)
    fam.pack_route(launch.params_buffer()[0], c, 0, 0, 0, 0 if corr is None else corr.data_ptr(), logits.data_ptr(),
                   0, weights.data_ptr(), ids.data_ptr(), logits.stride(0), 0, weights.stride(0))
    dev = logits.get_device()
    launch.launch(k, dev, plan.raw_stream(dev), False, c.grid, c.cluster, c.block)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--once", action="store_true", help="run every kernel once (under a profiler)")
    args = ap.parse_args()
    import triton.testing

    bench = (lambda fn: (fn(), torch.cuda.synchronize(), 0.0)[2]) if args.once else \
        (lambda fn: triton.testing.do_bench_cudagraph(fn, rep=40, return_mode="median") * 1000)
    print(f"{torch.cuda.get_device_name()}; isolated replay, µs (median)")
    print(f"{'case':<14} {'M':>5} {'select':>8} {'triton':>8} {'gemm':>8} {'fused':>8} {'gemm+sel':>9} {'kernel'}")
    for label, N, K, top_k, scoring, ng, tg, Ms in CASES:
        g = torch.Generator(device="cuda").manual_seed(0)
        w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16, generator=g) * 0.02
        b = None if scoring == "sigmoid" else torch.randn(N, device="cuda", dtype=torch.bfloat16, generator=g)
        corr = torch.randn(N, device="cuda", generator=g) * 0.01 if scoring == "sigmoid" else None
        prec = "fp32" if scoring == "sigmoid" else "bf16"
        kw = dict(scoring=scoring, n_group=ng, topk_group=tg, correction_bias=corr, logit_precision=prec,
                  routed_scaling_factor=2.5 if scoring == "sigmoid" else 1.0, renormalize=scoring == "sigmoid")
        a = plan.RouteArgs(top_k, scoring, kw["renormalize"], ng, tg, kw["routed_scaling_factor"], prec, None,
                           torch.float32, torch.int32)
        for M in Ms:
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, generator=g)
            logits = ops.router_gemm(x, w, b, out_dtype=torch.float32 if prec == "fp32" else torch.bfloat16)
            weights = torch.empty(M, top_k, device="cuda")
            ids = torch.empty(M, top_k, device="cuda", dtype=torch.int32)
            if scoring == "sigmoid":
                tri = lambda: triton_peers.sigmoid_grouped_topk(logits, top_k, ng, tg, corr, 2.5)  # noqa: E731
            else:
                tri = lambda: triton_peers.topk_softmax(logits, top_k)  # noqa: E731
            sel = fam.select_symbol(N, scoring)
            t_sel = bench(lambda: select_only(logits, corr, a, weights, ids, sel))
            t_tri = bench(tri)
            t_gemm = bench(lambda: ops.router_gemm(x, w, b, out_dtype=logits.dtype))
            t_route = bench(lambda: ops.route(x, w, b, top_k, **kw))
            forced = plan.route(x, w, b, corr, a, False, dispatch.GEMM_THEN_SELECT)
            t_two = bench(lambda: plan.run_route(forced, x, w, b, corr, (weights, ids, None), False))
            print(f"{label:<14} {M:>5} {t_sel:8.2f} {t_tri:8.2f} {t_gemm:8.2f} {t_route:8.2f} {t_two:9.2f} "
                  f"{dispatch.choose_route(N, K, M)}", flush=True)


if __name__ == "__main__":
    main()
