"""Experiment (not shipped): where a router kernel's time goes in the decode loop (notes/l2/floor.cu's kernels).

Rows, one DecodeLoop per (shape, M), interleaved with the base loop: an empty kernel without and with a cluster;
`touch` (each CTA reads its share of W once, 16-byte loads, and as much of x; one block sum, one store) over 16,
64, 128 CTAs, without a cluster and with a cluster exchange (DSMEM writes to rank 0, cluster.sync); the same FFMA
work as straight-line code (800 / 1600 instructions) and as a rolled loop (cold code); router_gemm, router_gemm
called twice per layer (the second with warm code and W), router_gemm on one W for every layer (warm W).

    nvcc -cubin -arch=sm_90a -O3 -o /tmp/floor.cubin notes/l2/floor.cu && python notes/l2/floor.py
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
import cutlass_router  # noqa: E402
from cutlass_router.yardstick import DecodeLoop  # noqa: E402


def peer_rows(ext, N: int, top_k: int) -> dict:
    """The rows the prototypes time beside their kernels, in the same loop: an empty kernel, tinygemm2 (ext, the
    anchor's extension), router_gemm, route, router_gemm + the Triton top-k stand-in."""
    gemm = choice_rows(top_k, {})
    return {"empty": lambda i, x, w, b: ext.empty(False, max(1, N // 16)),
            "tinygemm2": lambda i, x, w, b: ext.tg2(x, w, b, False),
            "router_gemm": gemm["router_gemm"],
            "route": lambda i, x, w, b: cutlass_router.route(x, w, b, top_k=top_k),
            "router_gemm+triton": gemm["router_gemm+triton"]}


def choice_rows(top_k: int, kw: dict, cb=None, fp32: bool = False) -> dict:
    """router_gemm (fp32 logits or bf16) and router_gemm + the Triton stand-in (benchmarks/triton_peers.py) of the
    choice route(top_k=top_k, **kw) makes (cb: the sigmoid router's correction bias): the peer rows the select
    probes time beside route."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import triton_peers as tp

    scoring = kw.get("scoring", "topk_softmax")
    if scoring == "sigmoid":
        def triton(lg):
            return tp.sigmoid_grouped_topk(lg, top_k, kw.get("n_group", 1), kw.get("topk_group", 1), cb,
                                           kw.get("routed_scaling_factor", 1.0), kw.get("renormalize", False))
    elif scoring == "softmax_topk":
        def triton(lg):
            return tp.softmax_topk(lg, top_k, kw.get("renormalize", False))
    else:
        def triton(lg):
            return tp.topk_softmax(lg, top_k)
    dtype = torch.float32 if fp32 else None

    def gemm(i, x, w, b):
        return cutlass_router.router_gemm(x, w, b, out_dtype=dtype)
    return {"router_gemm": gemm, "router_gemm+triton": lambda i, x, w, b: triton(gemm(i, x, w, b))}


def variant_rows(use, variants: dict, call) -> dict:
    """{label: row} for {label: variant}: a row runs use(variant) (the probe's patch, with a plan cache of its own so
    that a call inside graph capture finds the plan its warm-up made), then call(i, x, w, b)."""
    return {label: (lambda v: lambda i, x, w, b: (use(v), call(i, x, w, b))[1])(v) for label, v in variants.items()}


# Model families the Hugging Face patch routes beyond models.py (hf.py), as route() arguments: name -> (N, K, top_k,
# route kwargs, fp32 logits); the sigmoid router's correction bias is drawn per run.
HF_SHAPES = {
    "kimi-k2": (384, 7168, 8, dict(scoring="sigmoid", renormalize=True, routed_scaling_factor=2.827,
                                   logit_precision="fp32"), True),
    "qwen3-moe-235b": (128, 4096, 8, dict(scoring="softmax_topk", renormalize=True), False),
    "qwen3-moe-30b": (128, 2048, 8, dict(scoring="softmax_topk", renormalize=True), False),
    "mixtral": (8, 4096, 2, dict(scoring="softmax_topk", renormalize=True), False),
}


def report(recs: list, model: str, N: int, K: int, M: int, res: dict, card: str, label: str = "") -> None:
    """Print one loop's results and append them to recs as the prototypes' JSON records."""
    print(f"{model} M={M}{label}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()), flush=True)
    recs += [dict(model=model, experts=N, hidden=K, M=M, provider=k, us=v, card=card,
                  date=str(datetime.date.today())) for k, v in res.items()]


def save(recs: list, name: str) -> None:
    """Write the records to argv[2], or to notes/l2/<name>-<date>.json."""
    out = Path(sys.argv[2] if len(sys.argv) > 2 else ROOT / f"notes/l2/{name}-{datetime.date.today()}.json")
    out.write_text(json.dumps(recs, indent=1))


def anchor_ext():
    """(the tinygemm2 extension from .anchor/, measuring equipment; the card's name) for a prototype's loop."""
    sys.path.insert(0, str(ROOT / ".anchor"))
    import tg2

    return tg2.load(), torch.cuda.get_device_name()


def ok(v):
    err, *rest = v if isinstance(v, tuple) else (v,)
    if int(err) != 0:
        raise RuntimeError(str(err))
    return rest[0] if rest else None


class Micro:
    def __init__(self, path):
        self.mod = ok(D.cuModuleLoad(str(path).encode()))
        self.fn = {}

    def f(self, name):
        if name not in self.fn:
            f = ok(D.cuModuleGetFunction(self.mod, name.encode()))
            ok(D.cuFuncSetAttribute(f, D.CUfunction_attribute.CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1))
            self.fn[name] = f
        return self.fn[name]

    def row(self, name, ctas, cluster=1):
        outs = {}

        def call(i, x, w, b):
            f = self.f(name)
            out = outs.setdefault(i, torch.empty(max(ctas, 16), device="cuda"))
            per = w.numel() // ctas
            cfg = D.CUlaunchConfig()
            cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = ctas, 1, 1
            cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = 128, 1, 1
            cfg.sharedMemBytes = 0
            cfg.hStream = D.CUstream(torch.cuda.current_stream().cuda_stream)
            attrs = []
            if cluster > 1:
                a = D.CUlaunchAttribute()
                a.id = D.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
                a.value.clusterDim.x, a.value.clusterDim.y, a.value.clusterDim.z = cluster, 1, 1
                attrs.append(a)
            cfg.attrs, cfg.numAttrs = attrs, len(attrs)
            args = ((w.data_ptr(), x.data_ptr(), out.data_ptr(), per, w.shape[1]),
                    (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int))
            ok(D.cuLaunchKernelEx(cfg, f, args, 0))
        return call


SHAPES = {"gpt-oss-20b": (32, 2880, True), "gpt-oss-120b": (128, 2880, True), "deepseek-v3": (256, 7168, False)}


def main():
    torch.zeros(1, device="cuda")
    m = Micro(sys.argv[1] if len(sys.argv) > 1 else "/tmp/floor.cubin")
    card = torch.cuda.get_device_name()
    recs = []
    for name, (N, K, bias) in SHAPES.items():
        dt = None if bias else torch.float32
        for M in (1, 8):
            loop = DecodeLoop(N, K, M, with_bias=bias)
            w0, b0 = loop.w[0], loop.b[0]
            rows = {"empty x16": m.row("k_empty", 16), "empty x16 c8": m.row("k_empty", 16, 8),
                    "empty x32 c16": m.row("k_empty", 32, 16), "empty x128 c8": m.row("k_empty", 128, 8)}
            for ctas in (16, 64, 128):
                rows[f"touch x{ctas}"] = m.row("k_touch", ctas)
                rows[f"touch x{ctas} c8"] = m.row("k_touch_c8", ctas, 8)
            rows["touch x32 c16"] = m.row("k_touch_c16", 32, 16)
            rows["touch x128 c16"] = m.row("k_touch_c16", 128, 16)
            for r in (100, 200):
                rows[f"straight {8 * r}"] = m.row(f"k_straight{r}", 16)
                rows[f"rolled {8 * r}"] = m.row(f"k_rolled{r}", 16)
            rows["router_gemm"] = lambda i, x, w, b: cutlass_router.router_gemm(x, w, b, out_dtype=dt)
            rows["router_gemm x2"] = lambda i, x, w, b: (cutlass_router.router_gemm(x, w, b, out_dtype=dt),
                                                         cutlass_router.router_gemm(x, w, b, out_dtype=dt))
            rows["router_gemm one W"] = lambda i, x, w, b: cutlass_router.router_gemm(x, w0, b0, out_dtype=dt)
            res = loop.measure(rows)
            print(f"{name} M={M} base {loop.base_us():.2f}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()),
                  flush=True)
            recs += [dict(model=name, experts=N, hidden=K, M=M, provider=k, us=v, card=card,
                          date=str(datetime.date.today())) for k, v in res.items()]
            del loop
    out = Path(sys.argv[2] if len(sys.argv) > 2 else ROOT / f"notes/l2/floor-{datetime.date.today()}.json")
    out.write_text(json.dumps(recs, indent=1))


if __name__ == "__main__":
    main()
