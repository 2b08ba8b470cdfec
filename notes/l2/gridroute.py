"""Prototype timing (not shipped): notes/l2/gridroute.cu's one-launch route over the whole GPU (a GEMV's CTAs
store their logits to an L2 scratch, the CTA whose arrival completes the cooperative launch's grid barrier
chooses), in the decode loop beside route (the library's default: GEMM + select chained by PDL on gpt-oss-120b),
router_gemm, router_gemm + the Triton top-k stand-in, tinygemm2 and an empty kernel. Each variant is checked first
against an fp64 reference (ids equal, or chosen logits equal to the reference's within 1e-5 where two experts are closer
than that; weights within 1e-5) over 300 launches with fresh inputs,
with and without PDL (the barrier word must come back to its start after every launch).

    nvcc -cubin -arch=sm_90a -O3 -std=c++17 --expt-relaxed-constexpr -I<cutlass>/include \
         -I cutlass_router/templates -o /tmp/gridroute.cubin notes/l2/gridroute.cu && python notes/l2/gridroute.py
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
sys.path.insert(0, str(ROOT / "notes" / "l2"))
import cutlass_router  # noqa: E402
from cutlass_router.families.route import PARAMS  # noqa: E402  (RouteParams)
from cutlass_router.yardstick import DecodeLoop  # noqa: E402
from floor import anchor_ext, ok, peer_rows, report, save  # noqa: E402

TOP_K = 4


class Grid:
    def __init__(self, path):
        self.mod = ok(D.cuModuleLoad(str(path).encode()))
        self.fn = {}
        self.buf = ctypes.create_string_buffer(PARAMS.size)
        self.bar = ctypes.c_uint64(0)
        self.argv = (ctypes.c_void_p * 2)(ctypes.addressof(self.buf), ctypes.addressof(self.bar))
        self.words = {}  # name -> a zeroed counter word for plain launches (measurement only)

    @staticmethod
    def parse(name):  # gr_r{R}_m{T}_v{V}_t{TH}_n{MAXN}_s{SEL}
        f = {p[0]: int(p[1:]) for p in name.split("_")[1:]}
        return f["r"], f["m"], f["t"], f["n"]

    def launch(self, name, x, w, b, scratch, weights, ids, pdl, coop=True):
        r, t, th, maxn = self.parse(name)
        M, K = x.shape
        N = w.shape[0]
        if name not in self.fn:
            self.fn[name] = ok(D.cuModuleGetFunction(self.mod, name.encode()))
        cfg = D.CUlaunchConfig()
        cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = (N + r - 1) // r, (M + t - 1) // t, 1
        cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = th, 1, 1
        cfg.sharedMemBytes = 0
        cfg.hStream = D.CUstream(torch.cuda.current_stream().cuda_stream)
        attrs = []
        if coop:
            a = D.CUlaunchAttribute()
            a.id = D.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_COOPERATIVE
            a.value.cooperative = 1
            attrs.append(a)
            self.bar.value = 0
        else:
            if name not in self.words:
                self.words[name] = torch.zeros(2, device="cuda", dtype=torch.int32)
            self.bar.value = self.words[name].data_ptr()
        if pdl:
            p = D.CUlaunchAttribute()
            p.id = D.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
            p.value.programmaticStreamSerializationAllowed = 1
            attrs.append(p)
        cfg.attrs, cfg.numAttrs = attrs, len(attrs)
        PARAMS.pack_into(self.buf, 0, x.data_ptr(), w.data_ptr(), 0 if b is None else b.data_ptr(), 0,
                         scratch.data_ptr(), 0, weights.data_ptr(), ids.data_ptr(), x.stride(0), w.stride(0),
                         scratch.stride(0), N, TOP_K, M, N, K, TOP_K, 0, 0, 1, 1, 1.0, 0)
        ok(D.cuLaunchKernelEx(cfg, self.fn[name], ctypes.addressof(self.argv), 0))

    def row(self, name, pdl, coop=True):
        def call(i, x, w, b):  # allocates as a library call would (inside capture: the graph's pool)
            M, N = x.shape[0], w.shape[0]
            scratch = x.new_empty((M, N), dtype=torch.float32)
            wt = x.new_empty((M, TOP_K), dtype=torch.float32)
            ids = x.new_empty((M, TOP_K), dtype=torch.int32)
            self.launch(name, x, w, b, scratch, wt, ids, pdl, coop)
        return call


def check(g, name, N, K, M, pdl, coop, rounds=300):
    for _ in range(rounds):
        x = torch.randn(M, K, device="cuda").to(torch.bfloat16)
        w = (torch.randn(N, K, device="cuda") * K ** -0.5).to(torch.bfloat16)
        b = torch.randn(N, device="cuda").to(torch.bfloat16)
        ref = F.linear(x.double(), w.double(), b.double())
        scratch = torch.full((M, N), float("nan"), device="cuda")
        wt = torch.full((M, TOP_K), float("nan"), device="cuda")
        ids = torch.full((M, TOP_K), -1, device="cuda", dtype=torch.int32)
        g.launch(name, x, w, b, scratch, wt, ids, pdl, coop)
        rv, ri = ref.topk(TOP_K, dim=1)
        # ids equal, except where two experts' fp64 logits are closer than fp32 accumulation tells apart (run 6
        # met one such pair: M = 2, the fourth choice): then the chosen expert's logit must equal the reference's
        # choice's, and the ids stay distinct and in range.
        assert ids.min().item() >= 0 and ids.max().item() < N, (name, M, ids)
        assert all(len(set(r)) == TOP_K for r in ids.tolist()), (name, M, ids)
        chosen = ref.gather(1, ids.long())
        assert (chosen - rv).abs().max().item() < 1e-5, (name, M, ids, ri)
        ties = int((ids.long() != ri).any(1).sum())
        if ties:
            print(f"{name} M={M}: {ties} row(s) chose another expert within 1e-5 of the reference's logit")
        err = (wt.double() - torch.softmax(chosen, 1)).abs().max().item()
        assert err < 1e-5, (name, M, err)


SHAPES = {"gpt-oss-120b": 128, "gpt-oss-20b": 32}
# Run 1 (2026-11-29, cooperative launches only) timed these too: r1_m1 on 120b, r1_m2 on 20b, no better.
VARIANTS = {128: ["gr_r2_m1_v1_t384_n128_s16", "gr_r2_m2_v1_t384_n128_s16"],
            32: ["gr_r1_m1_v1_t384_n32_s16", "gr_r2_m1_v1_t384_n32_s16"]}
MODES = {"coop": (True, False), "coop pdl": (True, True), "plain": (False, False), "plain pdl": (False, True)}


def main():
    torch.zeros(1, device="cuda")
    g = Grid(sys.argv[1] if len(sys.argv) > 1 else "/tmp/gridroute.cubin")
    ext, card = anchor_ext()
    recs = []
    for model, N in SHAPES.items():
        K = 2880
        for M in (1, 2, 4, 8):
            ks = []
            for k in VARIANTS[N]:
                r, t, th, _ = g.parse(k)
                if (N // r) * -(-M // t) > 4 * 132:  # co-residency: a cooperative grid must fit at once
                    continue
                for mode, (coop, pdl) in MODES.items():
                    try:
                        check(g, k, N, K, M, pdl, coop)
                        ks.append((k, mode))
                    except RuntimeError as e:  # the driver refused the launch
                        print(f"{k} M={M} {mode}: refused: {e}", flush=True)
            loop = DecodeLoop(N, K, M, with_bias=True)
            rows = peer_rows(ext, N, TOP_K)
            rows["route pdl=False"] = lambda i, x, w, b: cutlass_router.route(x, w, b, top_k=TOP_K, pdl=False)
            rows.update({f"{k} {mode}": g.row(k, MODES[mode][1], MODES[mode][0]) for k, mode in ks})
            res = loop.measure(rows, skip_errors=True)
            report(recs, model, N, K, M, res, card, " (checked)")
            del loop
    save(recs, "gridroute")


if __name__ == "__main__":
    main()
