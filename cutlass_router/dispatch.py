"""Which kernel runs a given shape: a tuned table per GPU arch (tuned/<arch>.json), else a default ladder.

The choice is a pure function of (N, K, M, out dtype), made inside the op at run time, so a compiled graph or a
captured CUDA graph keeps the right kernel for each M.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources

from .families import rmsnorm
from .families.route import RouteSpec, select_specs
from .families.splitk_mma import SplitKSpec
from .target import ARCH


@dataclass(frozen=True)
class Rung:
    max_m: int     # this rung serves M up to max_m (inclusive)
    bf16: str      # kernel symbol for bf16 output
    f32: str       # kernel symbol for fp32 output


def _rung(max_m: int, *cfg: int) -> Rung:
    return Rung(max_m, SplitKSpec("bf16", *cfg).symbol, SplitKSpec("f32", *cfg).symbol)


# Untuned shapes: the split-K family at every M. Few experts want more CTAs per expert tile.
_DEFAULT_FEW = (_rung(8, 4, 16, 1, 1, 1), _rung(16, 4, 8, 1, 2, 2), _rung(32, 4, 8, 1, 4, 2),
                _rung(256, 4, 4, 2, 4, 2), _rung(1 << 62, 8, 2, 2, 4, 2))
_DEFAULT_MANY = (_rung(8, 4, 8, 1, 1, 2),) + _DEFAULT_FEW[1:]


@lru_cache(maxsize=None)
def _tuned_file(arch: str = ARCH) -> dict:
    try:
        return json.loads(resources.files("cutlass_router").joinpath(f"tuned/{arch}.json").read_text())
    except FileNotFoundError:
        return {}


@lru_cache(maxsize=None)
def tuned_table(arch: str = ARCH) -> dict[tuple[int, int], tuple[Rung, ...]]:
    return {(s["N"], s["K"]): tuple(Rung(**r) for r in s["rungs"]) for s in _tuned_file(arch).get("shapes", [])}


def reload() -> None:
    """Read tuned/<arch>.json again (after tune wrote it)."""
    for f in (_tuned_file, tuned_table, tuned_route_table, tuned_invariant_table):
        f.cache_clear()


def default_ladder(N: int) -> tuple[Rung, ...]:
    return _DEFAULT_FEW if N <= 48 else _DEFAULT_MANY


def ladder(N: int, K: int) -> tuple[Rung, ...]:
    return tuned_table().get((N, K)) or default_ladder(N)


def _pick(rungs: tuple[Rung, ...], M: int, out_dtype: str) -> str:
    for rung in rungs:
        if M <= rung.max_m:
            return getattr(rung, out_dtype)
    raise AssertionError("the last rung serves every M")


def choose(N: int, K: int, M: int, out_dtype: str) -> str:
    """The kernel for this call. A tuned kernel that cannot take this N (a TMA kernel's output rows must be
    16-byte multiples) gives way to the default split-K ladder, which takes any N."""
    from .families import of
    from .manifest import entry

    symbol = _pick(ladder(N, K), M, out_dtype)
    e = entry(symbol)
    if of(e.family).blocker(e, M, N):
        symbol = choose_splitk(N, M, out_dtype)
    return symbol


# Batch-invariant mode: a ladder of kernels that all share one K reduction order (families/splitk_mma.py: order),
# so each row gets the same bits at every M. The order is (32 K slices, unroll 1, one accumulator set) for every shape:
# its split kernels serve decode sizes (those with acc=1 load a slice's chunks at once), and the tiled serial kernels
# (splitk_tiled: no K split across CTAs, tokens tiled, the same per-element sequence) the larger sizes, where a split
# kernel's grid would grow with M x 32 K slices. Tuned per shape in tuned/<arch>.json "invariant" (`tune --what
# invariant`: the decode-layer loop to M = 512); untuned shapes take these (gpt-oss measurements, H200).
INVARIANT_ORDER = (32, 1, 1)


def _irung(max_m: int, spec: SplitKSpec) -> Rung:
    return Rung(max_m, spec.symbol, replace(spec, out_dtype="f32").symbol)


def invariant_tiled(we: int, wt: int, e: int, t: int, stages: int, groups: int, out_dtype: str = "bf16") -> SplitKSpec:
    """A tiled serial kernel of the invariant order: we x wt warps of e x t MMA tiles, stages, warp groups."""
    return SplitKSpec(out_dtype, wt, 1, e, t, 1, *INVARIANT_ORDER, warps_e=we, stages=stages, groups=groups)


_G8, _G4, _G2 = invariant_tiled(1, 1, 2, 2, 3, 8), invariant_tiled(1, 2, 2, 2, 3, 4), invariant_tiled(1, 2, 2, 2, 3, 2)
# The first rung: unroll 1's order with a slice's chunks (up to 4: K <= 8192) loaded at once (SplitKSpec.acc).
_FIRST = SplitKSpec("bf16", 8, 4, 1, 1, 4, acc=1)
_INVARIANT_FEW = (_irung(90, _FIRST), _irung(724, SplitKSpec("bf16", 4, 8, 2, 2, 2)),
                  _irung(1448, SplitKSpec("bf16", 4, 8, 2, 4, 1)), _irung(2896, _G8), _irung(5792, _G4),
                  _irung(1 << 62, _G2))
_INVARIANT_MANY = (_irung(32, _FIRST), _irung(181, SplitKSpec("bf16", 4, 8, 2, 2, 2)),
                   _irung(362, SplitKSpec("bf16", 4, 8, 2, 4, 1)), _irung(724, _G8), _irung(1448, _G4),
                   _irung(2896, _G2), _irung(5792, invariant_tiled(2, 2, 2, 2, 3, 1)),
                   _irung(1 << 62, invariant_tiled(4, 2, 2, 4, 4, 1)))


@lru_cache(maxsize=None)
def tuned_invariant_table(arch: str = ARCH) -> dict[tuple[int, int], tuple[Rung, ...]]:
    return {(s["N"], s["K"]): tuple(Rung(**r) for r in s["rungs"]) for s in _tuned_file(arch).get("invariant", [])}


def invariant_ladder(N: int, K: int) -> tuple[Rung, ...]:
    return tuned_invariant_table().get((N, K)) or (_INVARIANT_FEW if N <= 48 else _INVARIANT_MANY)


def choose_invariant(N: int, K: int, M: int, out_dtype: str) -> str:
    """The batch-invariant kernel for this call: every kernel of the shape's invariant ladder has the same order,
    so a row's bits do not depend on M (nor on which rung serves it)."""
    return _pick(invariant_ladder(N, K), M, out_dtype)


def choose_splitk(N: int, M: int, out_dtype: str) -> str:
    """The default split-K ladder's kernel: takes any N, and ships prebuilt."""
    return _pick(default_ladder(N), M, out_dtype)


# ---- route: the fused kernel at decode sizes, the GEMM then the select kernel above -----------------------------

GEMM_THEN_SELECT = "gemm+select"  # router_gemm (its own ladder) into logits, then the select kernel


@dataclass(frozen=True)
class RouteRung:
    max_m: int    # this rung serves M up to max_m (inclusive)
    kernel: str   # a fused route kernel, or GEMM_THEN_SELECT
    # Launch the (first) kernel with PDL where the caller and CUTLASS_ROUTER_PDL leave it open: the tuner times
    # both in the decode-layer loop, whose producer is a torch kernel that never triggers its dependents early.
    pdl: bool = False


# Untuned shapes: the most CTAs one cluster can hold (16) for the experts, so each streams the least of W.
_ROUTE_DEFAULT = ((32, RouteSpec(4, 8, 1, 1, 2)), (64, RouteSpec(8, 4, 1, 1, 2)), (128, RouteSpec(16, 2, 1, 1, 2)),
                  (256, RouteSpec(16, 1, 1, 1, 3)), (384, RouteSpec(8, 1, 3, 1, 2)))
_ROUTE_FUSED_MAX_M = 64
# ... and only where W is small: a fused kernel is one cluster (at most 16 SMs) streaming all of W, where router_gemm
# spreads it over the GPU. Decode loop, H200, 2026-11-29 (notes/l2/untuned_default.py), fused against GEMM + select
# at M = 1 / 16 / 64: Kimi-K2's 384 x 7168 (5.5 MB) 15.87 / 16.70 / 16.47 against 6.49 / 7.18 / 11.96 us; Qwen3-235B's
# 128 x 4096 (1 MB) 5.97 / 6.41 / 8.74 against 4.87 / 5.24 / 8.30; Qwen3-30B's 128 x 2048 (512 KiB) 5.46 / 5.79 /
# 7.75 against 4.63 / 5.10 / 6.33 (router_gemm + the Triton stand-in 5.25 / 5.78 / 7.12; run 9); Mixtral's 8 x 4096
# (64 KB) fused 3.86 / 4.93 / 5.04 against router_gemm + Triton 4.31 / 4.68 / 7.45. gpt-oss-20b (184 KB) is tuned to
# a fused kernel to M = 16, gpt-oss-120b (737 KB) to GEMM + select at every M.
_ROUTE_FUSED_MAX_W = 256 * 1024  # bytes of bf16 W


@lru_cache(maxsize=None)
def tuned_route_table(arch: str = ARCH) -> dict[tuple[int, int], tuple[RouteRung, ...]]:
    return {(s["N"], s["K"]): tuple(RouteRung(**r) for r in s["rungs"]) for s in _tuned_file(arch).get("route", [])}


def default_route_ladder(N: int, K: int = 0) -> tuple[RouteRung, ...]:
    """An untuned shape's ladder: the fused kernel up to _ROUTE_FUSED_MAX_M where W (N x K) is at most
    _ROUTE_FUSED_MAX_W bytes, GEMM + select above and for larger W. K = 0: the fused kernel whatever W's size."""
    fused = next((spec for n, spec in _ROUTE_DEFAULT if N <= n), None)
    # more experts than the kernels take (the torch path decides, plan.route), or a W one cluster streams slowly
    if fused is None or 2 * N * K > _ROUTE_FUSED_MAX_W:
        return (RouteRung(1 << 62, GEMM_THEN_SELECT),)
    return RouteRung(_ROUTE_FUSED_MAX_M, fused.symbol), RouteRung(1 << 62, GEMM_THEN_SELECT)


def route_ladder(N: int, K: int) -> tuple[RouteRung, ...]:
    return tuned_route_table().get((N, K)) or default_route_ladder(N, K)


def route_rung(N: int, K: int, M: int, one_launch: bool = False) -> RouteRung:
    """The rung that serves this call: a fused route kernel or GEMM_THEN_SELECT, and whether to launch it with PDL
    by default. one_launch (ops._one_launch: route's out= without a logits buffer, or a call outside CUDA-graph
    capture): up to _ROUTE_FUSED_MAX_M a fused kernel (the untuned ladder's, shipped, without PDL) where the table
    says GEMM + select, which needs a logits buffer and a second launch."""
    for rung in route_ladder(N, K):
        if M <= rung.max_m:
            if one_launch and rung.kernel == GEMM_THEN_SELECT and M <= _ROUTE_FUSED_MAX_M:
                fused = default_route_ladder(N)[0]
                if fused.kernel != GEMM_THEN_SELECT:
                    return fused
            return rung
    raise AssertionError("the last rung serves every M")


def choose_route(N: int, K: int, M: int, one_launch: bool = False) -> str:
    """route_rung's kernel."""
    return route_rung(N, K, M, one_launch).kernel


def reachable() -> set[str]:
    """Every kernel dispatch can pick: the tuned ladders and the default ladders (untuned shapes, fallbacks), for
    the GEMM and for route, and the RMSNorm kernels. Exactly these ship prebuilt."""
    rungs = [r for ladder_ in tuned_table().values() for r in ladder_] + [*_DEFAULT_FEW, *_DEFAULT_MANY]
    rungs += [r for ladder_ in tuned_invariant_table().values() for r in ladder_]
    rungs += [*_INVARIANT_FEW, *_INVARIANT_MANY]
    route = {r.kernel for ladder_ in tuned_route_table().values() for r in ladder_}
    route |= {spec.symbol for _, spec in _ROUTE_DEFAULT} | {spec.symbol for spec in select_specs()}
    norms = {spec.symbol for spec in rmsnorm.SPECS}  # the router's producer (rms_norm): every K range
    return {s for r in rungs for s in (r.bf16, r.f32)} | (route - {GEMM_THEN_SELECT}) | norms
