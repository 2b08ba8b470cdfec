"""The kernels this library ships: every configuration dispatch may pick, for both output dtypes.

Adding a kernel means adding its spec here, running `python -m cutlass_router emit`, and committing emitted/.
"""
from __future__ import annotations

from .families.splitk_mma import SplitKSpec

OUT_DTYPES = ("bf16", "f32")

# (warps, cluster, exp_tiles, tok_tiles, unroll): decode-sized M, one row of the M ladder each.
_SPLITK = (
    # decode, M <= 8: 16 experts x 8 tokens per CTA; K over the cluster's CTAs and their warps
    (4, 8, 1, 1, 2),
    (4, 16, 1, 1, 1),
    (4, 4, 1, 1, 4),
    (8, 4, 1, 1, 2),
    (8, 8, 1, 1, 1),
    (16, 1, 1, 1, 2),
    (4, 8, 2, 1, 2),
    # M <= 32: more tokens per CTA
    (4, 8, 1, 2, 2),
    (4, 16, 1, 2, 1),
    (4, 8, 1, 4, 2),
    (4, 4, 1, 4, 2),
    # M <= 512: 32 x 32 tiles, fewer re-reads of W and x
    (4, 8, 2, 4, 1),
    (4, 4, 2, 4, 2),
    (4, 2, 2, 4, 2),
    (8, 2, 2, 4, 2),
    (4, 1, 2, 4, 4),
)


def specs() -> list:
    out = []
    for dt in OUT_DTYPES:
        out += [SplitKSpec(dt, w, c, e, t, u) for (w, c, e, t, u) in _SPLITK]
    return out


def by_symbol() -> dict:
    return {s.symbol: s for s in specs()}
