"""A/B in the decode loop (not shipped, measured slower): the router GEMM's W loads ahead of griddepcontrol.wait.

ptxas schedules most read-only W loads below the wait (SASS: ACQBULK first), so under PDL a router does not load
its weights while the producer runs. Two variants, each a patch against the seventeenth session's base tree
(c7f06af) that adds a flags bit (SplitKParams.flags / RouteParams.flags, 64) the launch sets for PDL launches
(families: pack_gemm(..., pdl), gemm_pack_fixed's tails[pdl], route_consts' tails[pdl]):
  * notes/l2/w_first_wait.diff (run 1): with the bit, griddepcontrol.wait is predicated on the loaded W words, so
    it cannot issue before they arrive; without it a plain wait, which the branch now also keeps below the W loads
    (SASS of every GEMV and split-K kernel: all first-batch W loads ahead of ACQBULK);
  * notes/l2/w_first_prefetch.diff (run 2): with the bit, each CTA prefetches its W rows into L2 before the wait
    (cp.async.bulk.prefetch.L2, one request per row and warp); the loads stay where ptxas puts them.
Rows, one loop per (model, M, producer): the router GEMM the dispatch picks, launched by hand from the cubin
shipped before the change (OLD_DIR/<symbol>.cubin, the flags word then ignored) and from the new one with the bit
clear and set, each with and without PDL; route as the library calls it with and without PDL, and with the bit
never set (the packing patched around the call while its graph is captured). Producers: F.rms_norm (never
triggers its dependents early) and cutlass_router.rms_norm launched with PDL (triggers early). Every GEMM variant
is checked against fp64 first.

    cp cutlass_router/prebuilt/*.cubin OLD/ && git apply notes/l2/w_first_wait.diff && python -m cutlass_router emit
    python -m cutlass_router build && python notes/l2/w_first.py OLD [out.json]
"""
from __future__ import annotations

import datetime
import json
import struct
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import cutlass_router as cr  # noqa: E402
from cutlass_router import dispatch, families, launch, plan  # noqa: E402
from cutlass_router.families import route as route_family, splitk_mma  # noqa: E402
from cutlass_router.yardstick import EPS, DecodeLoop, rms_norm  # noqa: E402

SHAPES = {"gpt-oss-20b": (32, 2880, 4), "gpt-oss-120b": (128, 2880, 4), "deepseek-v3": (256, 7168, 8)}
PRODUCERS = {"F.rms_norm": rms_norm, "crt pdl": lambda x, w, out: cr.rms_norm(x, w, EPS, out=out, pdl=True)}
FLAGS_AT = splitk_mma.PARAMS.size - 4  # SplitKParams.flags, the last int32


def load_old(old_dir: Path, symbol: str):
    """The cubin shipped before the change, loaded as a LoadedKernel of the manifest's entry (same geometry)."""
    from cuda.bindings import driver

    e = launch.entry(symbol)
    fam = families.of(e.family)
    lib = launch.check(driver.cuLibraryLoadData((old_dir / f"{symbol}.cubin").read_bytes(), None, None, 0, None,
                                                None, 0), "cuLibraryLoadData")
    kern = launch.check(driver.cuLibraryGetKernel(lib, symbol.encode()), "cuLibraryGetKernel")
    block, cluster, smem = fam.geometry(e, None)
    return launch.LoadedKernel(e, fam, lib, kern, block, cluster, smem, "old")


def gemm_row(k, flags: int, pdl: bool, outs: dict):
    def call(i, x, w, b):
        M, K = x.shape
        N = w.shape[0]
        if i not in outs:
            outs[i] = torch.empty(M, N, device=x.device, dtype=torch.bfloat16)
        out = outs[i]
        buf, _, gb = launch.params_buffer()
        grid = k.family.pack_gemm(k, buf, launch.PARAM_CAPACITY, gb, x.data_ptr(), w.data_ptr(),
                                  0 if b is None else b.data_ptr(),
                                  out.data_ptr(), M, N, K, x.stride(0), w.stride(0), out.stride(0),
                                  plan.sm_count(x.get_device()))
        struct.pack_into("<i", buf, FLAGS_AT, flags)
        launch.launch(k, x.get_device(), torch.cuda.current_stream().cuda_stream, pdl, grid)
        return out
    return call


def _fast_gemm_nobit(f, x, weight, bias, dst, pdl):  # plan.fast_gemm with the tail of a launch without PDL
    buf, argv, _ = f.params_buffer()
    f.pack(buf, 0, x.data_ptr(), weight.data_ptr(), 0 if bias is None else bias.data_ptr(), dst.data_ptr(),
           *f.tails[False])
    f.fire(argv, pdl)


def nobit(fn):
    """fn (a route call) with the flags of launches without PDL whatever its launches' PDL: the bit never set."""
    fast_gemm, pack_route, bit = plan.fast_gemm, route_family.pack_route, splitk_mma.W_BEFORE_WAIT

    def call(*a):
        plan.fast_gemm, splitk_mma.W_BEFORE_WAIT = _fast_gemm_nobit, 0
        route_family.pack_route = lambda *args: pack_route(*args[:13], False)
        try:
            return fn(*a)
        finally:
            plan.fast_gemm, route_family.pack_route, splitk_mma.W_BEFORE_WAIT = fast_gemm, pack_route, bit
    return call


def main():
    old_dir = Path(sys.argv[1])
    card = torch.cuda.get_device_name()
    recs = []
    for model, (N, K, top_k) in SHAPES.items():
        kw = {} if model != "deepseek-v3" else dict(scoring="sigmoid", n_group=8, topk_group=4, renormalize=True,
                                                     routed_scaling_factor=2.5, logit_precision="fp32")
        for M in (1, 8, 32):
            symbol = dispatch.choose(N, K, M, "bf16")
            kernels = {"old": load_old(old_dir, symbol), "new": launch.load(symbol)}
            # Check every GEMM variant against F.linear once (fresh inputs, poisoned output).
            x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
            w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16) / K ** 0.5
            b = torch.randn(N, device="cuda", dtype=torch.bfloat16)
            ref = F.linear(x.double(), w.double(), b.double())
            for name, k in kernels.items():
                for flags in (0, splitk_mma.W_BEFORE_WAIT):
                    outs = {0: torch.full((M, N), float("nan"), device="cuda", dtype=torch.bfloat16)}
                    y = gemm_row(k, flags, True, outs)(0, x, w, b)
                    torch.cuda.synchronize()
                    err = (y.double() - ref).abs().max().item()
                    assert err < 0.05, (model, M, name, flags, err)
            cb = torch.randn(N, device="cuda") * 0.1 if model == "deepseek-v3" else None
            for prod, fn in PRODUCERS.items():
                loop = DecodeLoop(N, K, M, producer=fn, with_bias=model != "deepseek-v3")
                rows = {}
                for pdl in (False, True):
                    tag = "pdl" if pdl else "plain"
                    rows[f"gemm old {tag}"] = gemm_row(kernels["old"], 0, pdl, {})
                    rows[f"gemm new flag0 {tag}"] = gemm_row(kernels["new"], 0, pdl, {})
                    rows[f"gemm new flag64 {tag}"] = gemm_row(kernels["new"], 64, pdl, {})
                    rows[f"route {tag}"] = (lambda i, x, w, b, pdl=pdl:
                                            cr.route(x, w, b, top_k, correction_bias=cb, pdl=pdl, **kw))
                    rows[f"route nobit {tag}"] = nobit(rows[f"route {tag}"])
                res = loop.measure(rows)
                base = loop.base_us()
                print(f"{model} M={M} {symbol} {prod}: base {base:.2f} | " +
                      ", ".join(f"{k} {v:.2f}" for k, v in res.items()), flush=True)
                recs += [dict(model=model, experts=N, hidden=K, M=M, producer=prod, kernel=symbol, provider=k, us=v,
                              base=base, card=card, date=str(datetime.date.today())) for k, v in res.items()]
                del loop
    out = Path(sys.argv[2] if len(sys.argv) > 2 else ROOT / f"notes/l2/w-first-{datetime.date.today()}.json")
    out.write_text(json.dumps(recs, indent=1))


if __name__ == "__main__":
    main()
