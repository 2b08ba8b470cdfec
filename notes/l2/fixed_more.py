"""Experiment: route with a model's own select kernel (families/route.py: FIXED_CHOICES, the Hugging Face patch's
families beyond models.py) against the runtime-sized select kernel, in the decode loop, beside router_gemm and
router_gemm + the Triton stand-in: Qwen3-MoE (30B-A3B: N = 128, K = 2048, softmax then top 8, renormalised),
Mixtral (N = 8, K = 4096, top 2), Kimi-K2 (N = 384, K = 7168, sigmoid, top 8, fp32 logits).

    python notes/l2/fixed_more.py [- out.json]
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
from cutlass_router.yardstick import DecodeLoop  # noqa: E402
from floor import HF_SHAPES, choice_rows, report, save, variant_rows  # noqa: E402

FIXED_SYMBOL = fam.fixed_symbol
_caches: dict = {}
NAMES = ("qwen3-moe-30b", "mixtral", "kimi-k2")  # of floor.HF_SHAPES


def use(fixed: bool):
    """route's select kernel: the model's own (fixed) or the runtime-sized one, each with its own plan cache."""
    fam.fixed_symbol = FIXED_SYMBOL if fixed else (lambda *a: None)
    plan._ROUTE_PLANS = _caches.setdefault(fixed, {})


def main():
    card = torch.cuda.get_device_name()
    recs = []
    for name in NAMES:
        N, K, top_k, kw, fp32 = HF_SHAPES[name]
        cb = torch.randn(N, device="cuda") * 0.1
        if kw["scoring"] == "sigmoid":
            kw = dict(kw, correction_bias=cb)
        for M in (1, 16, 256, 1024, 4096):
            loop = DecodeLoop(N, K, M, with_bias=False)
            rows = choice_rows(top_k, kw, cb, fp32)
            rows.update(variant_rows(use, {"route (own select)": True, "route (runtime-sized select)": False},
                                     lambda i, x, w, b: cutlass_router.route(x, w, b, top_k=top_k, **kw)))
            res = loop.measure(rows)
            use(True)
            report(recs, name, N, K, M, res, card)
            del loop
    save(recs, "fixed-more")


if __name__ == "__main__":
    main()
