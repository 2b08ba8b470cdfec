"""A/B in the decode loop (not shipped): router_gemm, then the select kernel launched by hand from two cubins, same
loop, interleaved; both checked against the reference first.
Run 4 (argument OLD_DIR: crt_route_select_topk_softmax_p{1,4}.cubin of 22c4e27 and new_topk_softmax_p1.cubin): the
rounds against the rank choice for one expert per lane; 120b's 4-slot kernel (byte-identical) twice as a noise
control. With --block CUBIN_DIR: gpt-oss-120b's warp-per-row kernel (p4, one row per 32-thread CTA) against the
row-per-CTA one (route_select_block<0>, 128 threads a row).

    python notes/l2/select_ab.py OLD_DIR | --block CUBIN_DIR [out.json]
"""
from __future__ import annotations

import ctypes
import datetime
import json
import sys
from pathlib import Path

import torch
from cuda.bindings import driver as D

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import cutlass_router  # noqa: E402
import triton_peers as tp  # noqa: E402
from cutlass_router.families.route import PARAMS, select_rows  # noqa: E402
from cutlass_router.routing_ref import select  # noqa: E402
from cutlass_router.yardstick import DecodeLoop  # noqa: E402
from floor import ok  # noqa: E402

TOP_K = 4


class Select:
    def __init__(self, path, name, block=False):
        self.block = block
        mod = ok(D.cuModuleLoad(str(path).encode()))
        self.f = ok(D.cuModuleGetFunction(mod, name.encode()))
        self.buf = ctypes.create_string_buffer(PARAMS.size)
        self.argv = (ctypes.c_void_p * 1)(ctypes.addressof(self.buf))

    def __call__(self, logits, weights, ids):
        M, N = logits.shape
        rows = select_rows("topk_softmax", M, N) if not self.block else 1
        cfg = D.CUlaunchConfig()
        cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = (M + rows - 1) // rows, 1, 1
        cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = (32 * rows if not self.block else 32 * -(-N // 32)), 1, 1
        cfg.sharedMemBytes = 0
        cfg.hStream = D.CUstream(torch.cuda.current_stream().cuda_stream)
        cfg.attrs, cfg.numAttrs = [], 0
        PARAMS.pack_into(self.buf, 0, 0, 0, 0, 0, logits.data_ptr(), 0, weights.data_ptr(), ids.data_ptr(),
                         0, 0, logits.stride(0), 0, TOP_K, M, N, 0, TOP_K, 0, 0, 1, 1, 1.0, 0)
        ok(D.cuLaunchKernelEx(cfg, self.f, ctypes.addressof(self.argv), 0))
        return weights, ids

    def row(self):
        outs = {}

        def call(i, x, w, b):
            logits = cutlass_router.router_gemm(x, w, b)
            if i not in outs:
                outs[i] = (torch.empty(x.shape[0], TOP_K, device="cuda"),
                           torch.empty(x.shape[0], TOP_K, device="cuda", dtype=torch.int32))
            return self(logits, *outs[i])
        return call


def main():
    torch.zeros(1, device="cuda")
    block = sys.argv[1] == "--block"
    d = Path(sys.argv[2] if block else sys.argv[1])
    card = torch.cuda.get_device_name()
    recs = []
    newest = lambda name: max(d.glob(f"{name}-sm_90a-*.cubin"), key=lambda q: q.stat().st_mtime)  # noqa: E731
    cases = (("gpt-oss-20b", 32, "p1"), ("gpt-oss-120b", 128, "p4")) if not block else (("gpt-oss-120b", 128, "p4"),)
    for model, N, sym in cases:
        name = f"crt_route_select_topk_softmax_{sym}"
        if block:
            bname = "crt_route_select_topk_softmax_block"
            old, new = Select(newest(name), name), Select(newest(bname), bname, block=True)
        else:
            old = Select(d / f"{name}.cubin", name)
            new = Select(d / "new_topk_softmax_p1.cubin", name) if sym == "p1" else Select(d / f"{name}.cubin", name)
        for M in (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024):
            for k in (old, new):  # against the reference on the kernel's own logits, ties included
                lg = torch.randn(M, N, device="cuda").to(torch.bfloat16)
                lg[:, ::3] = lg[:, :1]  # ties
                w, i = k(lg, torch.empty(M, TOP_K, device="cuda"), torch.empty(M, TOP_K, device="cuda",
                                                                               dtype=torch.int32))
                rw, ri = select(lg.float(), TOP_K, scoring="topk_softmax")
                assert torch.equal(i.long(), ri) and torch.allclose(w, rw, rtol=1e-6, atol=1e-7), (model, M)
            loop = DecodeLoop(N, 2880, M, with_bias=True)
            rows = {"gemm+select old": old.row(), "gemm+select new": new.row(),
                    "route": lambda i, x, w, b: cutlass_router.route(x, w, b, top_k=TOP_K),
                    "router_gemm": lambda i, x, w, b: cutlass_router.router_gemm(x, w, b),
                    "router_gemm+triton": lambda i, x, w, b: tp.topk_softmax(cutlass_router.router_gemm(x, w, b),
                                                                             TOP_K)}
            res = loop.measure(rows)
            print(f"{model} M={M}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()), flush=True)
            recs += [dict(model=model, experts=N, hidden=2880, M=M, provider=k, us=v, card=card,
                          date=str(datetime.date.today())) for k, v in res.items()]
            del loop
    out = Path(sys.argv[3 if block else 2] if len(sys.argv) > (3 if block else 2) else ROOT / f"notes/l2/select-ab-{datetime.date.today()}.json")
    out.write_text(json.dumps(recs, indent=1))


if __name__ == "__main__":
    main()
