"""On an sm90 GPU: the GEMV family (templates/gemv.cuh), every kernel forced, against fp64.

Its kernels take M up to gemv.MAX_M and any K that is a multiple of 8 (more than one pass over K where K exceeds
8 x vecs x threads), so the shapes here cross every boundary of its loops: rows past N in the last CTA, tokens past M
in the last token tile, K of one vector, of one pass exactly, of one pass plus a vector, and several passes.
"""
import pytest
import torch
from conftest import fp64_ref, rel_err

from cutlass_router import families, manifest, ops
from cutlass_router.families import gemv

pytestmark = pytest.mark.gpu
BF16, F32 = torch.bfloat16, torch.float32
TOL = {BF16: 1e-2, F32: 1e-5}
GEMV = sorted(s for s, e in manifest.entries().items() if e.family == "gemv")


def inputs(M, N, K, with_bias=True, ldx=None):
    g = torch.Generator(device="cuda")
    g.manual_seed(torch.randint(0, 2 ** 31, ()).item())
    wide = torch.randn(M, ldx or K, device="cuda", dtype=BF16, generator=g)
    x = wide[:, :K]
    w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(BF16)
    b = torch.randn(N, device="cuda", dtype=BF16, generator=g) if with_bias else None
    return x, w, b


def dtype_of(symbol):
    return BF16 if manifest.entry(symbol).out_dtype == "bf16" else F32


@pytest.mark.parametrize("symbol", GEMV)
def test_gemv_kernel_matches_fp64_across_its_loop_boundaries(symbol):
    e = manifest.entry(symbol)
    one_pass = e.launch["one_pass_k"]
    dtype = dtype_of(symbol)
    for M, N, K in [(1, 32, 2880), (2, 128, 2880), (3, 60, 8), (7, 33, one_pass), (13, 1, one_pass + 8),
                    (4, 256, 7168), (5, 17, 3 * one_pass + 24), (127, 40, 1000), (256, 128, 2880)]:
        for with_bias in (True, False):
            x, w, b = inputs(M, N, K, with_bias, ldx=K + 64 if M % 2 else None)  # odd M: x rows strided
            out = torch.full((M, N), float("nan"), device="cuda", dtype=dtype)
            ops.run_kernel(symbol, x, w, b, dtype, out=out)
            err = rel_err(out, fp64_ref(x, w, b))
            assert err < TOL[dtype], f"{symbol} M={M} N={N} K={K} bias={with_bias}: relative error {err}"


@pytest.mark.parametrize("symbol", GEMV)
def test_gemv_rows_do_not_depend_on_the_batch(symbol):
    """Token m's sum is fixed by K and the kernel: its row has the same bits at every M."""
    dtype = dtype_of(symbol)
    x, w, b = inputs(200, 128, 2880)
    full = ops.run_kernel(symbol, x, w, b, dtype)
    for M in (1, 2, 3, 7, 64):
        assert torch.equal(ops.run_kernel(symbol, x[:M].contiguous(), w, b, dtype), full[:M]), f"M={M}"


@pytest.mark.parametrize("symbol", GEMV[:2])
def test_gemv_nan_and_inf_stay_in_their_row(symbol):
    dtype = dtype_of(symbol)
    x, w, b = inputs(4, 32, 2880)
    x[1, 5] = float("nan")
    x[2, 7] = float("inf")
    tokens = manifest.entry(symbol).launch["tile_tokens"]
    out = ops.run_kernel(symbol, x, w, b, dtype)
    assert out[1].isnan().all()
    assert (out[2].isinf() | out[2].isnan()).all()  # +-inf by the sign of w, nan where w is 0
    finite = [0, 3]
    ref = fp64_ref(x[finite], w, b)
    assert rel_err(out[finite], ref) < TOL[dtype], f"rows next to the bad ones (tiles of {tokens} tokens)"


def test_gemv_refuses_prefill_sizes_with_the_reason():
    symbol = GEMV[0]
    x, w, b = inputs(gemv.MAX_M + 1, 32, 2880)
    with pytest.raises(ValueError, match="decode sizes"):
        ops.run_kernel(symbol, x, w, b, dtype_of(symbol))
    e = manifest.entry(symbol)
    assert families.of(e.family).blocker(e, gemv.MAX_M, 32) is None
