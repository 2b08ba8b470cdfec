"""A/B in the decode loop (not shipped): the select kernel before and after its logits loads were batched
(route.cuh route_select_p, 2026-11-29: one predicated load per slot, all issued before the first use, where a
branch per slot had made P dependent L2 round trips per row). router_gemm, then the select kernel launched by hand
from the old and the new cubin, same loop, interleaved; both checked against the reference first.

    python notes/l2/select_loads.py OLD_DIR NEW_DIR [out.json]          (run 1)
    python notes/l2/select_loads.py --pdl NEW_DIR [out.json]            (run 2)

OLD_DIR holds old_<mode>_p<P>.cubin, NEW_DIR the shipped crt_route_select_<mode>_p<P>.cubin. Run 2 (--pdl) measured
a change that was not kept: route with the select kernel launched without PDL after CUTLASS's GEMMs (a family flag,
EARLY_DEPENDENTS in families/cutlass_sm90.py, then False) against route as shipped (the flag flipped while that
row is captured), the new select kernel by hand (no PDL), and for DeepSeek-V3 the row-per-CTA kernel by hand.
Neither launch won (+-0.5 us at M = 512-4096, notes/PERF.md): the flag was reverted, so --pdl needs it back.
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
from cutlass_router.families.route import INPUT_F32, MODES, PARAMS, RENORMALIZE, select_rows  # noqa: E402
from cutlass_router.routing_ref import select  # noqa: E402
from cutlass_router.yardstick import DecodeLoop  # noqa: E402
from floor import ok  # noqa: E402

# model, N, K, mode, slots, top_k, (n_group, topk_group, scale), fp32 logits
CASES = (("gpt-oss-120b", 128, 2880, "topk_softmax", 4, 4, (1, 1, 1.0), False),
         ("deepseek-v3", 256, 7168, "sigmoid", 8, 8, (8, 4, 2.5), True))


class Select:
    def __init__(self, path, name, mode, top_k, groups, f32, cb, block=False):
        self.block = block
        mod = ok(D.cuModuleLoad(str(path).encode()))
        self.f = ok(D.cuModuleGetFunction(mod, name.encode()))
        self.buf = ctypes.create_string_buffer(PARAMS.size)
        self.argv = (ctypes.c_void_p * 1)(ctypes.addressof(self.buf))
        self.mode, self.top_k, self.groups, self.f32, self.cb = mode, top_k, groups, f32, cb

    def __call__(self, logits, weights, ids):
        M, N = logits.shape
        rows = 1 if self.block else select_rows(self.mode, M, N)
        cfg = D.CUlaunchConfig()
        cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = (M + rows - 1) // rows, 1, 1
        cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = 32 * (-(-N // 32) if self.block else rows), 1, 1
        cfg.sharedMemBytes = 0
        cfg.hStream = D.CUstream(torch.cuda.current_stream().cuda_stream)
        cfg.attrs, cfg.numAttrs = [], 0
        sigmoid = self.mode == "sigmoid"
        flags = (INPUT_F32 if self.f32 else 0) | (RENORMALIZE if sigmoid else 0)
        ng, tg, scale = self.groups
        PARAMS.pack_into(self.buf, 0, 0, 0, 0, self.cb.data_ptr() if sigmoid else 0, logits.data_ptr(), 0,
                         weights.data_ptr(), ids.data_ptr(), 0, 0, logits.stride(0), 0, self.top_k, M, N, 0,
                         self.top_k, MODES[self.mode], flags, ng, tg, scale, 0)
        ok(D.cuLaunchKernelEx(cfg, self.f, ctypes.addressof(self.argv), 0))
        return weights, ids

    def row(self):
        outs = {}

        def call(i, x, w, b):
            logits = cutlass_router.router_gemm(x, w, b, out_dtype=torch.float32 if self.f32 else None)
            if i not in outs:
                outs[i] = (torch.empty(x.shape[0], self.top_k, device="cuda"),
                           torch.empty(x.shape[0], self.top_k, device="cuda", dtype=torch.int32))
            return self(logits, *outs[i])
        return call


def main():
    torch.zeros(1, device="cuda")
    pdl_run = sys.argv[1] == "--pdl"
    old_dir, new_dir = (None, Path(sys.argv[2])) if pdl_run else (Path(sys.argv[1]), Path(sys.argv[2]))
    from cutlass_router.families import cutlass_sm90
    if pdl_run and not hasattr(cutlass_sm90, "EARLY_DEPENDENTS"):
        raise SystemExit("--pdl measured families/cutlass_sm90.py's EARLY_DEPENDENTS flag, which was not kept")
    card = torch.cuda.get_device_name()
    recs = []
    for model, N, K, mode, slots, top_k, groups, f32 in CASES:
        name = f"crt_route_select_{mode}_p{slots}"
        cb = (torch.rand(N, device="cuda") * 0.1) if mode == "sigmoid" else None
        new = Select(new_dir / f"{name}.cubin", name, mode, top_k, groups, f32, cb)
        if pdl_run:
            old = Select(new_dir / "crt_route_select_sigmoid_block.cubin", "crt_route_select_sigmoid_block", mode,
                         top_k, groups, f32, cb, block=True) if mode == "sigmoid" else None
        else:
            old = Select(old_dir / f"old_{mode}_p{slots}.cubin", name, mode, top_k, groups, f32, cb)
        ng, tg, scale = groups
        for M in ((1, 8, 64, 128, 256, 512, 1024, 2048, 4096) if pdl_run else (1, 8, 64, 128, 256, 1024, 4096)):
            for k in (old, new):  # against the reference on the kernel's own logits
                if k is None:
                    continue
                lg = torch.randn(M, N, device="cuda")
                lg = lg if f32 else lg.to(torch.bfloat16)
                w, i = k(lg, torch.full((M, top_k), float("nan"), device="cuda"),
                         torch.full((M, top_k), -1, device="cuda", dtype=torch.int32))
                rw, ri = select(lg.float(), top_k, scoring=mode, renormalize=mode == "sigmoid", n_group=ng,
                                topk_group=tg, correction_bias=cb, routed_scaling_factor=scale,
                                logit_precision="fp32" if f32 else "bf16")
                assert torch.equal(i.long(), ri) and torch.allclose(w, rw, rtol=1e-5, atol=1e-6), (model, M)
            loop = DecodeLoop(N, K, M, with_bias=not f32)
            if mode == "sigmoid":
                peer = lambda i, x, w, b: tp.sigmoid_grouped_topk(  # noqa: E731
                    cutlass_router.router_gemm(x, w, None, out_dtype=torch.float32), top_k, ng, tg, cb, scale)
                rt = lambda i, x, w, b: cutlass_router.route(  # noqa: E731
                    x, w, None, top_k, scoring="sigmoid", n_group=ng, topk_group=tg, correction_bias=cb,
                    routed_scaling_factor=scale, renormalize=True, logit_precision="fp32")
            else:
                peer = lambda i, x, w, b: tp.topk_softmax(cutlass_router.router_gemm(x, w, b), top_k)  # noqa: E731
                rt = lambda i, x, w, b: cutlass_router.route(x, w, b, top_k)  # noqa: E731
            def rt_pdl(i, x, w, b):  # route as before run 2: the select kernel with PDL after every GEMM
                cutlass_sm90.EARLY_DEPENDENTS = True
                try:
                    return rt(i, x, w, b)
                finally:
                    cutlass_sm90.EARLY_DEPENDENTS = False

            if pdl_run:
                rows = {"gemm+select new": new.row(), "route": rt, "route, select PDL": rt_pdl}
                if old is not None:
                    rows["gemm+block"] = old.row()
            else:
                rows = {"gemm+select old": old.row(), "gemm+select new": new.row(), "route": rt}
            rows.update({
                    "router_gemm": lambda i, x, w, b: cutlass_router.router_gemm(
                        x, w, b, out_dtype=torch.float32 if f32 else None),
                    "router_gemm+triton": peer})
            res = loop.measure(rows)
            print(f"{model} M={M}: " + ", ".join(f"{k} {v:.2f}" for k, v in res.items()), flush=True)
            recs += [dict(model=model, experts=N, hidden=K, M=M, provider=k, us=v, card=card,
                          date=str(datetime.date.today())) for k, v in res.items()]
            del loop
    out = Path(sys.argv[3]) if len(sys.argv) > 3 else ROOT / f"notes/l2/select-loads-{datetime.date.today()}.json"
    out.write_text(json.dumps(recs, indent=1))


if __name__ == "__main__":
    main()
