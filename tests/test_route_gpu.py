"""route() on an sm90 GPU: the fused kernel and the GEMM + select path against the reference.

Two checks per call: the choice and weights equal the reference applied to the kernel's own fp32 logits (exactly
for ids, ties included, 1e-6 for weights), and the logits equal fp64 logits (the GEMM). Rows whose reference keys
are well separated must also pick the experts an fp64 pipeline picks. Outputs start poisoned.
"""
import pytest
import torch

from cutlass_router import dispatch, manifest, plan, route
from cutlass_router.families import route as fam
from cutlass_router.routing_ref import select

pytestmark = pytest.mark.gpu
BF16 = torch.bfloat16
MS = [1, 3, 7, 13, 64, 127, 1000, 4096]


def inputs(M, N, K, seed, bias=True):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(M, K, device="cuda", dtype=BF16, generator=g)
    w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(BF16)
    b = torch.randn(N, device="cuda", dtype=BF16, generator=g) if bias else None
    cb = torch.randn(N, device="cuda", generator=g) * 0.1
    return x, w, b, cb


def modes(N, top_k):
    yield dict(scoring="topk_softmax"), True
    yield dict(scoring="softmax_topk", renormalize=top_k > 1), True
    per_lane = -(-N // 32)
    groups = next((g for g in (8, 4, 2) if N % g == 0 and (N // g) % per_lane == 0 and top_k <= (g // 2) * (N // g)),
                  1)
    yield dict(scoring="sigmoid", n_group=groups, topk_group=max(1, groups // 2), renormalize=True,
               routed_scaling_factor=2.5, logit_precision="fp32"), False


def run_and_check(x, w, b, cb, top_k, kw, with_bias):
    M, N = x.shape[0], w.shape[0]
    bias = b if with_bias else None
    sel_bias = cb if kw["scoring"] == "sigmoid" else None
    weights = torch.full((M, top_k), float("nan"), device="cuda")
    ids = torch.full((M, top_k), -7, device="cuda", dtype=torch.int32)
    logits = torch.full((M, N), float("nan"), device="cuda")
    route(x, w, bias, top_k, correction_bias=sel_bias, out=(weights, ids, logits), **kw)
    torch.cuda.synchronize()
    ref = x.double() @ w.double().T + (0 if bias is None else bias.double())
    assert ((logits.double() - ref).norm() / ref.norm()).item() < 1e-5
    assert ((ids >= 0) & (ids < N)).all()
    rw, ri = select(logits, top_k, correction_bias=sel_bias, **kw)
    assert torch.equal(ids.long(), ri), (kw, (ids.long() != ri).nonzero()[:4])
    assert torch.allclose(weights, rw, rtol=1e-6, atol=1e-7), (weights - rw).abs().max()
    return ids


@pytest.mark.parametrize("N,K", [(8, 2880), (32, 2880), (60, 1000), (128, 2880), (256, 7168), (384, 2048)])
@pytest.mark.parametrize("top_k", [1, 2, 4, 6, 8])
def test_route_matches_the_reference(N, K, top_k):
    if top_k > N:
        pytest.skip("top_k > N")
    for M in MS:
        x, w, b, cb = inputs(M, N, K, seed=M * 1000 + N + top_k)
        for kw, with_bias in modes(N, top_k):
            run_and_check(x, w, b, cb, top_k, dict(kw), with_bias)
            if kw["scoring"] != "sigmoid":
                run_and_check(x, w, b, cb, top_k, dict(kw, logit_precision="fp32"), with_bias)


FUSED = sorted(s for s, e in manifest.entries().items()
               if e.family == "route" and not e.config["select_only"])


@pytest.mark.parametrize("symbol", FUSED)
def test_every_fused_kernel_forced(symbol, monkeypatch):
    """Each fused configuration (shipped, or a tuning candidate compiled here) at the shapes it covers."""
    monkeypatch.setattr(dispatch, "choose_route", lambda N, K, M: symbol)
    plan.clear()
    try:
        limit = manifest.entry(symbol).launch["max_experts"]
        for N in [n for n in (8, 32, 60, 128, 256, 384) if n <= limit]:
            for M in (1, 13, 64):
                x, w, b, cb = inputs(M, N, 2880, seed=N + M)
                for kw, with_bias in modes(N, 4):
                    run_and_check(x, w, b, cb, min(4, N), dict(kw), with_bias)
    finally:
        plan.clear()


def test_ties_nan_inf_keep_ids_valid_and_distinct():
    """Logits built directly (x one-hot, W = the wanted logits): all-equal rows, NaN, +-Inf."""
    N, K, top_k = 128, 128, 8
    x = torch.eye(K, device="cuda", dtype=BF16)[:6]
    table = torch.zeros(6, N)
    table[1, 5] = float("nan")
    table[1, 7] = float("nan")
    table[2, 3] = float("inf")
    table[3, :] = float("-inf")
    table[4, ::3] = float("nan")
    table[5] = torch.arange(N) % 4  # many ties
    w = torch.zeros(N, K, dtype=BF16)
    w[:, :6] = table.T.to(BF16)
    w = w.cuda()
    for kw, _ in modes(N, top_k):
        r = route(x, w, None, top_k, return_logits=True, logits_dtype=torch.float32, **kw)
        assert ((r.ids >= 0) & (r.ids < N)).all() and all(len(set(row.tolist())) == top_k for row in r.ids)
        assert r.ids[0].tolist() == list(range(top_k))  # all equal: lowest ids
        if kw["scoring"] != "sigmoid":
            assert r.ids[1, :2].tolist() == [5, 7]  # NaN ranks first, lower id first
            assert r.ids[2, 0].item() == 3  # +inf next
        rw, ri = select(r.logits, top_k, **kw)
        assert torch.equal(r.ids.long(), ri)


def test_cuda_graph_replay_with_a_pdl_consumer_under_memory_traffic():
    """A producer (cuBLAS) writes x, route reads it with PDL, and a PDL-launched kernel (router_gemm, x = route's
    bf16 weights) reads route's output right away; captured in a CUDA graph and replayed 2,000 times while
    another stream saturates memory with copies. Every output of every replay is compared with the same calls
    made without PDL."""
    from cutlass_router import router_gemm

    M, N, K, top_k = 8, 128, 2880, 8
    x, w, b, _ = inputs(M, N, K, seed=5)
    sources = [inputs(M, N, K, seed=100 + i)[0] for i in range(4)]
    consumer_w = (torch.randn(16, top_k, device="cuda") * 0.5).to(BF16)
    expected = [route(src_, w, b, top_k, weights_dtype=BF16, pdl=False) for src_ in sources]
    expected_seen = [router_gemm(e.weights, consumer_w, pdl=False) for e in expected]
    eye = torch.eye(K, device="cuda", dtype=BF16)
    src = torch.empty_like(x)

    def step():
        torch.mm(src, eye, out=x)  # exact: one product per element
        r = route(x, w, b, top_k, weights_dtype=BF16, pdl=True)
        return r, router_gemm(r.weights, consumer_w, pdl=True)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()  # warm up: load the kernels outside capture
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out, seen = step()
    noise = torch.cuda.Stream()
    big_a = torch.empty(256 << 20, device="cuda", dtype=torch.uint8)
    big_b = torch.empty_like(big_a)
    bad = torch.zeros((), device="cuda", dtype=torch.int64)
    for i in range(2000):
        if i % 50 == 0:
            with torch.cuda.stream(noise):
                for _ in range(4):
                    big_b.copy_(big_a)
        src.copy_(sources[i % 4])
        g.replay()
        bad += (out.ids != expected[i % 4].ids).sum() + (out.weights != expected[i % 4].weights).sum()
        bad += (seen != expected_seen[i % 4]).sum()
    torch.cuda.synchronize()
    assert bad.item() == 0


def test_out_variant_allocates_nothing_at_decode_sizes():
    M, N, K = 16, 128, 2880
    x, w, b, _ = inputs(M, N, K, seed=9)
    out = (torch.empty(M, 4, device="cuda"), torch.empty(M, 4, device="cuda", dtype=torch.int32))
    route(x, w, b, 4, out=out)
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    route(x, w, b, 4, out=out)
    torch.cuda.synchronize()
    assert torch.cuda.memory_stats()["allocation.all.allocated"] == before


def test_batch_invariant_route_rows_do_not_depend_on_the_batch():
    x, w, b, _ = inputs(4096, 128, 2880, seed=11)
    full = route(x, w, b, 4, batch_invariant=True, logits_dtype=torch.float32)
    for M in (1, 3, 64, 1000):
        part = route(x[:M], w, b, 4, batch_invariant=True, logits_dtype=torch.float32)
        assert torch.equal(part.logits, full.logits[:M]) and torch.equal(part.ids, full.ids[:M])


def test_the_plan_uses_the_kernels():
    """On an sm90 GPU the common shapes run the route kernels, not the torch fallback."""
    x, w, b, _ = inputs(1, 128, 2880, seed=1)
    for M in (1, 64, 4096):
        a = plan.RouteArgs(4, "topk_softmax", False, 1, 1, 1.0, "bf16", None, torch.float32, torch.int32)
        p = plan.route(torch.empty(M, 2880, device="cuda", dtype=BF16), w, b, None, a, False)
        assert p.kernel is not None and p.reason is None, p.reason
        assert (p.gemm is None) == (dispatch.choose_route(128, 2880, M) != dispatch.GEMM_THEN_SELECT)
    assert fam.selection_blocker(400, 4, "topk_softmax", 1, 1)
