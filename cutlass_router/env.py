"""The environment switches, read by one parser so that every flag takes the same words."""
from __future__ import annotations

import logging
import os
from functools import lru_cache

DISABLE = "CUTLASS_ROUTER_DISABLE"                   # on: never run the emitted kernels (the torch path)
PDL = "CUTLASS_ROUTER_PDL"                           # on: launch with programmatic dependent launch
BATCH_INVARIANT = "CUTLASS_ROUTER_BATCH_INVARIANT"   # on: a row's bits do not depend on the batch
NVCC = "CUTLASS_ROUTER_NVCC"                         # none: never compile; a path: this nvcc
CACHE_DIR = "CUTLASS_ROUTER_CACHE_DIR"               # where compiled kernels are cached

# PDL off by default: after a producer that never triggers its dependents early (every torch kernel), the launch
# attribute costs about 0.5 us in a decode layer instead of saving time (benchmarks/bench_decode_layer.py). route()
# takes its default per shape and M from the tuned table instead (dispatch.RouteRung.pdl), where the variable is
# not set.
DEFAULTS = {DISABLE: False, PDL: False, BATCH_INVARIANT: False}
_TRUE = frozenset(("1", "true", "yes", "on"))
_FALSE = frozenset(("0", "false", "no", "off", ""))


@lru_cache(maxsize=None)
def _warn(name: str, value: str, default: bool) -> None:
    logging.getLogger("cutlass_router").warning(
        "cutlass_router: %s=%r is not a switch value (1/true/yes/on or 0/false/no/off); keeping the default, %s",
        name, value, ("on" if default else "off") + (" (route: the tuned table's choice)" if name == PDL else ""))


# os.environ.get encodes the name and decodes the value on every call (0.6 us; the eager path reads three switches
# per call). On POSIX, os.environ keeps the bytes it mirrors in _data, which os.environ's own setters and deleters
# update: a lookup there by the pre-encoded name is a dict lookup. Elsewhere, or should that attribute go away,
# os.environ.get serves.
_RAW = getattr(os.environ, "_data", None)
_RAW = _RAW if isinstance(_RAW, dict) and os.name == "posix" else None
_ENCODED = {n: os.fsencode(n) for n in DEFAULTS}
_WORDS: dict = {}  # raw bytes of a switch word seen -> its value (True/False); such values are few


def setting(name: str) -> bool | None:
    """A boolean switch as set: 1/true/yes/on or 0/false/no/off in any case; None when it is not set, or set to
    anything else (which warns once). Read on every call (cheap), so a process may change it between calls."""
    if _RAW is not None:
        raw = _RAW.get(_ENCODED[name])
        if raw is None:
            return None
        parsed = _WORDS.get(raw)
        if parsed is not None:
            return parsed
        value = os.fsdecode(raw)
    else:
        raw = None
        value = os.environ.get(name)
        if value is None:
            return None
    word = value.strip().lower()
    if word in _TRUE or word in _FALSE:
        if raw is not None and len(_WORDS) < 64:
            _WORDS[raw] = word in _TRUE
        return word in _TRUE
    _warn(name, value, DEFAULTS[name])
    return None


def flag(name: str) -> bool:
    """A boolean switch: its setting, or its default where it is not set (or set to a word that is not a switch
    value)."""
    value = setting(name)
    return DEFAULTS[name] if value is None else value


def in_force() -> dict[str, str]:
    """Every switch of this package that is set, as set (for `info`)."""
    return {k: os.environ[k] for k in (DISABLE, PDL, BATCH_INVARIANT, NVCC, CACHE_DIR) if k in os.environ}
