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
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import cutlass_router  # noqa: E402
import triton_peers as tp  # noqa: E402
from cutlass_router import plan  # noqa: E402
from cutlass_router.families import route as fam  # noqa: E402
from cutlass_router.yardstick import DecodeLoop  # noqa: E402
from floor import report, save  # noqa: E402

FIXED_SYMBOL = fam.fixed_symbol
_caches: dict = {}
CASES = {  # name: (N, K, top_k, route kwargs, bias, fp32 logits)
    "qwen3-moe-30b": (128, 2048, 8, dict(scoring="softmax_topk", renormalize=True), False, False),
    "mixtral": (8, 4096, 2, dict(scoring="softmax_topk", renormalize=True), False, False),
    "kimi-k2": (384, 7168, 8, dict(scoring="sigmoid", renormalize=True, routed_scaling_factor=2.827,
                                   logit_precision="fp32"), False, True),
}


def use(fixed: bool):
    """route's select kernel: the model's own (fixed) or the runtime-sized one, each with its own plan cache."""
    fam.fixed_symbol = FIXED_SYMBOL if fixed else (lambda *a: None)
    plan._ROUTE_PLANS = _caches.setdefault(fixed, {})


def main():
    card = torch.cuda.get_device_name()
    recs = []
    for name, (N, K, top_k, kw, bias, fp32) in CASES.items():
        cb = torch.randn(N, device="cuda") * 0.1
        if kw["scoring"] == "sigmoid":
            kw = dict(kw, correction_bias=cb)

            def triton(lg):
                return tp.sigmoid_grouped_topk(lg, top_k, 1, 1, cb, kw["routed_scaling_factor"], True)
        else:
            def triton(lg):
                return tp.softmax_topk(lg, top_k, True)
        dtype = torch.float32 if fp32 else None
        for M in (1, 16, 256, 1024, 4096):
            loop = DecodeLoop(N, K, M, with_bias=bias)
            def gemm(i, x, w, b):
                return cutlass_router.router_gemm(x, w, b, out_dtype=dtype)
            rows = {"router_gemm": gemm, "router_gemm+triton": lambda i, x, w, b: triton(gemm(i, x, w, b))}
            for label, fixed in (("route (own select)", True), ("route (runtime-sized select)", False)):
                rows[label] = (lambda fixed: lambda i, x, w, b: (use(fixed), cutlass_router.route(
                    x, w, b, top_k=top_k, **kw))[1])(fixed)
            res = loop.measure(rows)
            use(True)
            report(recs, name, N, K, M, res, card)
            del loop
    save(recs, "fixed-more")


if __name__ == "__main__":
    main()
