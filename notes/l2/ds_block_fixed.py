"""Experiment: DeepSeek-V3's route at decode sizes with the row-per-CTA select kernel (route_select_block, the
choice at M <= BLOCK_MAX_M) against its own fixed select kernel (crt_route_select_sigmoid_n256_g8_tg4_k8, a warp
per row), in the decode loop, beside router_gemm + the Triton stand-in.

    python notes/l2/ds_block_fixed.py [- out.json]
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import cutlass_router  # noqa: E402
from cutlass_router import plan  # noqa: E402
from cutlass_router.families import route as fam  # noqa: E402
from cutlass_router.models import MODELS  # noqa: E402
from cutlass_router.yardstick import DecodeLoop  # noqa: E402
from floor import choice_rows, report, save, variant_rows  # noqa: E402

BLOCK_MAX_M = fam.BLOCK_MAX_M
_caches: dict = {}


def use(block: bool):
    """route's select kernel at M <= BLOCK_MAX_M: the row-per-CTA one (block) or the model's fixed one; each with
    its own plan cache, so that a call inside graph capture finds the plan its warm-up made."""
    fam.BLOCK_MAX_M = BLOCK_MAX_M if block else 0
    plan._ROUTE_PLANS = _caches.setdefault(block, {})


def main():
    cfg = MODELS["deepseek-v3"]
    N, K = cfg.shape
    cb = torch.randn(N, device="cuda") * 0.1
    kw = dict(cfg.route, correction_bias=cb)
    card = torch.cuda.get_device_name()
    recs = []
    for M in (1, 2, 4, 8, 16):
        loop = DecodeLoop(N, K, M, with_bias=False)
        rows = choice_rows(cfg.top_k, kw, cb, fp32=True)
        rows.update(variant_rows(use, {"route (block)": True, "route (fixed)": False},
                                 lambda i, x, w, b: cutlass_router.route(x, w, None, top_k=cfg.top_k, **kw)))
        res = loop.measure(rows)
        use(True)
        report(recs, "deepseek-v3", N, K, M, res, card)
        del loop
    save(recs, "ds-block-fixed")


if __name__ == "__main__":
    main()
