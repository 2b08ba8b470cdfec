"""Decomposition (not shipped): what DeepSeek-V3's select stage costs by part, in the decode loop. route() on the
DeepSeek shape (N = 256, K = 7168, GEMM + select at every M) with the choice cut down step by step: the full
grouped sigmoid (n_group 8, topk_group 4, top_k 8), no groups, top_k 1, softmax modes on the same logits; beside
router_gemm alone and router_gemm + the Triton stand-in. With a cubin directory: also router_gemm + the warp-per-row
sigmoid select kernel against the row-per-CTA one, both launched by hand (no PDL), checked against the reference.

    python notes/l2/ds_select.py [out.json] [CUBIN_DIR]
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
import cutlass_router  # noqa: E402
import triton_peers as tp  # noqa: E402
from cutlass_router.routing_ref import select  # noqa: E402
from cutlass_router.yardstick import DecodeLoop  # noqa: E402

N, K = 256, 7168


class HandSelect:
    """router_gemm (fp32) then one select cubin, launched by hand: the grouped sigmoid choice (8 of 256)."""

    def __init__(self, path, name, block):
        import ctypes
        from cuda.bindings import driver as D
        from floor import ok
        from cutlass_router.families.route import PARAMS
        self.D, self.ok, self.PARAMS, self.ctypes = D, ok, PARAMS, ctypes
        self.f = ok(D.cuModuleGetFunction(ok(D.cuModuleLoad(str(path).encode())), name.encode()))
        self.block = block
        self.buf = ctypes.create_string_buffer(PARAMS.size)
        self.argv = (ctypes.c_void_p * 1)(ctypes.addressof(self.buf))

    def select(self, logits, cb, weights, ids):
        D = self.D
        M = logits.shape[0]
        cfg = D.CUlaunchConfig()
        cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = M, 1, 1
        cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = (N if self.block else 32), 1, 1
        cfg.sharedMemBytes = 0
        cfg.hStream = D.CUstream(torch.cuda.current_stream().cuda_stream)
        cfg.attrs, cfg.numAttrs = [], 0
        self.PARAMS.pack_into(self.buf, 0, 0, 0, 0, cb.data_ptr(), logits.data_ptr(), 0, weights.data_ptr(),
                              ids.data_ptr(), 0, 0, logits.stride(0), 0, 8, M, N, 0, 8, 2, 33, 8, 4, 2.5, 0)
        self.ok(D.cuLaunchKernelEx(cfg, self.f, self.ctypes.addressof(self.argv), 0))
        return weights, ids

    def row(self, cb):
        outs = {}

        def call(i, x, w, b):
            lg = cutlass_router.router_gemm(x, w, None, out_dtype=torch.float32)
            if i not in outs:
                outs[i] = (torch.empty(x.shape[0], 8, device="cuda"),
                           torch.empty(x.shape[0], 8, device="cuda", dtype=torch.int32))
            return self.select(lg, cb, *outs[i])
        return call

    def check(self, cb):
        for M in (1, 7, 300):
            lg = torch.randn(M, N, device="cuda")
            lg[:, 1::5] = lg[:, :1]  # ties
            w, i = self.select(lg, cb, torch.full((M, 8), float("nan"), device="cuda"),
                               torch.full((M, 8), -1, device="cuda", dtype=torch.int32))
            rw, ri = select(lg, 8, scoring="sigmoid", n_group=8, topk_group=4, renormalize=True,
                            routed_scaling_factor=2.5, correction_bias=cb, logit_precision="fp32")
            assert torch.equal(i.long(), ri) and torch.allclose(w, rw, rtol=1e-6, atol=1e-7), M


def main():
    torch.zeros(1, device="cuda")
    cb = torch.randn(N, device="cuda") * 0.1
    card = torch.cuda.get_device_name()
    full = dict(scoring="sigmoid", n_group=8, topk_group=4, renormalize=True, routed_scaling_factor=2.5,
                correction_bias=cb, logit_precision="fp32")
    cases = {"sigmoid g8 k8": (full, 8), "sigmoid g1 k8": (dict(full, n_group=1, topk_group=1), 8),
             "sigmoid g1 k1": (dict(full, n_group=1, topk_group=1), 1),
             "topk_softmax k8": (dict(scoring="topk_softmax", logit_precision="fp32"), 8),
             "topk_softmax k1": (dict(scoring="topk_softmax", logit_precision="fp32"), 1)}
    hand = {}
    if len(sys.argv) > 2:
        d = Path(sys.argv[2])
        for label, name, block in (("warp", "crt_route_select_sigmoid_p8", False),
                                   ("block", "crt_route_select_sigmoid_block", True)):
            path = max(d.glob(f"{name}-sm_90a-*.cubin"), key=lambda q: q.stat().st_mtime)
            hand[label] = HandSelect(path, name, block)
            hand[label].check(cb)
        print("hand-launched select kernels match the reference", flush=True)
    recs = []
    for M in (1, 4, 16, 64, 256, 1024, 4096):
        loop = DecodeLoop(N, K, M, with_bias=False)
        rows = {"router_gemm": lambda i, x, w, b: cutlass_router.router_gemm(x, w, None, out_dtype=torch.float32),
                "router_gemm+triton": lambda i, x, w, b: tp.sigmoid_grouped_topk(
                    cutlass_router.router_gemm(x, w, None, out_dtype=torch.float32), 8, 8, 4, cb, 2.5, True)}
        for label, h in hand.items():
            rows[f"gemm+{label} select (by hand)"] = h.row(cb)
        for name, (kw, k) in cases.items():
            if M > 256 and name != "sigmoid g8 k8":
                continue
            rows[f"route {name}"] = (lambda kw, k: lambda i, x, w, b: cutlass_router.route(x, w, None, top_k=k, **kw))(kw, k)
        res = loop.measure(rows)
        print(f"deepseek-v3 M={M}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()), flush=True)
        recs += [dict(model="deepseek-v3", experts=N, hidden=K, M=M, provider=k, us=v, card=card,
                      date=str(datetime.date.today())) for k, v in res.items()]
        del loop
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / f"notes/l2/ds-select-{datetime.date.today()}.json")
    out.write_text(json.dumps(recs, indent=1))


if __name__ == "__main__":
    main()
