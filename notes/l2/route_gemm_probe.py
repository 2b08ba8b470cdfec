"""Probe: route's GEMM + select path with the GEMM forced to each of the GEMM table's best candidates at this M,
with and without PDL, in the decode-layer loop. Does route's two-kernel path want another GEMM than router_gemm's
(DeepSeek M = 4: route 8.16 against 6.34 at M = 2 and 7.60 at M = 8, its GEMM alone 4.2)?

    python notes/l2/route_gemm_probe.py [model] [M,M,...]

Run 1 of the fourteenth session (H200; its printout and JSON line in notes/device-2026-11-29f/run1.log): router_gemm's
own pick made the fastest route at DeepSeek M = 2 / 4 / 8 and gpt-oss-120b M = 1 / 8; at gpt-oss-120b M = 16 the
split-K kernel w4_c4_e1_t1_u4 (within the GEMM table's tie) made route 0.24 us faster than router_gemm's w4_c8.
"""
import json
import sys

import torch

from cutlass_router import dispatch, models, plan, tune
from cutlass_router.yardstick import DecodeLoop

name = sys.argv[1] if len(sys.argv) > 1 else "deepseek-v3"
ms = [int(m) for m in (sys.argv[2] if len(sys.argv) > 2 else "2,4,8").split(",")]
model = models.MODELS[name]
N, K = model.shape
kw = dict(model.route)
a = plan.RouteArgs(model.top_k, kw.get("scoring", "topk_softmax"), kw.get("renormalize", False), kw.get("n_group", 1),
                   kw.get("topk_group", 1), float(kw.get("routed_scaling_factor", 1.0)), kw.get("logit_precision", "bf16"),
                   None, torch.float32, torch.int32)
cb = torch.randn(N, device="cuda") * 0.1 if a.scoring == "sigmoid" else None
table = next(s for s in json.loads(tune.default_path().read_text())["shapes"]
             if (s["N"], s["K"]) == (N, K))
real_choose = dispatch.choose
out = {}
for M in ms:
    best = sorted(table["us"][str(M)].items(), key=lambda kv: kv[1])[:6]
    loop = DecodeLoop(N, K, M, with_bias=model.bias)
    fns = {}
    for sym, _ in best:
        f32 = sym.replace("_bf16_", "_f32_", 1)
        dispatch.choose = lambda N_, K_, M_, dt, sym=sym, f32=f32: f32 if dt == "f32" else sym
        plan.clear()
        p = plan.route(loop.xn[0], loop.w[0], loop.b[0], cb, a, False, dispatch.GEMM_THEN_SELECT)
        assert p.gemm is not None and p.gemm.kernel is not None, p.reason
        for pdl in (False, True):
            fns[f"{sym} pdl={pdl}"] = lambda i, x, w, b, p=p, pdl=pdl: plan.run_route(p, x, w, b, cb, None, pdl)
    dispatch.choose = real_choose
    plan.clear()
    res = loop.measure(fns)
    for k, v in sorted(res.items(), key=lambda kv: kv[1]):
        print(f"{name} M={M} route via {k}: {v:.2f} us (GEMM table: {dict(best).get(k.split()[0])})", flush=True)
    out[M] = res
print(json.dumps({"model": name, "card": torch.cuda.get_device_name(), "us": out}))
