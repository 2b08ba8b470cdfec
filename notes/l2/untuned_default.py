"""Experiment: route's ladder for shapes without a tuned entry (dispatch.default_route_ladder) at decode sizes: the
fused kernel (one cluster streams all of W) against router_gemm + the select kernel, in the decode loop, beside
router_gemm + the Triton stand-in: Kimi-K2 (384 x 7168, 5.5 MB), Qwen3-235B (128 x 4096, 1 MB), Qwen3-30B
(128 x 2048, 512 KiB), Mixtral (8 x 4096, 64 KB).

    [UNTUNED=kimi-k2,mixtral] python notes/l2/untuned_default.py [- out.json]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import cutlass_router  # noqa: E402
from cutlass_router import dispatch, plan  # noqa: E402
from cutlass_router.yardstick import DecodeLoop  # noqa: E402
from floor import HF_SHAPES, choice_rows, report, save, variant_rows  # noqa: E402

ROUTE_RUNG = dispatch.route_rung
_caches: dict = {}


def use(how: str):
    """route's kernels: the ladder's (as shipped) or the fused kernel forced; each with its own plan cache."""
    if how == "fused":
        dispatch.route_rung = lambda N, K, M, one_launch=False: dispatch.default_route_ladder(N)[0]
    else:
        dispatch.route_rung = ROUTE_RUNG
    plan._ROUTE_PLANS = _caches.setdefault(how, {})


def main():
    card = torch.cuda.get_device_name()
    recs = []
    only = os.environ.get("UNTUNED")  # comma-separated names: these only
    for name, (N, K, top_k, kw, fp32) in HF_SHAPES.items():
        if only and name not in only.split(","):
            continue
        cb = torch.randn(N, device="cuda") * 0.1
        if kw["scoring"] == "sigmoid":
            kw = dict(kw, correction_bias=cb)
        print(name, [r.kernel for r in dispatch.route_ladder(N, K)], flush=True)
        for M in (1, 16, 64):
            loop = DecodeLoop(N, K, M, with_bias=False)
            rows = choice_rows(top_k, kw, cb, fp32)
            rows.update(variant_rows(use, {"route (ladder)": "ladder", "route (fused)": "fused"},
                                     lambda i, x, w, b: cutlass_router.route(x, w, b, top_k=top_k, **kw)))
            res = loop.measure(rows)
            use("ladder")
            report(recs, name, N, K, M, res, card)
            del loop
    save(recs, "untuned-default")


if __name__ == "__main__":
    main()
