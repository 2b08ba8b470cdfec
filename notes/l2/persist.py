"""Experiment (not shipped): what a router costs in the decode loop when its weights stay in L2.

In the decode-layer yardstick W is cold: each layer's out-projection (24 MB) evicts it, so every router kernel
starts with an HBM round trip. Two questions, one process, one card:
1. The floor: what does a kernel that only reads W once from HBM (Triton, 64 or 128 programs, one coalesced load
   each, no reduction across CTAs) cost in the loop, beside an empty kernel, router_gemm, route and tinygemm2?
2. L2 persistence: router_gemm / route launched with an access-policy window over W (hitProp = persisting,
   missProp = streaming) after cuCtxSetLimit(PERSISTING_L2_CACHE_SIZE): W's lines survive the out-projections,
   so later replays read W from L2. Measured in a second loop with its own weights (persisting lines outlive
   the graphs that made them: a normal row after a persisting one would read a warm W).

    python notes/l2/persist.py [--out notes/l2/persist-<date>.json]
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import struct
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import cutlass_router  # noqa: E402
import cutlass_router.models  # noqa: E402
from cutlass_router import launch as L  # noqa: E402
from cutlass_router.yardstick import DecodeLoop  # noqa: E402
import triton_peers as tp  # noqa: E402
from cuda.bindings import driver  # noqa: E402

ATTR_ACCESS_POLICY_WINDOW = 1  # CUlaunchAttributeID
PERSISTING, STREAMING = 2, 1    # CUaccessProperty
WINDOW = [None]                 # (pointer, bytes) for the launches made while it is set
_orig_launch = L.launch


def launch_with_window(k, device, stream, pdl, grid, cluster=None, block=None):
    if WINDOW[0] is None:
        return _orig_launch(k, device, stream, pdl, grid, cluster, block)
    if device not in k.devices:
        L._prepare_device(k, device)
    attrs = (L._Attr * 3)()
    n = 0
    given = cluster is not None
    cl = cluster or k.cluster
    if given or cl != (1, 1, 1):
        attrs[n].id = L.ATTR_CLUSTER_DIMENSION
        attrs[n].value[0], attrs[n].value[1], attrs[n].value[2] = cl
        n += 1
    if pdl:
        attrs[n].id = L.ATTR_PROGRAMMATIC_STREAM_SERIALIZATION
        attrs[n].value[0] = 1
        n += 1
    ptr, nbytes = WINDOW[0]
    attrs[n].id = ATTR_ACCESS_POLICY_WINDOW
    # CUaccessPolicyWindow: void *base_ptr; size_t num_bytes; float hitRatio; CUaccessProperty hitProp, missProp
    words = struct.unpack("<7I", struct.pack("<QQfii", ptr, nbytes, 1.0, PERSISTING, STREAMING))
    for i, v in enumerate(words):
        attrs[n].value[i] = v
    n += 1
    cfg = L._Config(*grid, block or k.block_threads, 1, 1, k.smem_bytes, stream, attrs, n)
    err = L._libcuda_launch()(ctypes.addressof(cfg), L._handle(k.kernel), L.params_buffer()[1], None)
    if err:
        raise RuntimeError(f"launch with window: CUresult {err}")


L.launch = launch_with_window


def windowed(fn):
    def call(i, x, w, b):
        WINDOW[0] = (w.data_ptr(), w.numel() * w.element_size())
        try:
            return fn(i, x, w, b)
        finally:
            WINDOW[0] = None
    return call


@triton.jit
def _touch(w, x, out, per, K, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    i = tl.arange(0, BLOCK)
    m = i < per
    o = pid * per + i
    a = tl.load(w + o, mask=m, other=0.0).to(tl.float32)
    b = tl.load(x + (o % K), mask=m, other=0.0).to(tl.float32)
    tl.store(out + pid, tl.sum(a * b))


def touch(programs: int, outs: dict):
    def call(i, x, w, b):
        per = triton.cdiv(w.numel(), programs)
        out = outs.setdefault((programs, i, w.shape), torch.empty(programs, device=w.device))
        _touch[(programs,)](w, x, out, per, w.shape[1], BLOCK=triton.next_power_of_2(per), num_warps=8)
    return call


def check(v, what):
    err = v[0] if isinstance(v, tuple) else v
    if int(err) != 0:
        raise RuntimeError(f"{what}: {err}")
    return v[1] if isinstance(v, tuple) and len(v) > 1 else None


SHAPES = {"gpt-oss-20b": (32, 2880, 4, True, [1, 8, 64]), "gpt-oss-120b": (128, 2880, 4, True, [1, 8, 64]),
          "deepseek-v3": (256, 7168, 8, False, [1, 16])}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "notes/l2" / f"persist-{datetime.date.today()}.json"))
    ap.add_argument("--models", default=",".join(SHAPES))
    args = ap.parse_args()
    dev = torch.cuda.current_device()
    torch.zeros(1, device="cuda")
    A = driver.CUdevice_attribute
    l2 = check(driver.cuDeviceGetAttribute(A.CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, dev), "l2")
    pmax = check(driver.cuDeviceGetAttribute(A.CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE, dev), "pmax")
    wmax = check(driver.cuDeviceGetAttribute(A.CU_DEVICE_ATTRIBUTE_MAX_ACCESS_POLICY_WINDOW_SIZE, dev), "wmax")
    card = torch.cuda.get_device_name()
    print(f"{card}: L2 {l2 / 2**20:.1f} MiB, max persisting {pmax / 2**20:.1f} MiB, max window {wmax / 2**20:.1f} MiB",
          flush=True)
    sys.path.insert(0, str(ROOT / ".anchor"))
    import tg2
    ext = tg2.load()
    recs = []
    outs = {}
    for name in args.models.split(","):
        N, K, top_k, bias, Ms = SHAPES[name]
        kw = dict(cutlass_router.models.MODELS[name].route, top_k=top_k)
        if not bias:
            kw["correction_bias"] = torch.randn(N, device="cuda")
        out_dtype = None if bias else torch.float32
        for M in Ms:
            rows = {"empty": lambda i, x, w, b: ext.empty(False, max(1, N // 16)),
                    "touch64": touch(64, outs), "touch128": touch(128, outs),
                    "router_gemm": lambda i, x, w, b: cutlass_router.router_gemm(x, w, b, out_dtype=out_dtype),
                    "route": lambda i, x, w, b: cutlass_router.route(x, w, b, **kw),
                    "router_gemm+triton": (lambda i, x, w, b: tp.topk_softmax(cutlass_router.router_gemm(x, w, b),
                                                                              top_k)) if bias else None,
                    "tinygemm2": (lambda i, x, w, b: ext.tg2(x, w, b, False)) if bias else None}
            rows = {k: v for k, v in rows.items() if v is not None}
            loop = DecodeLoop(N, K, M, with_bias=bias, seed=0)
            res = loop.measure(rows)
            base = loop.base_us()
            # the persisting rows: their own loop, weights of their own
            need = 8 * N * K * 2
            check(driver.cuCtxSetLimit(driver.CUlimit.CU_LIMIT_PERSISTING_L2_CACHE_SIZE, min(pmax, 2 * need)), "limit")
            ploop = DecodeLoop(N, K, M, with_bias=bias, seed=1)
            x = ploop.xn[0].normal_()
            WINDOW[0] = (ploop.w[0].data_ptr(), N * K * 2)
            got = cutlass_router.router_gemm(x, ploop.w[0], ploop.b[0], out_dtype=torch.float32)
            WINDOW[0] = None
            ref = F.linear(x.double(), ploop.w[0].double(), None if ploop.b[0] is None else ploop.b[0].double())
            err = (got.double() - ref).abs().max().item()
            pres = ploop.measure({"router_gemm persist": windowed(rows["router_gemm"]),
                                  "route persist": windowed(rows["route"])})
            check(driver.cuCtxResetPersistingL2Cache(), "reset")
            check(driver.cuCtxSetLimit(driver.CUlimit.CU_LIMIT_PERSISTING_L2_CACHE_SIZE, 0), "limit0")
            res.update(pres)
            line = " ".join(f"{k} {v:.2f}" for k, v in res.items())
            print(f"{name} M={M} base {base:.2f} | {line} | windowed router_gemm max|err| {err:.1e}", flush=True)
            for k, v in res.items():
                recs.append(dict(model=name, experts=N, hidden=K, M=M, provider=k, us=v, card=card,
                                 date=str(datetime.date.today())))
            del loop, ploop
            torch.cuda.empty_cache()
    Path(args.out).write_text(json.dumps(dict(l2=l2, persisting_max=pmax, window_max=wmax, records=recs), indent=1))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
