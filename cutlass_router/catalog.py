"""Every kernel this library emits: the configurations dispatch may pick and the candidates `tune` times, for
both output dtypes. What ships prebuilt is the part dispatch can reach (dispatch.reachable()).

Adding a kernel means adding its spec here, running `python -m cutlass_router emit`, and committing emitted/.
"""
from __future__ import annotations

from .dispatch import invariant_tiled
from .families.cutlass_sm90 import Sm90GemmSpec
from .families.gemv import GemvSpec
from .families.rmsnorm import SPECS as RMSNORM_SPECS
from .families.route import RouteGemvSpec, RouteSpec, select_specs
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
    # ... and every W load of a warp issued before the grid-dependency wait (chunks per warp <= unroll)
    (16, 1, 1, 1, 3),
    (12, 1, 1, 1, 4),
    (8, 2, 1, 1, 3),
    (8, 2, 1, 1, 2),
    (4, 8, 2, 1, 2),
    (4, 4, 2, 1, 2),
    # M <= 32: more tokens per CTA
    (4, 8, 1, 2, 2),
    (4, 16, 1, 2, 1),
    (4, 8, 1, 4, 2),
    (4, 4, 1, 4, 2),
    (4, 4, 2, 2, 2),
    (4, 8, 2, 2, 2),
    (8, 4, 1, 4, 2),
    # M <= 512: 32 x 32 tiles, fewer re-reads of W and x
    (4, 8, 2, 4, 1),
    (4, 4, 2, 4, 2),
    (4, 2, 2, 4, 2),
    (8, 2, 2, 4, 2),
    (4, 1, 2, 4, 4),
    # batch-invariant mode at M <= 32-90: order (32, 1, 1) with one 16 x 8 tile
    (4, 8, 1, 1, 1),
    (8, 4, 1, 1, 1),
)

# The same order (32, 1, 1) with one accumulator set at unroll 2 or 4 (SplitKSpec.acc = 1): unroll 1's bits, with
# a slice's chunks loaded at once instead of one round trip each (a slice of 32 holds up to 2 chunks of K = 2880,
# 4 of K = 7168). Batch-invariant mode's decode sizes.
_SPLITK_ONE_SET = ((8, 4, 1, 1, 2), (4, 8, 1, 1, 2), (4, 8, 1, 1, 4), (8, 4, 1, 1, 4), (4, 8, 1, 2, 2))

# (rows, tokens, vecs, threads): GEMV kernels for the first rungs of M (families/gemv.py). One pass over K = 2880
# (360 vectors) or 7168 (896): 192 x 2 or 128 x 3 or 384 x 1 vectors, and 256 x 4 or 448 x 2. Chosen from a prototype
# timed in the decode-layer loop (notes/l2/gemv.py, H200), where two rows per CTA lost to one: with 192 threads, each
# then issued 4 W loads. What costs is the loads per thread, not the bytes per SM (thirteenth session,
# notes/l2/gemvroute.cu): two rows over 384 threads (2 W loads each) cost what one row does, and read each token's x
# once for two experts, so they serve gpt-oss-120b to M = 8 and gpt-oss-20b at M = 2-32 (tune, 2026-11-29). Four
# and eight tokens over two rows: candidates for M = 16-128; in their first tuning (H200, fourteenth session,
# notes/l2/tune-run6-2026-11-29-h200.json) none beat the committed choice by more than the 3% tie (gpt-oss-20b M = 32:
# r2_m4 2.72 us against r2_m2 2.73; M = 64: 3.38 against split-K 3.32).
_GEMV = ((1, 1, 2, 192), (1, 1, 3, 128), (1, 1, 1, 384), (1, 2, 2, 192), (1, 2, 1, 384), (1, 4, 1, 384),
         (1, 1, 4, 256), (1, 1, 2, 448), (1, 2, 2, 448), (1, 4, 2, 448), (2, 1, 1, 384), (2, 2, 1, 384),
         (2, 4, 1, 384), (2, 8, 1, 384))

# Tiled serial kernels (splitk_tiled) for the batch-invariant mode above decode sizes: (expert warps, token warps,
# exp_tiles, tok_tiles, stages, warp groups), each in the invariant order (dispatch.invariant_tiled). Picked from 23
# configurations timed on an H200 (notes/invariant/tiles.py), and 6 more once the stages came by TMA: more groups where
# few CTAs run (each walks fewer chunks), larger tiles where the GPU is full (fewer re-reads of W and x); 64 x 32 warp
# tiles for DeepSeek-V3's N = 256 at M = 8192.
_TILED = ((1, 1, 2, 2, 3, 8), (1, 2, 2, 2, 3, 4), (1, 2, 2, 2, 3, 2), (2, 2, 2, 2, 3, 1), (4, 2, 2, 4, 4, 1),
          (2, 2, 4, 4, 3, 1))

# (swap_ab, tile_m, tile_n, tile_k, kernel schedule, cluster_n): TMA + wgmma tiles for large M. Without swap the
# GEMM's M is tokens; with swap it is experts. A cluster along N shares each x tile by TMA multicast.
_SM90 = (
    (False, 128, 128, 64, "TmaWarpSpecializedCooperative", 1),
    (False, 64, 128, 64, "TmaWarpSpecializedPingpong", 1),
    (True, 128, 64, 128, "TmaWarpSpecialized", 1),
    (False, 128, 32, 128, "TmaWarpSpecializedCooperative", 1),
    (False, 64, 32, 128, "TmaWarpSpecialized", 1),
    (False, 64, 32, 128, "TmaWarpSpecialized", 4),
    (False, 64, 64, 128, "TmaWarpSpecialized", 2),
)
_EPILOGUE = {"TmaWarpSpecializedCooperative": "TmaWarpSpecializedCooperative",
             "TmaWarpSpecializedPingpong": "TmaWarpSpecialized", "TmaWarpSpecialized": "TmaWarpSpecialized"}


# (warps, splits, exp_tiles, tok_tiles, unroll): fused route kernels; a cluster is ceil(N / 16 exp_tiles) x splits
# CTAs (at most 16), so the configurations differ in how many CTAs share W and how many tokens a cluster holds.
_ROUTE = (
    (16, 1, 1, 1, 3),   # 16 experts a CTA, K over 16 warps: N <= 256
    (16, 2, 1, 1, 2),   # ... K also over 2 CTAs: N <= 128 in 16 CTAs
    (8, 2, 1, 1, 3),
    (8, 4, 1, 1, 2),    # N <= 64 in 16 CTAs
    (4, 8, 1, 1, 2),    # N <= 32 in 16 CTAs
    (8, 1, 2, 1, 3),    # 32 experts a CTA: N <= 512 (the kernels stop at 384)
    (16, 1, 1, 2, 2),   # 16 tokens a cluster
    (8, 2, 2, 1, 2),    # N <= 256 in 16 CTAs, 32 experts each
    (8, 4, 1, 2, 2),
    (8, 1, 3, 1, 2),    # 48 experts a CTA: N <= 384 in 8 CTAs
)

# (rows, tokens, vecs, threads): fused route kernels whose CTAs are GEMVs (route_gemv), N <= 16 rows in one cluster.
# Two rows a CTA with a thread per 16-byte vector of each row (K <= 3072 in one pass), as the prototype that beat
# GEMM + select by 0.3-0.75 us on gpt-oss-20b at M = 1-16 in the decode loop with the library's choice (select_row),
# 0.6-0.9 with a rank choice over keys in shared memory (notes/l2/gemvroute.cu, rl_c16_r2_g1_*_s1 / _s3); that choice
# is now route.cuh's select_rank1 for gpt-oss's router, 0.25-0.45 us under select_row (notes/l2/smem_rank_ab.py).
# r2_m4 (fourteenth session): 3.34 us at gpt-oss-20b M = 16 against r2_m1's 3.38 (run 6): within the tie, not shipped.
_ROUTE_GEMV = ((2, 1, 1, 384), (2, 2, 1, 384), (2, 4, 1, 384))


def specs() -> list:
    out = [RouteSpec(w, s, e, t, u) for (w, s, e, t, u) in _ROUTE]
    out += [RouteGemvSpec(r, m, v, t) for (r, m, v, t) in _ROUTE_GEMV]
    out += select_specs()
    out += list(RMSNORM_SPECS)
    for dt in OUT_DTYPES:
        out += [SplitKSpec(dt, w, c, e, t, u) for (w, c, e, t, u) in _SPLITK]
        out += [SplitKSpec(dt, w, c, e, t, u, acc=1) for (w, c, e, t, u) in _SPLITK_ONE_SET]
        out += [GemvSpec(dt, r, m, v, t) for (r, m, v, t) in _GEMV]
        out += [invariant_tiled(*cfg, out_dtype=dt) for cfg in _TILED]
        out += [Sm90GemmSpec(dt, swap, tm, tn, tk, cluster_n=cn, kernel_schedule=ks, epilogue_schedule=_EPILOGUE[ks])
                for (swap, tm, tn, tk, ks, cn) in _SM90]
    return out

