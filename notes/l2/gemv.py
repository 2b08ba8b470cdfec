"""Prototype timing (not shipped): notes/l2/gemv.cu's no-cluster GEMV in the decode loop, beside router_gemm,
tinygemm2 and the floor rows. Checks each kernel against an fp64 reference first.

    nvcc -cubin -arch=sm_90a -O3 -o /tmp/gemv.cubin notes/l2/gemv.cu && python notes/l2/gemv.py
"""
from __future__ import annotations

import ctypes
import datetime
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from cuda.bindings import driver as D

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import cutlass_router  # noqa: E402
from cutlass_router.yardstick import DecodeLoop  # noqa: E402
from floor import anchor_ext, ok  # noqa: E402  (notes/l2/floor.py: the anchor, a CUresult check)


class Gemv:
    def __init__(self, path):
        self.mod = ok(D.cuModuleLoad(str(path).encode()))
        self.fn = {}

    def launch(self, name, x, w, b, out):
        r, mt, v, t = (int(p[1:]) for p in name.split("_")[1:])
        N, K = w.shape
        M = x.shape[0]
        assert M <= mt and K // 8 <= v * t, (name, M, K)
        if name not in self.fn:
            self.fn[name] = ok(D.cuModuleGetFunction(self.mod, name.encode()))
        cfg = D.CUlaunchConfig()
        cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = (N + r - 1) // r, 1, 1
        cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = t, 1, 1
        cfg.sharedMemBytes = 0
        cfg.hStream = D.CUstream(torch.cuda.current_stream().cuda_stream)
        cfg.attrs, cfg.numAttrs = [], 0
        args = ((x.data_ptr(), w.data_ptr(), 0 if b is None else b.data_ptr(), out.data_ptr(), M, N, K),
                (ctypes.c_void_p,) * 4 + (ctypes.c_int,) * 3)
        ok(D.cuLaunchKernelEx(cfg, self.fn[name], args, 0))
        return out

    def row(self, name):
        outs = {}

        def call(i, x, w, b):
            if i not in outs:
                outs[i] = torch.empty(x.shape[0], w.shape[0], device="cuda")
            return self.launch(name, x, w, b, outs[i])
        return call


SHAPES = {"gpt-oss-20b": (32, 2880, True), "gpt-oss-120b": (128, 2880, True), "deepseek-v3": (256, 7168, False)}


def kernels(K, M):
    mt = min(m for m in (1, 2, 4, 8) if m >= M)
    if K == 2880:
        out = [f"g_r1_m{mt}_v3_t128"]
        if mt in (1, 8):
            out += [f"g_r1_m{mt}_v2_t192"]
        if mt == 1:
            out += ["g_r2_m1_v2_t192"]
        return out
    return [f"g_r1_m{mt}_v4_t256", f"g_r2_m{mt}_v4_t256"] if mt in (1, 8) else []


def main():
    torch.zeros(1, device="cuda")
    g = Gemv(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gemv.cubin")
    ext, card = anchor_ext()
    recs = []
    for name, (N, K, bias) in SHAPES.items():
        dt = None if bias else torch.float32
        for M in (1, 2, 4, 8):
            ks = kernels(K, M)
            if not ks:
                continue
            x = torch.randn(M, K, device="cuda").to(torch.bfloat16)
            w = (torch.randn(N, K, device="cuda") * K ** -0.5).to(torch.bfloat16)
            b = torch.randn(N, device="cuda").to(torch.bfloat16) if bias else None
            ref = F.linear(x.double(), w.double(), None if b is None else b.double())
            for k in ks:
                out = torch.full((M, N), float("nan"), device="cuda")
                err = (g.launch(k, x, w, b, out).double() - ref).abs().max().item()
                assert err < 1e-4, (k, err)
            loop = DecodeLoop(N, K, M, with_bias=bias)
            rows = {"empty": lambda i, x, w, b: ext.empty(False, max(1, N // 16)),
                    "router_gemm": lambda i, x, w, b: cutlass_router.router_gemm(x, w, b, out_dtype=dt)}
            if bias:
                rows["tinygemm2"] = lambda i, x, w, b: ext.tg2(x, w, b, False)
            rows.update({k: g.row(k) for k in ks})
            res = loop.measure(rows)
            print(f"{name} M={M} (checked, max err < 1e-4): " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()),
                  flush=True)
            recs += [dict(model=name, experts=N, hidden=K, M=M, provider=k, us=v, card=card,
                          date=str(datetime.date.today())) for k, v in res.items()]
    out = Path(sys.argv[2] if len(sys.argv) > 2 else ROOT / f"notes/l2/gemv-{datetime.date.today()}.json")
    out.write_text(json.dumps(recs, indent=1))


if __name__ == "__main__":
    main()
