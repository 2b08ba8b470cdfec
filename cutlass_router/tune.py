"""Measure every candidate per M on this GPU and write the dispatch tables (tuned/<arch>.json): the GEMM's, batch-
invariant mode's (the candidates of its order only) and route's.

By default each candidate is timed where it runs in a model, inside the decode-layer loop (yardstick.DecodeLoop:
out-projection GEMM and residual, RMSNorm, then the router, in distinct layers so that the router weights are
cold), launched as dispatch launches it (the GEMM with PDL per the package default; route both with and without
PDL, the table keeping the faster per M), for M up to DECODE_MAX_M. Above it (prefill)
the loop's own time grows to milliseconds and the subtraction is noise (it once gave 2 us for M = 8192, less than
reading x takes), so those sizes are timed in isolation. `method="isolated"` times every M by back-to-back
CUDA-graph replays of the kernel alone: W stays in L2 and PDL overlaps each call with the previous call of the
same kernel, which a decode step never does; it is kept for comparison with earlier tables.
Every candidate is checked against a reference before it is timed. A rung's choice serves every M from the
previous measured M (exclusive) to its own.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

import torch

from . import dispatch, env, manifest, ops, plan
from .target import ARCH

GEMM_FAMILIES = ("splitk_mma", "gemv", "cutlass_sm90")
DECODE_MAX_M = 512  # the decode-layer measure up to here, isolated replay above
M_LADDER = tuple(2 ** i for i in range(14))  # 1 .. 8192
METHODS = ("decode", "isolated")


def candidates() -> list[str]:
    """Every GEMM kernel of the manifest with bf16 output (their fp32 twins follow the same choice)."""
    return [s for s, e in manifest.entries().items() if e.out_dtype == "bf16" and e.family in GEMM_FAMILIES]


def invariant_candidates() -> list[str]:
    """Batch-invariant mode's candidates: every GEMM kernel (bf16) of its order (dispatch.INVARIANT_ORDER), split
    kernels and tiled serial kernels alike, so that any ladder made of them keeps a row's bits at every M."""
    from .families import splitk_mma

    return [s for s, e in manifest.entries().items() if e.out_dtype == "bf16" and e.family == splitk_mma.FAMILY
            and splitk_mma.order(e) == dispatch.INVARIANT_ORDER]


def route_candidates(N: int) -> list[str]:
    """The fused route kernels whose cluster covers N experts, and the GEMM + select path."""
    fused = [s for s, e in manifest.entries().items()
             if e.family == "route" and not e.config["select_only"] and N <= e.launch["max_experts"]]
    return fused + [dispatch.GEMM_THEN_SELECT]


def twin_f32(symbol: str) -> str:
    return symbol.replace("_bf16_", "_f32_", 1)


def _isolated(fns: dict, rep_ms: int) -> dict:
    import triton.testing

    return {k: triton.testing.do_bench_cudagraph(fn, rep=rep_ms, return_mode="median") * 1000.0
            for k, fn in fns.items()}


def _time(N, K, M, fns: dict, method: str, rep_ms: int, with_bias: bool) -> dict:
    """{key: us} for routing functions fn(x, w, b), by the chosen method."""
    if method == "isolated" or M > DECODE_MAX_M:
        g = torch.Generator(device="cuda").manual_seed(M)
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, generator=g)
        w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(torch.bfloat16)
        b = torch.randn(N, device="cuda", dtype=torch.bfloat16, generator=g) if with_bias else None
        return _isolated({k: (lambda f=f: f(x, w, b)) for k, f in fns.items()}, rep_ms)
    from .yardstick import DecodeLoop

    loop = DecodeLoop(N, K, M, with_bias=with_bias)
    return loop.measure({k: (lambda i, x, w, b, f=f: f(x, w, b)) for k, f in fns.items()}, rep_ms=2 * rep_ms)


def measure(N: int, K: int, ms=M_LADDER, rep_ms: int = 20, method: str = "decode", log=print,
            invariant: bool = False) -> dict:
    """{M: {symbol: microseconds}} for every GEMM candidate that computes the right answer. invariant: batch-
    invariant mode's candidates (invariant_candidates), which must also give each other's bits."""
    table: dict[int, dict[str, float]] = {}
    among = invariant_candidates() if invariant else candidates()
    for M in ms:
        fns = {}
        g = torch.Generator(device="cuda").manual_seed(0)
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, generator=g)
        w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(torch.bfloat16)
        b = torch.randn(N, device="cuda", dtype=torch.bfloat16, generator=g)
        ref = x.double() @ w.double().T + b.double()
        first = None  # invariant: the first candidate's output, which every other must equal bit for bit
        for sym in among:
            out = torch.full((M, N), float("nan"), device="cuda", dtype=torch.bfloat16)
            try:
                ops.run_kernel(sym, x, w, b, torch.bfloat16, out=out)
            except Exception as e:  # a kernel that cannot take this shape is simply not a candidate
                log(f"  skip {sym} at M={M}: {e}")
                continue
            err = ((out.double() - ref).norm() / ref.norm()).item()
            if not err < 1e-2:
                raise RuntimeError(f"{sym} is wrong at M={M} N={N} K={K}: relative error {err}")
            if invariant:
                first = (sym, out) if first is None else first
                if not torch.equal(out, first[1]):
                    raise RuntimeError(f"{sym} and {first[0]} share the invariant order but differ in bits at M={M} "
                                       f"N={N} K={K}")
            fns[sym] = lambda x_, w_, b_, sym=sym: ops.run_kernel(sym, x_, w_, b_, torch.bfloat16)
        table[M] = _time(N, K, M, fns, method, rep_ms, True)
        best = min(table[M], key=table[M].get)
        what = "invariant" if invariant else "GEMM"
        log(f"{what} N={N} K={K} M={M:5d}: best {best} {table[M][best]:.2f} us ({_how(method, M)})")
    return table


def measure_route(model, ms=M_LADDER, rep_ms: int = 20, method: str = "decode", log=print) -> dict:
    """{M: {choice: microseconds}} for every route candidate, with the model's expert choice."""
    from .routing_ref import select

    N, K = model.shape
    kw = dict(model.route)
    a = plan.RouteArgs(model.top_k, kw.get("scoring", "topk_softmax"), kw.get("renormalize", False),
                       kw.get("n_group", 1), kw.get("topk_group", 1), float(kw.get("routed_scaling_factor", 1.0)),
                       kw.get("logit_precision", "bf16"), None, torch.float32, torch.int32)
    cb = torch.randn(N, device="cuda") * 0.1 if a.scoring == "sigmoid" else None
    table = {}
    for M in ms:
        g = torch.Generator(device="cuda").manual_seed(M)
        x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16, generator=g)
        w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(torch.bfloat16)
        b = torch.randn(N, device="cuda", dtype=torch.bfloat16, generator=g) if model.bias else None
        fns = {}
        for choice in route_candidates(N):
            p = plan.route(x, w, b, cb, a, False, choice)
            if p.kernel is None:
                log(f"  skip {choice} at M={M}: {p.reason}")
                continue
            logits = torch.empty(M, N, device="cuda")
            check = dataclasses.replace(a, logits_dtype=torch.float32)  # and the logits, to check the choice on
            wts, ids, lg = plan.run_route(plan.route(x, w, b, cb, check, False, choice), x, w, b, cb,
                                          (torch.empty(M, a.top_k, device="cuda"),
                                           torch.empty(M, a.top_k, device="cuda", dtype=torch.int32), logits), False)
            sw, si = select(lg, a.top_k, scoring=a.scoring, renormalize=a.renormalize, n_group=a.n_group,
                            topk_group=a.topk_group, correction_bias=cb,
                            routed_scaling_factor=a.routed_scaling_factor, logit_precision=a.logit_precision)
            if not torch.equal(ids.long(), si):
                raise RuntimeError(f"route {choice} chooses wrong at M={M} N={N} K={K}")
            fns[choice] = lambda x_, w_, b_, p=p: plan.run_route(p, x_, w_, b_, cb, None, False)
            if _how(method, M) == "decode layer":  # isolated replay flatters PDL (each call overlaps the last)
                fns[choice + WITH_PDL] = lambda x_, w_, b_, p=p: plan.run_route(p, x_, w_, b_, cb, None, True)
        table[M] = _time(N, K, M, fns, method, rep_ms, model.bias)
        best = min(table[M], key=table[M].get)
        log(f"route N={N} K={K} M={M:5d}: best {best} {table[M][best]:.2f} us ({_how(method, M)})")
    return table


def _how(method: str, M: int) -> str:
    return "isolated" if method == "isolated" or M > DECODE_MAX_M else "decode layer"


TIE = 0.03  # a choice within 3% of the best at this M is as good as the best


def _rungs(table: dict[int, dict[str, float]]) -> list[tuple[int, str]]:
    """Rungs from the timings: at every measured M a choice within TIE of the best there, switching as rarely as
    that allows; the last rung serves every larger M.

    Differences under TIE are run-to-run noise: the current choice is kept while it stays that close, and where it
    does not, the next one is the close choice that stays close over the most following M (the faster here among
    equals). Fewer switches as M grows, and a table that does not flip between tuning runs.
    """
    ms = sorted(table)
    close = [{c for c, t in table[M].items() if t <= min(table[M].values()) * (1 + TIE)} for M in ms]

    def reach(choice: str, i: int) -> int:
        n = 0
        while i + n < len(ms) and choice in close[i + n]:
            n += 1
        return n

    out: list[list] = []
    for i, M in enumerate(ms):
        if out and out[-1][1] in close[i]:
            out[-1][0] = M
        else:
            out.append([M, min(close[i], key=lambda c: (-reach(c, i), table[M][c], c))])
    out[-1][0] = 1 << 62
    return [(m, s) for m, s in out]


def rungs(table: dict[int, dict[str, float]]) -> list[dict]:
    return [{"max_m": m, "bf16": s, "f32": twin_f32(s)} for m, s in _rungs(table)]


WITH_PDL = "+pdl"  # a route choice timed with PDL: "<kernel or gemm+select>+pdl" in the table's timings


def route_rungs(table: dict[int, dict[str, float]]) -> list[dict]:
    """Route's rungs: the kernel, and pdl where the choice timed with PDL won."""
    return [{"max_m": m, "kernel": s.removesuffix(WITH_PDL), **({"pdl": True} if s.endswith(WITH_PDL) else {})}
            for m, s in _rungs(table)]


def _record(N, K, rungs_, table, command, hows: dict, section: str) -> dict:
    order = {"order": list(dispatch.INVARIANT_ORDER)} if section == "invariant" else {}
    return {**order, "N": N, "K": K, "card": torch.cuda.get_device_name(), "date": datetime.date.today().isoformat(),
            "command": command, "method": {str(M): hows[M] for M in sorted(table)},
            "pdl": "per rung" if section == "route" else env.flag(env.PDL),
            "rungs": rungs_,
            "us": {str(M): {s: round(t, 3) for s, t in sorted(row.items())} for M, row in sorted(table.items())}}


def write_table(path: Path, N: int, K: int, table: dict, command: str, method: str = "decode",
                section: str = "shapes", merge: bool = False) -> None:
    """Write one shape's rungs into section "shapes" (the GEMM), "invariant" (batch-invariant mode's GEMM) or
    "route" of the dispatch table file.

    merge: keep the shape's recorded timings of every M not measured now (with how each was measured) and make
    the rungs from both, so that a few M can be retimed (new kernels, a new card state) without the rest."""
    data = json.loads(path.read_text()) if path.exists() else {"arch": ARCH, "shapes": []}
    make = route_rungs if section == "route" else rungs
    old = next((s for s in data.get(section, []) if (s["N"], s["K"]) == (N, K)), None)
    hows = {M: _how(method, M) for M in table}
    if merge and old is not None:
        # Kept: the candidates' timings, not the default mode's, which the older invariant records carry.
        kept = {int(M): {s: t for s, t in row.items() if s != "default"} for M, row in old["us"].items()
                if int(M) not in table}
        hows.update({M: old["method"][str(M)] for M in kept})
        table = {**kept, **table}
        command = f"{old['command']}; then {command} (merged)"
    data[section] = [s for s in data.get(section, []) if (s["N"], s["K"]) != (N, K)]
    data[section].append(_record(N, K, make(table), table, command, hows, section))
    data[section].sort(key=lambda s: (s["N"], s["K"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    dispatch.reload()
    plan.clear()


def default_path() -> Path:
    return Path(__file__).resolve().parent / "tuned" / f"{ARCH}.json"
