"""Prototype timing (not shipped): notes/l2/gemvroute.cu's one-cluster GEMV route (bulk copies, logits to the
leader by st.async, the leader choosing) and its logits-only GEMV, in the decode loop beside route, router_gemm,
router_gemm + the Triton top-k stand-in, tinygemm2 and an empty kernel. Each kernel is checked against an fp64
reference first (ids equal on tie-free inputs, weights within 1e-5; logits within 1e-4).

    nvcc -cubin -arch=sm_90a -O3 -std=c++17 --expt-relaxed-constexpr -I<cutlass>/include \
         -I cutlass_router/templates -o /tmp/gemvroute.cubin notes/l2/gemvroute.cu && python notes/l2/gemvroute.py
"""
from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from cuda.bindings import driver as D

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from cutlass_router.families.route import PARAMS  # noqa: E402  (RouteParams)
from cutlass_router.yardstick import DecodeLoop  # noqa: E402
from floor import anchor_ext, ok, peer_rows, report, save  # noqa: E402

TOP_K = 4


class Proto:
    def __init__(self, path):
        self.mod = ok(D.cuModuleLoad(str(path).encode()))
        self.fn = {}
        self.known = set()
        self.buf = ctypes.create_string_buffer(PARAMS.size)
        self.argv = (ctypes.c_void_p * 1)(ctypes.addressof(self.buf))

    @staticmethod
    def parse(name):  # rg_c{CS}_r{R}_m{T}_t{TH}_s{S}, or rl_c{CS}_r{R}_g{G}_m{T}_v{V}_t{TH}_s{S} (LDG loads)
        f = {p[0]: int(p[1:]) for p in name.split("_")[1:]}
        return f["c"], f["r"], f["m"], f["t"], f["s"]

    def f(self, name, smem):
        if name not in self.fn:
            f = ok(D.cuModuleGetFunction(self.mod, name.encode()))
            A = D.CUfunction_attribute
            ok(D.cuFuncSetAttribute(f, A.CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED, 1))
            if name.startswith("rg_"):
                ok(D.cuFuncSetAttribute(f, A.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 200 * 1024))
            self.fn[name] = f
        return self.fn[name]

    def launch(self, name, x, w, b, logits=None, weights=None, ids=None):
        cs, r, t, th, s = self.parse(name)
        M, K = x.shape
        N = w.shape[0]
        assert N <= cs * r or not s, (name, N)
        smem = (r + t) * K * 2 if name.startswith("rg_") else 0
        f = self.f(name, smem)
        cfg = D.CUlaunchConfig()
        cfg.gridDimX = cs if s else (N + r - 1) // r
        cfg.gridDimY, cfg.gridDimZ = (M + t - 1) // t, 1
        cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = th, 1, 1
        cfg.sharedMemBytes = smem
        cfg.hStream = D.CUstream(torch.cuda.current_stream().cuda_stream)
        attrs = []
        if s and cs > 1:
            a = D.CUlaunchAttribute()
            a.id = D.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
            a.value.clusterDim.x, a.value.clusterDim.y, a.value.clusterDim.z = cs, 1, 1
            attrs.append(a)
        cfg.attrs, cfg.numAttrs = attrs, len(attrs)
        ptr = lambda v: 0 if v is None else v.data_ptr()  # noqa: E731
        PARAMS.pack_into(self.buf, 0, ptr(x), ptr(w), ptr(b), 0, 0, ptr(logits), ptr(weights), ptr(ids),
                         x.stride(0), w.stride(0), 0, N, TOP_K, M, N, K, TOP_K, 0, 0, 1, 1, 1.0, 0)
        ok(D.cuLaunchKernelEx(cfg, f, ctypes.addressof(self.argv), 0))

    def row(self, name):
        outs = {}
        s = self.parse(name)[4]

        def call(i, x, w, b):
            M, N = x.shape[0], w.shape[0]
            if i not in outs:
                outs[i] = (torch.empty(M, N, device="cuda"),) if s in (0, 2) else \
                    (None, torch.empty(M, TOP_K, device="cuda"), torch.empty(M, TOP_K, device="cuda", dtype=torch.int32))
            self.launch(name, x, w, b, *outs[i])
        return call


def check(g, name, N, K, M):
    x = torch.randn(M, K, device="cuda").to(torch.bfloat16)
    w = (torch.randn(N, K, device="cuda") * K ** -0.5).to(torch.bfloat16)
    b = torch.randn(N, device="cuda").to(torch.bfloat16)
    ref = F.linear(x.double(), w.double(), b.double())
    if g.parse(name)[4] in (0, 2):
        out = torch.full((M, N), float("nan"), device="cuda")
        g.launch(name, x, w, b, out)
        err = (out.double() - ref).abs().max().item()
        assert err < 1e-4, (name, M, err)
        return
    wt = torch.full((M, TOP_K), float("nan"), device="cuda")
    ids = torch.full((M, TOP_K), -1, device="cuda", dtype=torch.int32)
    g.launch(name, x, w, b, None, wt, ids)
    rv, ri = ref.topk(TOP_K, dim=1)
    assert torch.equal(ids.long(), ri), (name, M, ids, ri)
    err = (wt.double() - torch.softmax(rv, 1)).abs().max().item()
    assert err < 1e-5, (name, M, err)
    if name.endswith("_s3") and name[:-1] + "1" in g.known:  # the rank choice against select_row's rounds
        w1 = torch.full_like(wt, float("nan"))
        i1 = torch.full_like(ids, -1)
        g.launch(name[:-1] + "1", x, w, b, None, w1, i1)
        assert torch.equal(w1, wt) and torch.equal(i1, ids), (name, M)


SHAPES = {"gpt-oss-20b": 32, "gpt-oss-120b": 128}
# Run 2026-11-29 (thirteenth session): the LDG variants (rl_*) beside the bulk-copy one that came closest (rg_*_s3).
SELECT = {32: ["rg_c16_r2_m1_t256_s3", "rl_c16_r2_g1_m1_v1_t384_s3", "rl_c16_r2_g2_m1_v1_t768_s3",
               "rl_c16_r2_g1_m2_v1_t384_s3", "rl_c16_r2_g2_m2_v1_t768_s3", "rl_c16_r2_g1_m1_v1_t384_s1",
               "rl_c16_r2_g2_m1_v1_t768_s1"],
          128: ["rl_c16_r8_g2_m1_v1_t768_s1", "rl_c16_r8_g4_m1_v2_t1024_s1", "rl_c16_r8_g2_m2_v1_t768_s1"]}
LOGITS = {32: ["rl_c1_r1_g1_m1_v1_t384_s0", "rl_c1_r2_g1_m1_v1_t384_s0", "rl_c1_r2_g2_m1_v1_t768_s0",
               "rl_c1_r2_g1_m1_v2_t192_s0"],
          128: ["rl_c1_r8_g2_m1_v1_t768_s0", "rl_c1_r8_g4_m1_v2_t1024_s0"]}


def pick(names, M, g):
    """Per (cs, r, s) family: the smallest token tile >= M, else the largest (tiled over M)."""
    fams = {}
    for n in names:
        cs, r, t, th, s = g.parse(n)
        fams.setdefault((cs, r, s), []).append((t, n))  # s: the variant
    out = []
    for ts in fams.values():
        ts.sort()
        fit = [n for t, n in ts if t >= M]
        out.append(fit[0] if fit else ts[-1][1])
    return out


def main():
    torch.zeros(1, device="cuda")
    g = Proto(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gemvroute.cubin")
    g.known = set(sum(SELECT.values(), []) + sum(LOGITS.values(), []))
    ext, card = anchor_ext()
    recs = []
    for model, N in SHAPES.items():
        K = 2880
        for M in ((1, 2, 4, 8, 16) if N == 32 else (1, 2, 4, 8)):
            ks = [k for k in SELECT[N] if g.parse(k)[2] <= M or g.parse(k)[2] == 1] + LOGITS[N]
            for k in ks:
                check(g, k, N, K, M)
            loop = DecodeLoop(N, K, M, with_bias=True)
            rows = peer_rows(ext, N, TOP_K)
            rows.update({k: g.row(k) for k in ks})
            res = loop.measure(rows)
            report(recs, model, N, K, M, res, card, " (checked)")
            del loop
    save(recs, "gemvroute")


if __name__ == "__main__":
    main()
