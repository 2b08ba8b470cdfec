"""Which kernel runs a given shape: a tuned table per GPU arch (tuned/<arch>.json), else a default ladder.

The choice is a pure function of (N, K, M, out dtype), made inside the custom op at run time, so a compiled
graph or a captured CUDA graph keeps the right kernel for each M.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from .families.splitk_mma import SplitKSpec


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
MAX_GRID_Y = 65535


@lru_cache(maxsize=None)
def tuned_table(arch: str) -> dict[tuple[int, int], tuple[Rung, ...]]:
    try:
        data = json.loads(resources.files("cutlass_router").joinpath(f"tuned/{arch}.json").read_text())
    except FileNotFoundError:
        return {}
    return {(s["N"], s["K"]): tuple(Rung(**r) for r in s["rungs"]) for s in data["shapes"]}


def ladder(N: int, K: int, arch: str = "sm_90a") -> tuple[Rung, ...]:
    return tuned_table(arch).get((N, K)) or (_DEFAULT_FEW if N <= 48 else _DEFAULT_MANY)


def _pick(rungs: tuple[Rung, ...], M: int, out_dtype: str) -> str:
    for rung in rungs:
        if M <= rung.max_m:
            return getattr(rung, out_dtype)
    raise AssertionError("the last rung serves every M")


def choose(N: int, K: int, M: int, out_dtype: str, arch: str = "sm_90a") -> str:
    """The kernel for this call. A tuned TMA kernel whose output rows N cannot take (not 16-byte multiples)
    gives way to the split-K ladder, which takes any N."""
    from .manifest import entry

    symbol = _pick(ladder(N, K, arch), M, out_dtype)
    if N % entry(symbol).launch.get("n_multiple", 1):
        symbol = choose_splitk(N, M, out_dtype)
    return symbol


def choose_splitk(N: int, M: int, out_dtype: str) -> str:
    """The default split-K ladder's kernel: takes any N, and ships prebuilt."""
    return _pick(_DEFAULT_FEW if N <= 48 else _DEFAULT_MANY, M, out_dtype)


def reachable(arch: str = "sm_90a") -> set[str]:
    """Every kernel dispatch can pick: the tuned ladders and both default ladders (untuned shapes, fallbacks)."""
    rungs = [r for ladder_ in tuned_table(arch).values() for r in ladder_] + [*_DEFAULT_FEW, *_DEFAULT_MANY]
    return {s for r in rungs for s in (r.bf16, r.f32)}
