"""A/B in the decode loop: route_leader_tail's choice for N <= 32 with gpt-oss's router by ranks counted over the
warp's keys in shared memory (route.cuh select_rank1) against select_row's rounds, in the route kernels gpt-oss-20b
runs: the GEMV route kernel at M <= 16, the split-K fused kernel w8_s4 at M = 32-128. The "rounds" kernel is the same
template with the rank branch compiled out (`if constexpr (kP == 1)` -> false), built here; both checked bit for bit
against each other and the ids against the reference first, then timed in the same loop, interleaved, through the
library's route plan. (notes/l2/rank_ab.py measured ranks by shuffles the same way: slower, not kept.)

    python notes/l2/smem_rank_ab.py [out.json] [select]

`select`: the same A/B for the select kernel of one expert per lane (crt_route_select_topk_softmax_p1) behind the
GEMM, at M = 1 / 8 / 64 / 256 / 1024, with route_select_p calling select_rank1 under
`if constexpr (kMaxP == 1 && kMode == kModeTopkSoftmax) {` (scratch for 8 warps). Run 9 (H200,
smem-rank-ab-select-2026-11-29-h200.json): ranks 3.72 / 3.79 / 4.76 / 6.00 / 9.46 us against rounds 3.90 / 3.95 /
4.82 / 5.24 / 8.50: 0.06-0.18 faster to M = 64, 0.8-1.0 slower at 256 and 1024, where gpt-oss-20b's table runs this
kernel (at decode sizes it runs the fused kernels). Not kept: the template has no such branch, so `select` stops at
its marker assertion unless the branch is put back.

Run 4 of the fourteenth session (H200, smem-rank-ab-2026-11-29-h200.json): GEMV route kernel M = 1 / 2 / 4 / 8 / 16
ranks 2.97 / 3.07 / 3.05 / 3.09 / 3.48 us, rounds 3.42 / 3.32 / 3.35 / 3.41 / 3.80; w8_s4 at M = 32 / 64 / 128 4.07 /
3.98 / 4.57 against 4.27 / 4.19 / 4.73.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from cutlass_router import launch, manifest, ops, plan, route, router_gemm  # noqa: E402
from cutlass_router.dispatch import GEMM_THEN_SELECT  # noqa: E402
from cutlass_router.routing_ref import select  # noqa: E402
from cutlass_router.yardstick import DecodeLoop  # noqa: E402

N, K, TOP_K = 32, 2880, 4
MS = {1: "crt_route_gemv_r2_m1_v1_t384", 2: "crt_route_gemv_r2_m1_v1_t384", 4: "crt_route_gemv_r2_m1_v1_t384",
      8: "crt_route_gemv_r2_m1_v1_t384", 16: "crt_route_gemv_r2_m1_v1_t384", 32: "crt_route_w8_s4_e1_t1_u2",
      64: "crt_route_w8_s4_e1_t1_u2", 128: "crt_route_w8_s4_e1_t1_u2"}
# `select`: the select kernel (gpt-oss-20b's GEMM + select rungs, and batch-invariant route at every M)
SELECT_MS = {M: GEMM_THEN_SELECT for M in (1, 8, 64, 256, 1024)}
MARKS = ("if constexpr (kP == 1) {", "if constexpr (kMaxP == 1 && kMode == kModeTopkSoftmax) {")


def variants(symbol):
    e = manifest.entry(symbol)
    src = e.source()
    mark = MARKS[1] if e.config["select_only"] else MARKS[0]
    assert src.count(mark) == 1
    return {"ranks": launch.load(symbol), "rounds": launch.load_entry(e, source=src.replace(mark, "if constexpr (false) {"))}


_VARIANTS: dict = {}


def plans(symbol, x, w, b):
    a = ops._args(TOP_K, "topk_softmax", False, 1, 1, 1.0, "bf16", None, torch.float32, torch.int32)
    p = plan.route(x, w, b, None, a, False, choice=symbol)
    out = {}
    varied = p.kernel.entry.symbol  # the fused kernel, or the select kernel after the GEMM
    if varied not in _VARIANTS:  # built and loaded once per symbol
        _VARIANTS[varied] = variants(varied)
    for name, k in _VARIANTS[varied].items():
        fast = plan.PlanLaunch(k, x.get_device(), p.consts.grid, launch, p.consts.cluster, p.consts.block)
        out[name] = dataclasses.replace(p, kernel=k, fast=fast)
    return out


def run(p, x, w, b):
    return plan.run_route(p, x, w, b, None, None, False)


def main():
    torch.manual_seed(0)
    card = torch.cuda.get_device_name()
    recs = []
    for M, sym in (SELECT_MS if "select" in sys.argv[2:] else MS).items():
        x = torch.randn(M, K, device="cuda").to(torch.bfloat16)
        w = (torch.randn(N, K, device="cuda") * K ** -0.5).to(torch.bfloat16)
        b = torch.randn(N, device="cuda").to(torch.bfloat16)
        ps = plans(sym, x, w, b)
        outs = {k: run(p, x, w, b) for k, p in ps.items()}
        assert all(torch.equal(outs["ranks"][i], outs["rounds"][i]) for i in (0, 1)), (M, "ranks != rounds")
        logits = (x.double() @ w.double().T + b.double()).to(torch.bfloat16).float()
        rw, ri = select(logits, TOP_K, scoring="topk_softmax")
        assert torch.equal(outs["ranks"][1].long(), ri), (M, "ids != reference")
        assert torch.allclose(outs["ranks"][0], rw.float(), rtol=1e-6, atol=1e-7), (M, "weights != reference")
        loop = DecodeLoop(N, K, M, with_bias=True)
        rows = {"route": lambda i, x, w, b: route(x, w, b, TOP_K),
                "router_gemm": lambda i, x, w, b: router_gemm(x, w, b)}
        for name in ps:
            cache = {}

            def call(i, x, w, b, name=name, cache=cache):
                if i not in cache:  # a plan per layer: its consts hold that layer's strides (all equal here)
                    cache[i] = plans(sym, x, w, b)[name]
                return run(cache[i], x, w, b)
            rows[name] = call
        res = loop.measure(rows)
        print(f"M={M} {sym}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()), flush=True)
        recs += [dict(model="gpt-oss-20b", experts=N, hidden=K, M=M, provider=k, kernel=sym, us=v, card=card,
                      date=str(datetime.date.today())) for k, v in res.items()]
        del loop
    Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / f"notes/l2/smem-rank-ab-{datetime.date.today()}.json").write_text(
        json.dumps(recs, indent=1))


if __name__ == "__main__":
    main()
