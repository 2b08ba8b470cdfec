"""Every kernel dispatch can pick (tuned and default ladders: GEMM kernels in both output dtypes, route kernels,
the RMSNorm kernels), once each at odd sizes, checked against the reference: the workload for
scripts/sanitize.sh."""
import os
import sys

import torch

from cutlass_router import dispatch, manifest, norm, ops, plan, route
from cutlass_router.families.route import fixed_specs
from cutlass_router.routing_ref import select

SHAPES = [(1, 32, 2880), (13, 60, 1000), (127, 128, 2880), (1000, 128, 2888)]
NORM_ROWS = (1, 13, 300)  # rows of each RMSNorm kernel, at the largest K it takes and at one 24 below it
ROUTE_SHAPES = [(1, 32, 2880), (5, 12, 1000), (13, 60, 1000), (64, 128, 2880), (3, 256, 7168), (7, 384, 2048),
                (300, 128, 2880), (13, 256, 1024), (300, 32, 512), (300, 8, 512)]


def gemm_case(sym, M, N, K) -> bool:
    dtype = torch.bfloat16 if manifest.entry(sym).out_dtype == "bf16" else torch.float32
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w = (torch.randn(N, K, device="cuda") * K ** -0.5).to(torch.bfloat16)
    b = torch.randn(N, device="cuda", dtype=torch.bfloat16)
    out = torch.full((M, N), float("nan"), device="cuda", dtype=dtype)
    try:
        ops.run_kernel(sym, x, w, b, dtype, out=out)
    except ValueError:  # a TMA kernel and an N it cannot store: dispatch never sends it there
        return True
    ref = x.double() @ w.double().T + b.double()
    return ((out.double() - ref).norm() / ref.norm()).item() < (1e-2 if dtype == torch.bfloat16 else 1e-5)


def norm_case(sym, M, N, K) -> bool:
    """One RMSNorm kernel, launched directly (not dispatch's choice for K), M rows of K (N unused), against fp64."""
    from cutlass_router import launch

    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w = (1 + 0.1 * torch.randn(K, device="cuda")).to(torch.bfloat16)
    out = torch.full_like(x, float("nan"))
    norm._launch(launch, launch.load(sym), 0, x, w, out, 1e-5, False)
    xd = x.double()
    ref = w.double() * (xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-5))
    return bool(((out.double() - ref).abs() <= ref.abs() * 2 ** -8 + 1e-30).all())


def route_case(sym, M, N, K) -> bool:
    """One route call forced onto `sym`: a fused kernel, or dispatch.GEMM_THEN_SELECT (the GEMM, then the select
    kernel of each router for this N)."""
    if sym != dispatch.GEMM_THEN_SELECT:
        lc = manifest.entry(sym).launch
        cluster = -(-N // lc["tile_experts"]) * lc["splits"]
        if N > lc["max_experts"] or cluster > int(os.environ.get("SANITIZE_MAX_CLUSTER", 16)):
            return True
    dispatch.route_rung = lambda N_, K_, M_, one_launch=False: dispatch.RouteRung(1 << 62, sym)
    plan.clear()
    x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
    w = (torch.randn(N, K, device="cuda") * K ** -0.5).to(torch.bfloat16)
    cb = torch.randn(N, device="cuda") * 0.1
    ok = True
    grouped = N % 8 == 0 and N // 8 >= 2 and (N // 8) % -(-N // 32) == 0
    cases = [(min(8, N), dict(scoring="topk_softmax"), torch.float32),
             (min(8, N), dict(scoring="softmax_topk", renormalize=True), torch.float32),
             (min(8, N), dict(scoring="sigmoid", n_group=8 if grouped else 1, topk_group=4 if grouped else 1,
                              correction_bias=cb, renormalize=True, routed_scaling_factor=2.5,
                              logit_precision="fp32"), torch.float32)]
    # Each model's own choice (its select kernel, families/route.py: fixed_specs), on the logits dtype its GEMM
    # writes: bf16 where the choice is made on bf16 logits.
    for spec in fixed_specs():
        if spec.n == N:
            sigmoid = spec.mode == "sigmoid"
            kw = dict(spec.route_args(), renormalize=spec.mode != "topk_softmax")
            if sigmoid:
                kw.update(correction_bias=cb, routed_scaling_factor=2.5, logit_precision="fp32")
            cases.append((spec.top_k, kw, torch.float32 if sigmoid else torch.bfloat16))
    for top_k, kw, logits_dtype in cases:
        r = route(x, w, None, top_k, logits_dtype=logits_dtype, **kw)
        cbias = kw.pop("correction_bias", None)
        sw, si = select(r.logits, top_k, correction_bias=cbias, **kw)
        ok &= torch.equal(r.ids.long(), si) and torch.allclose(r.weights, sw, rtol=1e-5, atol=1e-6)
    return ok


def main() -> int:
    symbols = dispatch.reachable()
    only = os.environ.get("SANITIZE_ONLY")  # comma-separated symbols: check these instead
    if only:
        symbols = set(only.split(","))
    skip = os.environ.get("SANITIZE_EXCLUDE")  # comma-separated symbols a tool cannot check (sanitize.sh says why)
    if skip:
        symbols -= set(skip.split(","))
    shapes = os.environ.get("SANITIZE_SHAPES")  # comma-separated MxNxK: only these (to tell which case a report is)
    keep = None if not shapes else {tuple(map(int, t.split("x"))) for t in shapes.split(",")}
    # The select kernels (one per router and slot count) run behind the GEMM: the GEMM + select path over every
    # shape and router reaches each of them (ROUTE_SHAPES' N take 1, 2, 4, 8 and 12 slots).
    selects = {s for s in symbols if manifest.entry(s).family == "route" and manifest.entry(s).config["select_only"]}
    symbols = (symbols - selects) | ({dispatch.GEMM_THEN_SELECT} if selects else set())
    bad = cases = 0
    for sym in sorted(symbols):
        family = "route" if sym == dispatch.GEMM_THEN_SELECT else manifest.entry(sym).family
        if family == "rmsnorm":
            max_k = manifest.entry(sym).launch["max_k"]
            shapes = [(M, 0, K) for M in NORM_ROWS for K in (max_k, max_k - 24)]
        else:
            shapes = ROUTE_SHAPES if family == "route" else SHAPES
        for M, N, K in shapes:
            if keep is not None and (M, N, K) not in keep:
                continue
            if os.environ.get("SANITIZE_VERBOSE"):  # a tool that kills the process: the last line names the case
                print(f"{sym} M={M} N={N} K={K}", flush=True)
            cases += 1
            if not {"route": route_case, "rmsnorm": norm_case}.get(family, gemm_case)(sym, M, N, K):
                bad += 1
                print(f"WRONG {sym} M={M} N={N} K={K}")
    torch.cuda.synchronize()
    print(f"{len(symbols)} kernels, {cases} cases, {bad} wrong")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
