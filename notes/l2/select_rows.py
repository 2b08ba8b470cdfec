"""Experiment: rows per CTA of the select kernel for the softmax routers, in the decode-layer loop (route forced to
GEMM + select), beside router_gemm + the Triton stand-in. families.route.select_rows is a host-side choice (the
kernel reads its rows per CTA from blockDim), so no rebuild: each variant sets it and makes its plan afresh.

    python notes/l2/select_rows.py
"""
import datetime
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import cutlass_router  # noqa: E402
from cutlass_router import dispatch, plan  # noqa: E402
from cutlass_router.families import route as fam  # noqa: E402
from cutlass_router.yardstick import DecodeLoop  # noqa: E402
import triton_peers as tp  # noqa: E402

ROWS = [None]
_orig = fam.select_rows
fam.select_rows = lambda mode, M: ROWS[0] if ROWS[0] is not None else _orig(mode, M)
dispatch.choose_route = lambda N, K, M, alloc_free=False: dispatch.GEMM_THEN_SELECT


def variant(rows):
    def call(i, x, w, b):
        ROWS[0] = rows
        plan.clear()
        try:
            return cutlass_router.route(x, w, b, top_k=4)
        finally:
            ROWS[0] = None
    return call


def main():
    card = torch.cuda.get_device_name()
    recs = []
    for name, N in (("gpt-oss-120b", 128), ("gpt-oss-20b", 32)):
        for M in (1, 64, 128, 256, 1024):
            rows = {f"select rows {r}": variant(r) for r in (1, 2, 4, 8)}
            rows["router_gemm+triton"] = lambda i, x, w, b: tp.topk_softmax(cutlass_router.router_gemm(x, w, b), 4)
            res = DecodeLoop(N, 2880, M).measure(rows)
            print(f"{name} M={M}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()), flush=True)
            recs += [dict(model=name, M=M, provider=k, us=v, card=card, date=str(datetime.date.today()))
                     for k, v in res.items()]
    Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "notes/l2/select-rows.json").write_text(json.dumps(recs, indent=1))


if __name__ == "__main__":
    main()
