"""route() on an sm90 GPU: the fused kernel and the GEMM + select path against the reference.

Two checks per call: the choice and weights equal the reference applied to the kernel's own fp32 logits (exactly
for ids, ties included, 1e-6 for weights), and the logits equal fp64 logits (the GEMM). Rows whose reference keys
are well separated must also pick the experts an fp64 pipeline picks. Outputs start poisoned.
"""
import pytest
import torch

from conftest import replay_under_memory_traffic
from cutlass_router import dispatch, manifest, ops, plan, route
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
    groups = next((g for g in (8, 4, 2) if N % g == 0 and N // g >= 2 and (N // g) % per_lane == 0
                   and top_k <= (g // 2) * (N // g)), 1)
    yield dict(scoring="sigmoid", n_group=groups, topk_group=max(1, groups // 2), renormalize=True,
               routed_scaling_factor=2.5, logit_precision="fp32"), False


@pytest.fixture
def graph_path(monkeypatch):
    """route's choice inside CUDA-graph capture (the tuned table: GEMM + select at decode sizes), made eagerly:
    outside capture, route takes a fused kernel at decode sizes (ops._one_launch)."""
    monkeypatch.setattr(ops, "_capturing", lambda: True)


@pytest.fixture
def force_route(monkeypatch):
    """force_route(choice): every route call of the test takes choice (a fused kernel, or dispatch.GEMM_THEN_SELECT)
    instead of the table's rung. Plans are cached per shape: none made before the forcing may serve the test, and
    none made under it may serve the next."""
    def force(choice):
        rung = dispatch.RouteRung(1 << 62, choice)
        monkeypatch.setattr(dispatch, "route_rung", lambda N, K, M, one_launch=False: rung)
        plan.clear()

    yield force
    plan.clear()


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


@pytest.mark.parametrize("path", ["eager", "graph"])
@pytest.mark.parametrize("N,K", [(8, 2880), (32, 2880), (60, 1000), (128, 2880), (256, 7168), (384, 2048)])
@pytest.mark.parametrize("top_k", [1, 2, 4, 6, 8])
def test_route_matches_the_reference(N, K, top_k, path, request):
    """Every mode, both of route's paths at decode sizes: eager (a fused kernel) and the one a CUDA graph
    captures (the tuned table's, GEMM + select for the common shapes); above decode sizes they are the same."""
    if top_k > N:
        pytest.skip("top_k > N")
    if path == "graph":
        request.getfixturevalue("graph_path")
    for M in MS:
        if path == "graph" and M > dispatch._ROUTE_FUSED_MAX_M:
            continue
        x, w, b, cb = inputs(M, N, K, seed=M * 1000 + N + top_k)
        for kw, with_bias in modes(N, top_k):
            run_and_check(x, w, b, cb, top_k, dict(kw), with_bias)
            if kw["scoring"] != "sigmoid":
                run_and_check(x, w, b, cb, top_k, dict(kw, logit_precision="fp32"), with_bias)


FUSED = sorted(s for s, e in manifest.entries().items()
               if e.family == "route" and not e.config["select_only"])


@pytest.mark.parametrize("symbol", FUSED)
def test_every_fused_kernel_forced(symbol, force_route):
    """Each fused configuration (shipped, or a tuning candidate compiled here) at the shapes it covers."""
    force_route(symbol)
    limit = manifest.entry(symbol).launch["max_experts"]
    for N in [n for n in (8, 32, 60, 128, 256, 384) if n <= limit]:
        for M in (1, 13, 64):
            x, w, b, cb = inputs(M, N, 2880, seed=N + M)
            for kw, with_bias in modes(N, 4):
                run_and_check(x, w, b, cb, min(4, N), dict(kw), with_bias)


GEMV_ROUTE = [s for s in FUSED if manifest.entry(s).config.get("gemv")]


@pytest.mark.parametrize("symbol", GEMV_ROUTE)
def test_gemv_route_kernels_at_every_cluster_size(symbol, force_route):
    """The GEMV route kernels size their cluster by N (ceil(N / rows) CTAs): one CTA alone (N <= rows, plain stores
    where the others send with st.async), a few, all 16; K not a multiple of their one-pass width (two passes) and
    below it; partial token tiles."""
    force_route(symbol)
    rows = manifest.entry(symbol).launch["tile_experts"]
    for N in (1, rows, rows + 1, 7, 31, 16 * rows):
        for M, K in ((1, 2880), (3, 64), (5, 3080)):
            top_k = min(4, N)
            x, w, b, cb = inputs(M, N, K, seed=N * 100 + M)
            for kw, with_bias in modes(N, top_k):
                run_and_check(x, w, b, cb, top_k, dict(kw), with_bias)


def test_ties_nan_inf_keep_ids_valid_and_distinct():
    """Rows of chosen logits (x one-hot, W's first column = the logits, so no 0 x NaN leaks into other experts):
    all equal, NaN, +-Inf, many ties."""
    N, top_k = 128, 8
    rows = torch.zeros(6, N)
    rows[1, 5] = rows[1, 7] = float("nan")
    rows[2, 3] = float("inf")
    rows[3, :] = float("-inf")
    rows[4, ::3] = float("nan")
    rows[5] = (torch.arange(N) % 4).float()  # many ties
    x = torch.zeros(1, 8, device="cuda", dtype=BF16)
    x[0, 0] = 1
    for kw, _ in modes(N, top_k):
        for r in range(rows.shape[0]):
            w = torch.zeros(N, 8, device="cuda", dtype=BF16)
            w[:, 0] = rows[r].to(BF16)
            out = route(x, w, None, top_k, logits_dtype=torch.float32, **kw)
            ids = out.ids[0].tolist()
            assert all(0 <= i < N for i in ids) and len(set(ids)) == top_k, (kw, r, ids)
            rw, ri = select(out.logits, top_k, **kw)
            assert ids == ri[0].tolist(), (kw, r)
            if r == 0:
                assert ids == list(range(top_k))  # all equal: the lowest ids
            if r == 1 and kw["scoring"] != "sigmoid":
                assert ids[:2] == [5, 7]  # NaN ranks first, lower id first
            if r == 2 and kw["scoring"] != "sigmoid":
                assert ids[0] == 3  # +inf next


def _choice_rows(N, g):
    """Batches of rows aimed at choose_top_k's steps: random; few distinct values (ties at the threshold, so the
    candidates number from top_k to more than 32, the fallback to rounds); all equal; the best in one lane's block
    of experts (the most candidates one lane gives); each lane's first expert best (one candidate per lane); then,
    alone (a NaN logit times a zero of another token's x would leak), NaN and +-Inf among ties."""
    P = -(-N // 32)
    rows = [torch.randn(N, generator=g), torch.randint(0, 3, (N,), generator=g).float(),
            torch.randint(0, 2, (N,), generator=g).float(), torch.zeros(N)]
    r = torch.randn(N, generator=g) - 10
    r[N - P:] = torch.arange(P).float()
    rows.append(r)
    r = torch.randn(N, generator=g) - 10
    r[::P] = torch.randn(len(r[::P]), generator=g) + 10
    rows.append(r)
    r = torch.randint(0, 3, (N,), generator=g).float()
    r[torch.randint(0, N, (3,), generator=g)] = float("nan")
    r[torch.randint(0, N, (2,), generator=g)] = float("inf")
    r[torch.randint(0, N, (2,), generator=g)] = float("-inf")
    return [torch.stack(rows), r[None]]


@pytest.mark.parametrize("path", ["select", "fused"])
@pytest.mark.parametrize("N", [8, 32, 33, 60, 128, 256, 384])
def test_choice_ranks_ties_and_the_fallback(N, path, force_route):
    """The choice (ranks, then rounds past 32 candidates) against the reference, rows of chosen logits (x
    one-hot, W's first column = the row), several rows per launch, every mode and top_k 1..8."""
    if path == "fused":
        fused = [s for s in FUSED if manifest.entry(s).launch["max_experts"] >= N]
        if not fused:
            pytest.skip("no fused kernel takes N")
        force_route(fused[0])
    else:
        force_route(dispatch.GEMM_THEN_SELECT)
    g = torch.Generator().manual_seed(N)
    for top_k, rows in [(k, r) for k in (1, 2, 4, 7, 8) if k <= N for r in _choice_rows(N, g)]:
        M = rows.shape[0]
        for kw, _ in modes(N, top_k):
            w = torch.zeros(N, 8 * M, device="cuda", dtype=BF16)
            x = torch.zeros(M, 8 * M, device="cuda", dtype=BF16)
            for i in range(M):  # token i reads column 8 i: its own row of logits
                x[i, 8 * i] = 1
                w[:, 8 * i] = rows[i].to(BF16)
            out = route(x, w, None, top_k, logits_dtype=torch.float32, **kw)
            assert ((out.ids >= 0) & (out.ids < N)).all(), (kw, top_k)
            rw, ri = select(out.logits, top_k, **kw)
            assert torch.equal(out.ids.long(), ri), (kw, top_k, (out.ids.long() != ri).nonzero()[:4])
            ok = torch.isclose(out.weights, rw, rtol=1e-6, atol=1e-7) | (out.weights.isnan() & rw.isnan())
            assert ok.all(), (kw, top_k)


@pytest.mark.parametrize("N,n_group,topk_group", [(256, 8, 4), (256, 4, 2), (256, 2, 1), (128, 2, 1), (64, 4, 2),
                                                  (32, 16, 4), (384, 1, 1), (33, 1, 1), (8, 2, 1)])
def test_sigmoid_row_per_cta_kernel_every_group_shape(N, n_group, topk_group, force_route, monkeypatch):
    """The sigmoid router's row-per-CTA select kernel (M <= BLOCK_MAX_M) against the reference and against the
    warp-per-row kernel (M above): groups inside a warp (gs = 2, 4, 16, 32), whole warps (gs = 64, 128), none; N
    not a multiple of 32; ties (logits drawn from a few values) and fresh random rows. GEMM + select forced (these
    untuned shapes would take a fused kernel at decode sizes); a known model's own kernel set aside (DeepSeek-V3's
    choice is (256, 8, 4), top 8: test_a_model_s_own_select_kernel_equals_the_runtime_sized_one)."""
    monkeypatch.setattr(fam, "fixed_symbol", lambda *a: None)
    force_route(dispatch.GEMM_THEN_SELECT)
    top_k = min(8, topk_group * (N // n_group))
    g = torch.Generator(device="cuda").manual_seed(N + n_group)
    K = 64
    for M in (1, 5, fam.BLOCK_MAX_M, fam.BLOCK_MAX_M + 1, 300):
        x = torch.randn(M, K, device="cuda", dtype=BF16, generator=g)
        w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(BF16)
        w[N // 2:] = w[: N - N // 2].clone()  # ties: the second half repeats the first
        cb = torch.randn(N, device="cuda", generator=g) * 0.1
        kw = dict(scoring="sigmoid", n_group=n_group, topk_group=topk_group, renormalize=True,
                  routed_scaling_factor=2.5, logit_precision="fp32")
        out = route(x, w, None, top_k, correction_bias=cb, logits_dtype=torch.float32, **kw)
        assert ((out.ids >= 0) & (out.ids < N)).all()
        rw, ri = select(out.logits, top_k, correction_bias=cb, **kw)
        assert torch.equal(out.ids.long(), ri), (M, (out.ids.long() != ri).nonzero()[:4])
        assert torch.allclose(out.weights, rw, rtol=1e-6, atol=1e-7), (M, (out.weights - rw).abs().max())
        # which select kernel ran: the row-per-CTA one exactly where select_symbol gives it (two-kernel path)
        a = plan.RouteArgs(top_k, "sigmoid", True, n_group, topk_group, 2.5, "fp32", None, torch.float32,
                           torch.int32)
        p = plan.route(x, w, None, cb, a, False)
        assert p.gemm is not None
        want = fam.BLOCK_SPEC.symbol if M <= fam.BLOCK_MAX_M and fam.block_select_ok(N, n_group) else \
            fam.warp_select_symbol(N, "sigmoid")
        assert p.kernel.entry.symbol == want, (M, p.kernel.entry.symbol)


@pytest.mark.parametrize("spec", fam.fixed_specs(), ids=lambda s: s.symbol)
def test_a_model_s_own_select_kernel_equals_the_runtime_sized_one(spec, force_route, monkeypatch):
    """Each model's select kernel (families/route.py: fixed_specs; sizes fixed at compile time, 8/16-byte loads, the
    sigmoid's values computed side by side) on route's GEMM + select path, at M = 9 ... 4096: the reference on the
    kernel's own logits (ids exactly, ties included; weights 1e-6), and bit for bit the runtime-sized kernel it
    replaces. Rows with ties (a repeated expert), NaN, +inf, and logits of a few hundred (the sigmoid's reciprocal
    slow path below -87.3); the logits in a contiguous out= buffer (the vector loads) and in one whose rows start 2
    or 4 bytes into a padded row (the scalar loads). For the models.py models these are their own arguments and bias
    (test_route.py checks)."""
    N, K, top_k, sigmoid = spec.n, 256, spec.top_k, spec.mode == "sigmoid"
    r = dict(spec.route_args(), renormalize=spec.mode != "topk_softmax")
    if sigmoid:
        r.update(routed_scaling_factor=2.5, logit_precision="fp32")
    bias = not sigmoid
    groups, tg = (spec.groups, spec.topk_group) if sigmoid else (1, 1)
    ldt = torch.float32 if r.get("logit_precision") == "fp32" else BF16
    force_route(dispatch.GEMM_THEN_SELECT)
    for M in (9, 13, 300, 1000, 4096):
        x, w, b, cb = inputs(M, N, K, seed=M + N, bias=bias)
        x[: M // 8] *= 300.0  # logits of a few hundred: saturated scores, the slow path
        x[1] = x[0]
        w[5] = w[4]  # experts 4 and 5 tie in every row
        x[2, :5] = float("nan")
        x[3, 0] = float("inf")
        kw = dict(r, correction_bias=cb) if sigmoid else dict(r)
        runs = {}
        for fixed in (True, False):
            with monkeypatch.context() as mp:
                if not fixed:
                    mp.setattr(fam, "fixed_symbol", lambda *a: None)
                plan.clear()
                for padded in (False, True):
                    lg = torch.full((M, N + 1), float("nan"), device="cuda", dtype=ldt)
                    lg = lg[:, 1:] if padded else lg[:, :N].contiguous()
                    wt = torch.full((M, top_k), float("nan"), device="cuda")
                    ids = torch.full((M, top_k), -1, device="cuda", dtype=torch.int32)
                    route(x, w, b, top_k, out=(wt, ids, lg), **kw)
                    a = plan.RouteArgs(top_k, r["scoring"], r.get("renormalize", False), groups, tg,
                                       r.get("routed_scaling_factor", 1.0), r.get("logit_precision", "bf16"), ldt,
                                       torch.float32, torch.int32)
                    ran = plan.route(x, w, b, cb if sigmoid else None, a, False).kernel.entry.symbol
                    assert (ran == spec.symbol) == fixed, (M, ran)
                    runs[fixed, padded] = (wt, ids)
                    assert ((ids >= 0) & (ids < N)).all(), (M, padded)
                    sel = {k: v for k, v in kw.items() if k != "correction_bias"}
                    rw, ri = select(lg.float(), top_k, correction_bias=cb if sigmoid else None, **sel)
                    assert torch.equal(ids.long(), ri), (M, padded, (ids.long() != ri).nonzero()[:4])
                    close = torch.isclose(wt, rw, rtol=1e-6, atol=1e-7) | (wt.isnan() & rw.isnan())
                    assert close.all(), (M, padded)
        for padded in (False, True):
            (wf, idf), (wr, idr) = runs[True, padded], runs[False, padded]
            assert torch.equal(idf, idr) and torch.equal(wf.view(torch.int32), wr.view(torch.int32)), (M, padded)
    plan.clear()


def test_cuda_graph_replay_with_a_pdl_consumer_under_memory_traffic(monkeypatch):
    """A producer (cuBLAS) writes x, route reads it with PDL, and a PDL-launched kernel (router_gemm, x = route's
    bf16 weights) reads route's output right away; captured in a CUDA graph and replayed 2,000 times while
    another stream saturates memory with copies. Every output of every replay is compared with the same calls
    made without PDL, on the kernels a capture takes (eager, route would run a fused kernel). The warm-up is an
    eager call, as a caller's would be: it must load the captured call's kernels too (plan.route's warm)."""
    from cutlass_router import router_gemm

    M, N, K, top_k = 8, 128, 2880, 8
    x, w, b, _ = inputs(M, N, K, seed=5)
    sources = [inputs(M, N, K, seed=100 + i)[0] for i in range(4)]
    consumer_w = (torch.randn(16, top_k, device="cuda") * 0.5).to(BF16)
    with monkeypatch.context() as m:
        m.setattr(ops, "_capturing", lambda: True)
        expected = [route(src_, w, b, top_k, weights_dtype=BF16, pdl=False) for src_ in sources]
    plan.clear()  # the capture's plan must come from the eager warm-up below, not from the calls above
    expected_seen = [router_gemm(e.weights, consumer_w, pdl=False) for e in expected]
    eye = torch.eye(K, device="cuda", dtype=BF16)
    src = torch.empty_like(x)

    def step():
        torch.mm(src, eye, out=x)  # exact: one product per element
        r = route(x, w, b, top_k, weights_dtype=BF16, pdl=True)
        return r, router_gemm(r.weights, consumer_w, pdl=True)

    def wrong(i, captured):
        out, seen = captured
        e = expected[i % 4]
        return (out.ids != e.ids).sum() + (out.weights != e.weights).sum() + (seen != expected_seen[i % 4]).sum()

    # The warm-up (replay_under_memory_traffic's eager first call) loads the captured call's kernels too.
    assert replay_under_memory_traffic(step, lambda i: src.copy_(sources[i % 4]), wrong) == 0


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


@pytest.mark.parametrize("M,N,K", [(1, 32, 2880), (13, 128, 2880), (64, 128, 2880), (3, 256, 7168),
                                   (300, 128, 2880), (1000, 32, 2880)])
@pytest.mark.parametrize("path", ["eager", "graph"])
def test_route_with_pdl_after_a_producer_that_triggers_early(M, N, K, path, request):
    """As test_gpu's twin: x arrives 20 us after route launched (the producer triggers early); route must wait,
    on either path (eager: a fused kernel at decode sizes; the graph's: GEMM + select)."""
    from conftest import early_trigger_copy

    if path == "graph":
        request.getfixturevalue("graph_path")
    copy = early_trigger_copy()
    _, w, b, cb = inputs(M, N, K, seed=3)
    sources = [inputs(M, N, K, seed=30 + i)[0] for i in range(4)]
    kw = dict(scoring="sigmoid", n_group=8, topk_group=4, correction_bias=cb, renormalize=True,
              logit_precision="fp32") if N == 256 else dict(scoring="topk_softmax")
    bias = None if N == 256 else b
    expected = [route(s, w, bias, 4, pdl=False, **kw) for s in sources]
    x = torch.empty_like(sources[0])
    bad = torch.zeros((), dtype=torch.int64, device="cuda")
    for i in range(200):
        x.fill_(float("nan"))
        copy(sources[i % 4], x)
        r = route(x, w, bias, 4, pdl=True, **kw)
        bad += (r.ids != expected[i % 4].ids).sum() + (r.weights != expected[i % 4].weights).sum()
    assert bad.item() == 0


def test_route_runs_the_kernels_not_the_fallback(monkeypatch):
    def no_fallback(*args, **kwargs):
        raise AssertionError("the torch fallback ran")

    monkeypatch.setattr(plan, "torch_route", no_fallback)
    monkeypatch.setattr(plan, "torch_gemm", no_fallback)
    for M, N, K in ((1, 32, 2880), (64, 128, 2880), (4096, 128, 2880), (8, 256, 7168), (8, 384, 2048)):
        x, w, b, cb = inputs(M, N, K, seed=M)
        for kw, with_bias in modes(N, 4):
            run_and_check(x, w, b, cb, 4, dict(kw), with_bias)
