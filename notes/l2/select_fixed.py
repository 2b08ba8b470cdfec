"""Experiment: select kernels with one model's choice fixed at compile time (route.cuh's route_select_fixed: N,
groups, top_k; the rounds unrolled or rolled; 8/16-byte loads) and the sigmoid whose values no longer wait on each
other (detail::sigmoid_rn), against the shipped runtime-sized kernels and the Triton stand-ins. The shipped kernel
is the committed cubin (cutlass_router/prebuilt/ of 3530a93, before these kernels), loaded by hand; "tree" is the
runtime-sized kernel from this
tree's template.

1. sigmoid_rn against 1.0f / (1.0f + expf(-v)) on all 2^32 floats (bit for bit, NaN as NaN).
2. Each variant swapped into route() (launch.load answers it for the shipped symbol): weights and ids equal to
   the shipped kernel's, bit for bit, on route's GEMM + select path, with ties, NaN, +inf and logits far past
   -87.3 (the reciprocal's slow path), at M = 13, 300, 1000, 4096.
3. The decode loop (cutlass_router.yardstick): route with each variant beside router_gemm + the Triton stand-in
   and router_gemm alone, at the M where route runs GEMM + select.

    nvcc -cubin -arch=sm_90a -O3 -std=c++17 -DNDEBUG --expt-relaxed-constexpr -I<cutlass>/include \
         -I cutlass_router/templates -o notes/l2/select_fixed.cubin notes/l2/select_fixed.cu
    [SELECT_MODELS=deepseek-v3] [SELECT_M_deepseek_v3=16,4096] python notes/l2/select_fixed.py - [out.json]
"""
from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import torch
from cuda.bindings import driver as D

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import cutlass_router  # noqa: E402
from cutlass_router import dispatch, launch, ops, plan  # noqa: E402
from cutlass_router.models import MODELS  # noqa: E402
from cutlass_router.yardstick import DecodeLoop  # noqa: E402
from floor import choice_rows, ok, report, save, variant_rows  # noqa: E402

CUBIN = Path(__file__).resolve().parent / "select_fixed.cubin"
# model -> (the shipped select kernel route() takes for it, {label: this tree's variant in select_fixed.cubin})
CASES = {
    "deepseek-v3": ("crt_route_select_sigmoid_p8", {"tree": "proto_sigmoid_p8", "fixed": "proto_sigmoid_n256_g8_tg4_k8",
                                                    "fixed rolled": "proto_sigmoid_n256_g8_tg4_k8_rolled"}),
    "gpt-oss-120b": ("crt_route_select_topk_softmax_p4", {"tree": "proto_topk_softmax_p4",
                                                          "fixed": "proto_topk_softmax_n128_k4",
                                                          "fixed rolled": "proto_topk_softmax_n128_k4_rolled"}),
    "gpt-oss-20b": ("crt_route_select_topk_softmax_p1", {"tree": "proto_topk_softmax_p1",
                                                         "fixed": "proto_topk_softmax_n32_k4"}),
}
M_OF = {"deepseek-v3": "16,64,256,1024,4096,8192", "gpt-oss-120b": "1,8,64,256,1024,4096", "gpt-oss-20b": "256"}

_real_load = launch.load
_current = {"v": None, "symbol": None}
_caches: dict = {}  # variant -> its own route plans (a plan holds its kernel)


def _load(symbol):
    v = _current["v"]
    return v if (symbol == _current["symbol"] and v is not None) else _real_load(symbol)


launch.load = _load


def use(variant):
    """Make route() take this select kernel (None: this tree's): its own plan cache, so that a call inside
    graph capture finds the plan its warm-up made."""
    _current["v"] = variant
    plan._ROUTE_PLANS = _caches.setdefault(id(variant), {})


def variants(lib, shipped_symbol: str, tree: dict) -> dict:
    """{label: LoadedKernel}: the shipped cubin (the committed template's) and this tree's variants."""
    _current["symbol"] = shipped_symbol
    orig = _real_load(shipped_symbol)  # this tree's template: compiled now where it differs from the shipped one
    shipped = ok(D.cuLibraryLoadData((ROOT / f"cutlass_router/prebuilt/{shipped_symbol}.cubin").read_bytes(),
                                     None, None, 0, None, None, 0))
    out = {"shipped": dataclasses.replace(orig, kernel=ok(D.cuLibraryGetKernel(shipped, shipped_symbol.encode())),
                                          library=shipped, devices=set(), configs={})}
    for label, sym in tree.items():
        k = ok(D.cuLibraryGetKernel(lib, sym.encode()))
        out[label] = dataclasses.replace(orig, kernel=k, library=lib, devices=set(), configs={})
    return out


def check_sigmoid(lib) -> None:
    f = ok(D.cuLibraryGetKernel(lib, b"sigmoid_check"))
    bad = torch.zeros(1, dtype=torch.int64, device="cuda")
    first = torch.full((1,), -1, dtype=torch.int32, device="cuda")
    import ctypes
    stream = D.CUstream(torch.cuda.current_stream().cuda_stream)
    per = 256 * 8
    chunk = 1 << 30  # patterns per launch
    for base in range(0, 1 << 32, chunk):
        args = (ctypes.c_uint64(base), ctypes.c_void_p(bad.data_ptr()), ctypes.c_void_p(first.data_ptr()))
        argv = (ctypes.c_void_p * 3)(*[ctypes.addressof(a) for a in args])
        ok(D.cuLaunchKernel(D.CUfunction(int(f)), chunk // per, 1, 1, 256, 1, 1, 0, stream, ctypes.addressof(argv), 0))
    torch.cuda.synchronize()
    print(f"sigmoid_rn vs 1/(1+expf(-v)), all 2^32 inputs: {bad.item()} mismatches"
          + (f", first pattern 0x{first.item() & 0xFFFFFFFF:08x}" if bad.item() else ""), flush=True)
    assert bad.item() == 0


def route(cfg, x, w, b, cb):
    kw = dict(cfg.route, correction_bias=cb) if cfg.route["scoring"] == "sigmoid" else cfg.route
    return cutlass_router.route(x, w, b, top_k=cfg.top_k, **kw)


def check_outputs(cfg, vs: dict, cb) -> None:
    """Every variant's weights and ids equal the shipped kernel's, bit for bit, on route()'s GEMM + select path
    (forced: route's own choice at M <= 64 outside capture is its fused kernel)."""
    N, K = cfg.shape
    g = torch.Generator(device="cuda").manual_seed(3)
    for M in (13, 300, 1000, 4096):
        x = torch.randn(M, K, generator=g, device="cuda").to(torch.bfloat16)
        w = (torch.randn(N, K, generator=g, device="cuda") * K ** -0.5).to(torch.bfloat16)
        b = (torch.randn(N, generator=g, device="cuda") * 0.5).to(torch.bfloat16) if cfg.bias else None
        x[: max(1, M // 8)] *= 200.0  # logits far below -87.3 and above: the slow path, saturated scores
        x[1] = x[0]  # two equal rows
        w[5] = w[4]  # two equal experts: ties in every row
        x[2, :7] = float("nan")
        x[3, 0] = float("inf")
        outs = {}
        r = cfg.route
        a = ops._args(cfg.top_k, r["scoring"], r.get("renormalize", False), r.get("n_group", 1), r.get("topk_group", 1),
                      r.get("routed_scaling_factor", 1.0), r.get("logit_precision", "bf16"), None, torch.float32,
                      torch.int32)
        sel_cb = cb if r["scoring"] == "sigmoid" else None
        for label, v in vs.items():
            use(v)
            p = plan.route(x, w, b, sel_cb, a, False, choice=dispatch.GEMM_THEN_SELECT)  # uncached: takes v
            wt, ids, _ = plan.run_route(p, x, w, b, sel_cb, None, None)
            torch.cuda.synchronize()
            outs[label] = (wt.clone(), ids.clone())
        ref = outs["shipped"]
        ids_ok = bool(((ref[1] >= 0) & (ref[1] < N)).all())
        for label, (wt, ids) in outs.items():
            same = torch.equal(ids, ref[1]) and torch.equal(wt.view(torch.int32), ref[0].view(torch.int32))
            print(f"  M={M} {label}: {'equal' if same else 'DIFFERENT'} to shipped; ids in range {ids_ok}", flush=True)
            assert same and ids_ok, (M, label)
    use(None)


def main():
    torch.zeros(1, device="cuda")
    ok(D.cuInit(0))
    lib = ok(D.cuLibraryLoadData(CUBIN.read_bytes(), None, None, 0, None, None, 0))
    check_sigmoid(lib)
    card = torch.cuda.get_device_name()
    recs = []
    for model in os.environ.get("SELECT_MODELS", ",".join(CASES)).split(","):
        cfg = MODELS[model]
        N, K = cfg.shape
        vs = variants(lib, *CASES[model])
        cb = torch.randn(N, device="cuda") * 0.1
        print(model, flush=True)
        check_outputs(cfg, vs, cb)
        for M in [int(m) for m in os.environ.get("SELECT_M_" + model.replace("-", "_"), M_OF[model]).split(",")]:
            loop = DecodeLoop(N, K, M, with_bias=cfg.bias)
            rows = choice_rows(cfg.top_k, cfg.route, cb, cfg.fp32_logits)
            rows.update(variant_rows(use, {f"route ({label})": v for label, v in vs.items()},
                                     lambda i, x, w, b: route(cfg, x, w, b, cb)))
            res = loop.measure(rows)
            use(None)
            report(recs, model, N, K, M, res, card)
            del loop
    save(recs, "select-fixed")


if __name__ == "__main__":
    main()
