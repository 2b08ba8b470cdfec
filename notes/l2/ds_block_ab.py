"""A/B in the decode loop (not shipped): DeepSeek-V3's route (router_gemm into fp32 logits, then a select kernel
under PDL) with the row-per-CTA sigmoid select kernel (route_select_block, what select_symbol picks up to
families/route.py BLOCK_MAX_M = 32) against the warp-per-row one, at M around that crossing, beside router_gemm +
the Triton grouped-sigmoid stand-in (the row route trailed at M = 32 in two bench runs of 2026-11-29).

    python notes/l2/ds_block_ab.py [out.json [M,M,...]]
"""
from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import triton_peers as tp  # noqa: E402
from cutlass_router import dispatch, models, ops, plan, route, router_gemm  # noqa: E402
from cutlass_router.families import route as fam  # noqa: E402
from cutlass_router.yardstick import DecodeLoop  # noqa: E402

m = models.MODELS["deepseek-v3"]
N, K, TOP_K, R = m.experts, m.hidden, m.top_k, m.route


def make(x, w, cb, block_max):
    a = ops._args(TOP_K, R["scoring"], R["renormalize"], R["n_group"], R["topk_group"], R["routed_scaling_factor"],
                  R["logit_precision"], None, torch.float32, torch.int32)
    saved = fam.BLOCK_MAX_M
    fam.BLOCK_MAX_M = block_max
    try:
        return plan.route(x, w, None, cb, a, False, choice=dispatch.GEMM_THEN_SELECT)
    finally:
        fam.BLOCK_MAX_M = saved


def main():
    card = torch.cuda.get_device_name()
    cb = torch.randn(N, device="cuda") * 0.1
    recs = []
    for M in [int(v) for v in sys.argv[2].split(",")] if len(sys.argv) > 2 else (8, 16, 24, 32, 48):
        loop = DecodeLoop(N, K, M, with_bias=False)
        rows = {"route": lambda i, x, w, b: route(x, w, None, TOP_K, correction_bias=cb, **R),
                "router_gemm+triton": lambda i, x, w, b: tp.sigmoid_grouped_topk(
                    router_gemm(x, w, None, out_dtype=torch.float32), TOP_K, R["n_group"], R["topk_group"], cb,
                    R["routed_scaling_factor"], R["renormalize"])}
        for name, bm in (("block select", 1 << 20), ("warp select", 0)):
            cache = {}

            def call(i, x, w, b, bm=bm, cache=cache):
                if i not in cache:
                    cache[i] = make(x, w, cb, bm)
                return plan.run_route(cache[i], x, w, None, cb, None, False)
            rows[name] = call
        g = torch.Generator(device="cuda").manual_seed(M)
        x = torch.randn(M, K, device="cuda", generator=g).to(torch.bfloat16)
        w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(torch.bfloat16)
        pa, pb = make(x, w, cb, 1 << 20), make(x, w, cb, 0)
        assert pa.kernel.entry.symbol != pb.kernel.entry.symbol, (pa.kernel.entry.symbol, M)
        oa, ob = (plan.run_route(p, x, w, None, cb, None, False) for p in (pa, pb))
        assert torch.equal(oa[1], ob[1]) and torch.allclose(oa[0], ob[0], rtol=1e-6, atol=0), M
        res = loop.measure(rows)
        print(f"M={M}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()), flush=True)
        recs += [dict(model="deepseek-v3", experts=N, hidden=K, M=M, provider=k, us=v, card=card,
                      date=str(datetime.date.today())) for k, v in res.items()]
        del loop
    Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / f"notes/l2/ds-block-ab-{datetime.date.today()}.json").write_text(
        json.dumps(recs, indent=1))


if __name__ == "__main__":
    main()
