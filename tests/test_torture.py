"""On the GPU: thousands of random problems against fp64, and F.linear's behaviour on NaN, Inf and huge values."""
import random

import pytest
import torch
import torch.nn.functional as F
from conftest import fp64_ref, rel_err

from cutlass_router import router_gemm

pytestmark = pytest.mark.gpu
BF16, F32 = torch.bfloat16, torch.float32


def random_case(rng: random.Random):
    M = int(2 ** rng.uniform(0, 12))
    N = rng.choice([1, 7, 16, 32, 60, 64, 100, 128, 256, rng.randint(1, 300)])
    K = 8 * rng.randint(1, 512)
    offset = 8 * rng.randint(0, 3)  # pointer offsets that keep 16-byte alignment
    pad = 8 * rng.randint(0, 2)     # row strides larger than K
    return M, N, K, offset, pad, rng.random() < 0.7, rng.choice([BF16, F32]), rng.random() < 0.3


def test_random_cases_against_fp64():
    rng = random.Random(20261127)
    streams = [torch.cuda.Stream() for _ in range(2)]
    failures = []
    for i in range(2000):
        M, N, K, offset, pad, with_bias, dtype, side = random_case(rng)
        gen = torch.Generator(device="cuda").manual_seed(i)
        xbuf = torch.randn(offset + M * (K + pad), device="cuda", dtype=BF16, generator=gen)
        x = xbuf[offset:].view(M, K + pad)[:, :K]
        w = (torch.randn(N, K, device="cuda", generator=gen) * K ** -0.5).to(BF16)
        b = torch.randn(N, device="cuda", dtype=BF16, generator=gen) if with_bias else None
        stream = streams[i % 2] if side else torch.cuda.current_stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            torch.full((M, N), float("nan"), device="cuda", dtype=dtype)  # poison the allocator's next block
            y = router_gemm(x, w, b, out_dtype=dtype)
        torch.cuda.current_stream().wait_stream(stream)
        err = rel_err(y, fp64_ref(x, w, b))
        if not err < (1e-2 if dtype == BF16 else 1e-5):
            failures.append((i, M, N, K, offset, pad, with_bias, dtype, side, err))
    assert failures == [], failures[:10]


@pytest.mark.parametrize("M,N", [(1, 128), (16, 32), (300, 128), (4096, 128)])
def test_nan_and_inf_land_where_f_linear_puts_them(M, N):
    K = 2880
    x = torch.randn(M, K, device="cuda", dtype=BF16)
    w = (torch.randn(N, K, device="cuda") * K ** -0.5).to(BF16)
    b = torch.randn(N, device="cuda", dtype=BF16)
    x[0, 5] = float("nan")
    x[M // 2, 7] = float("inf")
    w[N // 3, 11] = float("nan")
    w[N - 1, 13] = float("-inf")
    y, ref = router_gemm(x, w, b), F.linear(x, w, b)
    assert torch.equal(torch.isnan(y), torch.isnan(ref))
    assert torch.equal(torch.isposinf(y), torch.isposinf(ref)) and torch.equal(torch.isneginf(y), torch.isneginf(ref))
    finite = torch.isfinite(ref)
    assert rel_err(y[finite], ref[finite].double()) < 1e-2


def test_huge_magnitudes_behave_like_f_linear():
    M, N, K = 8, 32, 2880
    x = (torch.randn(M, K, device="cuda") * 1e18).to(BF16)
    w = (torch.randn(N, K, device="cuda") * 1e18).to(BF16)  # products near 1e36, sums still finite
    y, ref = router_gemm(x, w, None, out_dtype=F32), F.linear(x.float(), w.float(), None)
    assert torch.isfinite(ref).all() and torch.isfinite(y).all()
    assert rel_err(y, fp64_ref(x, w, None)) < 1e-5
    xp, wp = x.abs(), w.abs()  # all positive: the sum passes fp32's largest value in any order
    y, ref = router_gemm(xp, wp, None), F.linear(xp, wp, None)
    assert torch.isposinf(ref).all() and torch.isposinf(y).all()


def random_route_case(rng: random.Random):
    """A random route() call: any N up to 384 (most not a multiple of 16), K a multiple of 8, every scoring mode,
    dtype and precision, duplicated W rows (exact ties) in some."""
    M = int(2 ** rng.uniform(0, 12))
    N = rng.choice([8, 32, 60, 128, 256, 384, rng.randint(2, 384), rng.randint(2, 64)])
    K = 8 * rng.randint(1, 400)
    top_k = rng.randint(1, min(8, N))
    scoring = rng.choice(["topk_softmax", "softmax_topk", "sigmoid"])
    kw = dict(scoring=scoring, logit_precision=rng.choice(["bf16", "fp32"]))
    if scoring == "softmax_topk":
        kw["renormalize"] = rng.random() < 0.5
    if scoring == "sigmoid":
        per_lane = -(-N // 32)
        groups = [g for g in (1, 2, 4, 8) if N % g == 0 and (g == 1 or (N // g >= 2 and (N // g) % per_lane == 0))]
        g = rng.choice(groups)
        tg = rng.randint(1, g)
        top_k = min(top_k, tg * (N // g))
        kw.update(n_group=g, topk_group=tg, renormalize=rng.random() < 0.7,
                  routed_scaling_factor=rng.choice([1.0, 2.5]))
    return M, N, K, top_k, kw, rng.random() < 0.7, rng.random() < 0.2, rng.random() < 0.3


def test_random_route_cases_against_the_reference():
    """2,000 random route() calls (fused kernel or GEMM + select, whatever dispatch picks), outputs poisoned, half
    on a side stream: ids always in [0, N) and distinct, and equal to the reference choice on the kernel's own fp32
    logits (ties included), weights within 1e-6; logits within 1e-5 of fp64."""
    from cutlass_router import route
    from cutlass_router.routing_ref import select

    rng = random.Random(20261128)
    side = torch.cuda.Stream()
    failures = []
    for i in range(2000):
        M, N, K, top_k, kw, with_bias, ties, on_side = random_route_case(rng)
        gen = torch.Generator(device="cuda").manual_seed(i)
        x = torch.randn(M, K, device="cuda", dtype=BF16, generator=gen)
        w = (torch.randn(N, K, device="cuda", generator=gen) * K ** -0.5).to(BF16)
        if ties:  # a few experts copy another: equal logits, the lower id must win
            src = torch.randint(0, N, (max(1, N // 8),), device="cuda", generator=gen)
            dst = torch.randint(0, N, (max(1, N // 8),), device="cuda", generator=gen)
            w[dst] = w[src]
        b = torch.randn(N, device="cuda", dtype=BF16, generator=gen) if with_bias and kw["scoring"] != "sigmoid" \
            else None
        cb = torch.randn(N, device="cuda", generator=gen) * 0.1 if kw["scoring"] == "sigmoid" else None
        ids_dtype = rng.choice([torch.int32, torch.int64])
        stream = side if on_side else torch.cuda.current_stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            weights = torch.full((M, top_k), float("nan"), device="cuda")
            ids = torch.full((M, top_k), -7, device="cuda", dtype=ids_dtype)
            logits = torch.full((M, N), float("nan"), device="cuda")
            route(x, w, b, top_k, correction_bias=cb, out=(weights, ids, logits), **kw)
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        case = (i, M, N, K, top_k, kw, with_bias, ties)
        if not ((ids >= 0) & (ids < N)).all() or (ids.sort(1).values.diff(1) == 0).any():
            failures.append(("ids out of range or repeated",) + case)
            continue
        ref = x.double() @ w.double().T + (0 if b is None else b.double())
        if not ((logits.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item() < 1e-5:
            failures.append(("logits",) + case)
        rw, ri = select(logits, top_k, correction_bias=cb, **kw)
        if not torch.equal(ids.long(), ri):
            failures.append(("ids",) + case)
        elif not torch.allclose(weights, rw, rtol=1e-6, atol=1e-7):
            failures.append(("weights",) + case)
    assert failures == [], failures[:10]
