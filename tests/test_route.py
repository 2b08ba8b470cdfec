"""route() on the CPU path (what CI can run): the op, its fake, opcheck, torch.compile, out=, errors."""
import json
import re

import pytest
import torch

import cutlass_router
from cutlass_router import ops, route
from cutlass_router.routing_ref import route_reference

BF16 = torch.bfloat16
DS = dict(scoring="sigmoid", n_group=4, topk_group=2, renormalize=True, routed_scaling_factor=2.5,
          logit_precision="fp32")


def rand(*shape, scale=1.0, seed=0):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale).to(BF16)


def inputs(M=7, N=32, K=64):
    return rand(M, K, seed=1), rand(N, K, scale=K ** -0.5, seed=2), rand(N, seed=3)


@pytest.mark.parametrize("kw", [dict(), dict(scoring="softmax_topk"), dict(scoring="softmax_topk", renormalize=True),
                                DS, dict(logit_precision="fp32")])
def test_route_is_the_reference_in_the_asked_dtypes(kw):
    x, w, b = inputs()
    cb = torch.randn(32) if kw.get("scoring") == "sigmoid" else None
    bias = None if kw.get("scoring") == "sigmoid" else b
    r = route(x, w, bias, 4, correction_bias=cb, return_logits=True, **kw)
    ref_w, ref_i, ref_l = route_reference(x, w, bias, 4, correction_bias=cb, **kw)
    assert r.weights.dtype == torch.float32 and r.ids.dtype == torch.int32 and r.logits.dtype == BF16
    assert torch.equal(r.ids.long(), ref_i) and torch.equal(r.weights, ref_w)
    assert torch.equal(r.logits, ref_l.to(BF16))
    r2 = route(x, w, bias, 4, correction_bias=cb, weights_dtype=BF16, ids_dtype=torch.int64, **kw)
    assert r2.logits is None and r2.ids.dtype == torch.int64 and r2.weights.dtype == BF16
    assert torch.equal(r2.ids, ref_i) and torch.equal(r2.weights, ref_w.to(BF16))


def test_leading_dims_and_empty_batch():
    x, w, b = inputs(6)
    r = route(x.view(2, 3, 64), w, b, 2, return_logits=True)
    assert r.weights.shape == (2, 3, 2) and r.ids.shape == (2, 3, 2) and r.logits.shape == (2, 3, 32)
    assert torch.equal(r.ids.view(6, 2), route(x, w, b, 2).ids)
    e = route(x[:0], w, b, 4)
    assert e.weights.shape == (0, 4) and e.ids.shape == (0, 4)


def test_opcheck_route_and_route_out():
    x, w, b = inputs(5)
    base = (x, w, b, 4, "topk_softmax", False, 1, 1, None, 1.0, "bf16")
    torch.library.opcheck(torch.ops.cutlass_router.route.default, base + (None, torch.float32, torch.int32))
    torch.library.opcheck(torch.ops.cutlass_router.route.default, base + (torch.float32, BF16, torch.int64))
    torch.library.opcheck(torch.ops.cutlass_router.route.default,
                          (x, w, None, 3, "sigmoid", True, 4, 2, torch.randn(32), 2.5, "fp32", None, torch.float32,
                           torch.int32))
    out = (torch.empty(5, 4), torch.empty(5, 4, dtype=torch.int32), torch.empty(5, 32, dtype=BF16))
    torch.library.opcheck(torch.ops.cutlass_router.route_out.default, base + out)
    torch.library.opcheck(torch.ops.cutlass_router.route_out.default, base + out[:2] + (None,))


def test_torch_compile_fullgraph_dynamic():
    x, w, b = inputs(33)

    def gate(t):
        r = route(t, w, b, 4)
        return r.weights, r.ids

    compiled = torch.compile(gate, fullgraph=True, dynamic=True, backend="eager")
    for M in (1, 5, 33):
        got, want = compiled(x[:M]), gate(x[:M])
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_out_variant_writes_in_place():
    x, w, b = inputs(7)
    weights, ids = torch.full((7, 4), float("nan")), torch.full((7, 4), -1, dtype=torch.int32)
    logits = torch.full((7, 32), float("nan"))
    r = route(x, w, b, 4, out=(weights, ids, logits))
    assert r.weights is weights and r.ids is ids and r.logits is logits
    want = route(x, w, b, 4, logits_dtype=torch.float32)
    assert torch.equal(weights, want.weights) and torch.equal(ids, want.ids) and torch.equal(logits, want.logits)
    w3, i3 = torch.empty(1, 7, 4), torch.empty(1, 7, 4, dtype=torch.int64)
    route(x.view(1, 7, 64), w, b, 4, out=(w3, i3))
    assert torch.equal(i3[0], want.ids.long())


@pytest.mark.parametrize("kwargs,exc,pattern", [
    (dict(top_k=0), ValueError, "top_k must be in [1, 32]"),
    (dict(top_k=33), ValueError, "top_k must be in [1, 32]"),
    (dict(top_k=2.0), TypeError, "top_k must be an int"),
    (dict(scoring="softmax"), ValueError, "scoring must be one of"),
    (dict(logit_precision="fp16"), ValueError, "logit_precision must be 'bf16' or 'fp32'"),
    (dict(weights_dtype=torch.float16), TypeError, "weights_dtype must be torch.float32 or torch.bfloat16"),
    (dict(ids_dtype=torch.int16), TypeError, "ids_dtype must be torch.int32 or torch.int64"),
    (dict(logits_dtype=torch.float16), TypeError, "logits_dtype must be"),
    (dict(renormalize=1, scoring="softmax_topk"), TypeError, "renormalize must be True or False"),
    (dict(renormalize=True), ValueError, "renormalize does not apply to scoring='topk_softmax'"),
    (dict(n_group=4, topk_group=2), ValueError, "belong to scoring='sigmoid'"),
    (dict(scoring="sigmoid", n_group=5), ValueError, "n_group = 5 must divide the 32 experts"),
    (dict(scoring="sigmoid", n_group=4, topk_group=5), ValueError, "topk_group must be in [1, 4]"),
    (dict(scoring="sigmoid", n_group=8, topk_group=1, top_k=5), ValueError, "top_k = 5 is more than the 4"),
    (dict(scoring="sigmoid", correction_bias=torch.zeros(32, dtype=BF16)), TypeError, "correction_bias must be torch.float32"),
    (dict(scoring="sigmoid", correction_bias=torch.zeros(16)), ValueError, "correction_bias must be 1-D of length 32"),
    (dict(scoring="sigmoid", routed_scaling_factor=float("nan")), TypeError, "routed_scaling_factor must be a finite"),
    (dict(pdl="yes"), TypeError, "pdl must be True, False or None"),
    (dict(batch_invariant=1), TypeError, "batch_invariant must be True, False or None"),
    (dict(out=(torch.empty(7, 3), torch.empty(7, 4, dtype=torch.int32))), ValueError, "out's weights must have shape (7, 4)"),
    (dict(out=(torch.empty(7, 4), torch.empty(7, 4))), TypeError, "out's ids must be one of"),
    (dict(out=(torch.empty(7, 4),)), TypeError, "out must be a tuple (weights, ids)"),
])
def test_bad_arguments_name_the_argument(kwargs, exc, pattern):
    x, w, b = inputs(7)
    kw = dict(kwargs)
    top_k = kw.pop("top_k", 4)
    bias = None if kw.get("scoring") == "sigmoid" else b
    with pytest.raises(exc, match=re.escape(pattern)):
        route(x, w, bias, top_k, **kw)


@pytest.mark.parametrize("good, bad, pattern", [
    (dict(top_k=2), dict(top_k=2.0), "top_k must be an int"),
    (dict(top_k=2, scoring="softmax_topk", renormalize=True),
     dict(top_k=2, scoring="softmax_topk", renormalize=1), "renormalize must be True or False"),
])
def test_a_cached_call_does_not_admit_an_equal_value_of_the_wrong_type(good, bad, pattern):
    # 2.0 == 2 and 1 == True: the argument and plan caches must not take one for the other
    x, w, b = inputs(7)
    route(x, w, b, **good)
    with pytest.raises(TypeError, match=re.escape(pattern)):
        route(x, w, b, **bad)


def test_x_and_weight_errors_are_router_gemm_s():
    x, w, b = inputs(7)
    with pytest.raises(TypeError, match="x must be torch.bfloat16"):
        route(x.float(), w, b, 4)
    with pytest.raises(ValueError, match="pass weight, not weight.T"):
        route(x, w.T.contiguous(), None, 4)


def test_eager_and_dispatcher_paths_agree(monkeypatch):
    x, w, b = inputs(9)
    eager = route(x, w, b, 4, return_logits=True)
    monkeypatch.setattr(ops, "needs_dispatcher", lambda *tensors: True)
    dispatched = route(x, w, b, 4, return_logits=True)
    assert all(torch.equal(p, q) for p, q in zip(eager, dispatched))
    with pytest.raises(ValueError, match="top_k must be in"):
        route(x, w, b, 40)


def test_public_name():
    assert cutlass_router.route is route and cutlass_router.RouteResult._fields == ("weights", "ids", "logits")


def test_a_model_s_parameters_take_the_fast_path_under_no_grad():
    """A gate's weight is an nn.Parameter: under no_grad (generate, serving) route and router_gemm must not go
    through the dispatcher (the custom op's Python round trip, a full argument check per call); with autograd on
    and a weight that requires grad they must (the backward), and other tensor subclasses always do."""
    from torch.profiler import ProfilerActivity, profile

    from cutlass_router import ops, router_gemm

    x = torch.randn(3, 64, dtype=torch.bfloat16)
    w = torch.nn.Parameter(torch.randn(16, 64, dtype=torch.bfloat16))
    b = torch.nn.Parameter(torch.randn(16, dtype=torch.bfloat16))

    def dispatched(fn) -> set:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
        return {e.name for e in prof.events() if e.name.startswith("cutlass_router::")}

    with torch.no_grad():
        assert not ops.needs_dispatcher(x, w, b)
        assert dispatched(lambda: route(x, w, b, 4)) == set()
        assert dispatched(lambda: router_gemm(x, w, b)) == set()
    assert ops.needs_dispatcher(x, w, b)
    assert dispatched(lambda: route(x, w.detach(), b.detach(), 4)) == set()
    assert "cutlass_router::router_gemm" in dispatched(lambda: router_gemm(x, w, b))

    class Sub(torch.Tensor):
        pass

    with torch.no_grad():
        assert ops.needs_dispatcher(x, w.detach().as_subclass(Sub), None)


@pytest.mark.parametrize("pdl", [False, True])
def test_the_select_kernel_follows_the_gemm_with_pdl_whatever_pdl_says(monkeypatch, pdl):
    """The two-kernel path: the GEMM launches as the caller asked, the select kernel always with PDL (it waits for
    the logits with griddepcontrol.wait, and the overlap is its point); the fused kernel launches as asked. The
    launches are recorded instead of made (no GPU needed); what is packed for the select kernel is checked too."""
    import types

    from cutlass_router import plan
    from cutlass_router.families import route as fam
    from cutlass_router.manifest import entries

    x, w, b = inputs(5, 32, 64)
    launched, gemms, buf = [], [], bytearray(fam.PARAMS.size)
    fake = types.SimpleNamespace(params_buffer=lambda: (buf, 0, None),
                                 launch=lambda k, dev, stream, p, grid, cluster, block=None:
                                 launched.append((k, p, grid, block)),
                                 LaunchError=RuntimeError)
    monkeypatch.setattr(plan, "_launch", lambda: fake)
    monkeypatch.setattr(plan, "_current_device", lambda: x.get_device())
    monkeypatch.setattr(plan, "raw_stream", lambda dev: 0)
    monkeypatch.setattr(plan, "launch_gemm",
                        lambda k, x_, w_, b_, out, p: gemms.append((k, p, out.dtype, out.data_ptr())))
    a = ops._args(4, "topk_softmax", False, 1, 1, 1.0, "bf16", None, torch.float32, torch.int32)
    for symbol in ("crt_route_select_topk_softmax_p1", next(s for s in entries() if s.startswith("crt_route_w"))):
        e = entries()[symbol]
        k = types.SimpleNamespace(entry=e, family=fam)
        select = e.config["select_only"]
        gemm = plan.GemmPlan(torch.bfloat16, "the gemm kernel", None, False) if select else None
        c = fam.route_consts(e, M=5, N=32, K=64, ldx=0 if select else 64, ldw=0 if select else 64, top_k=4,
                             mode=0, flags=0, n_group=1, topk_group=1, scale=1.0)
        p = plan.RoutePlan(a, k, gemm, None, False, c)
        launched.clear(), gemms.clear()
        weights, ids = torch.empty(5, 4), torch.empty(5, 4, dtype=torch.int32)
        plan.launch_route(p, x, w, b, None, weights, ids, None, pdl)
        assert launched == [(k, True if select else pdl, c.grid, c.block)], symbol
        assert [g[:3] for g in gemms] == ([("the gemm kernel", pdl, torch.bfloat16)] if select else []), symbol
        # RouteParams: x, w, bias, sel_bias, logits_in, logits, weights, ids; ldx, ldw, ldi, ldl, ldk; M, N, K, ...
        v = fam.PARAMS.unpack(bytes(buf))
        inputs_ = (0, 0, 0, 0, gemms[0][3], 0) if select else (x.data_ptr(), w.data_ptr(), b.data_ptr(), 0, 0, 0)
        assert v[:8] == inputs_ + (weights.data_ptr(), ids.data_ptr()), symbol
        assert v[8:13] == ((0, 0, 32, 0, 4) if select else (64, 64, 0, 0, 4)), symbol
        assert v[13:17] == (5, 32, 64, 4), symbol


def test_each_router_has_a_select_kernel_that_holds_every_n():
    """The two-kernel path's warp-per-row select kernel is instantiated per router and slot count: for every N the
    kernels take, the one chosen is that router's, holds N experts (32 lanes x slots), is the smallest that does,
    and ships."""
    from cutlass_router import dispatch
    from cutlass_router.families import route as fam
    from cutlass_router.manifest import entries

    reachable, emitted = dispatch.reachable(), entries()
    for scoring in fam.MODES:
        for N in range(1, fam.MAX_N + 1):
            symbol = fam.warp_select_symbol(N, scoring)
            e = emitted[symbol]
            assert e.config["select_only"] and e.config["mode"] == scoring, (symbol, N)
            slots = e.config["slots"]
            assert 32 * slots >= N and fam.blocker(e, 1, N) is None, (symbol, N)
            assert all(32 * s < N for s in fam.SLOTS if s < slots), (symbol, N)
            assert symbol in reachable, symbol
            assert f"route_select_mode<{fam.MODES[scoring]}, {slots}>" in fam.RouteSpec(**e.config).emit()
    assert fam.blocker(emitted[fam.warp_select_symbol(32, "sigmoid")], 1, 33)  # more experts than it holds


def test_the_sigmoid_router_takes_the_row_per_cta_kernel_where_its_groups_allow():
    """select_symbol: the sigmoid router's row-per-CTA kernel up to BLOCK_MAX_M rows where each group of N / n_group
    experts stays inside a warp or is whole warps (DeepSeek-V3: 8 groups of 32), else the warp-per-row kernel; the
    softmax routers always the warp-per-row one. The block kernel ships, takes every N to 384, and launches 32 ceil(N / 32) threads per
    row."""
    from cutlass_router import dispatch
    from cutlass_router.families import route as fam
    from cutlass_router.manifest import entries

    block = fam.BLOCK_SPEC.symbol
    assert block in dispatch.reachable() and "route_select_block(params)" in fam.BLOCK_SPEC.emit()
    assert fam.select_symbol(256, "sigmoid", 8, fam.BLOCK_MAX_M + 1) == fam.warp_select_symbol(256, "sigmoid")
    assert fam.select_symbol(256, "sigmoid", 8) == block and fam.select_symbol(384, "sigmoid", 1) == block
    assert fam.select_symbol(64, "sigmoid", 4) == block  # groups of 16: inside a warp
    assert fam.select_symbol(256, "sigmoid", 4) == block  # groups of 64: two warps each
    assert fam.select_symbol(96, "sigmoid", 2) == fam.warp_select_symbol(96, "sigmoid")  # groups of 48
    assert fam.select_symbol(60, "sigmoid", 4) == fam.warp_select_symbol(60, "sigmoid")  # groups of 15
    for scoring in ("topk_softmax", "softmax_topk"):
        assert fam.select_symbol(256, scoring, 8) == fam.warp_select_symbol(256, scoring)
    e = entries()[block]
    for M, N in ((1, 256), (13, 33), (4096, 384), (2, 8)):
        assert fam.blocker(e, M, N) is None
        c = fam.route_consts(e, M=M, N=N, K=0, ldx=0, ldw=0, top_k=8, mode=2, flags=0, n_group=1, topk_group=1,
                             scale=1.0)
        assert c.grid == (M, 1, 1) and c.block == 32 * -(-N // 32) <= e.launch["block_threads"]
    assert fam.blocker(e, 1, 385)
    with pytest.raises(ValueError):
        fam.RouteSpec(select_only=True, mode="topk_softmax", slots=12, block=True)
    with pytest.raises(ValueError):
        fam.RouteSpec(select_only=True, mode="sigmoid", slots=8, block=True)


@pytest.mark.parametrize("scoring,M,N,rows", [("sigmoid", 1, 256, 1), ("sigmoid", 13, 32, 1), ("sigmoid", 256, 256, 1),
                                              ("sigmoid", 257, 256, 8), ("sigmoid", 4096, 256, 8),
                                              ("topk_softmax", 1, 32, 8), ("softmax_topk", 13, 64, 8),
                                              ("topk_softmax", 1, 128, 1), ("topk_softmax", 256, 128, 1),
                                              ("softmax_topk", 257, 384, 8)])
def test_a_select_launch_s_cta_shape_follows_the_router_and_m(scoring, M, N, rows):
    """The warp-per-row select kernel reads its rows per CTA from blockDim: one row per 32-thread CTA for long rows
    (sigmoid, or more than 64 experts) at decode sizes, 8 per 256-thread CTA otherwise; the grid covers every row."""
    from cutlass_router.families import route as fam
    from cutlass_router.manifest import entries

    e = entries()[fam.warp_select_symbol(N, scoring)]
    assert fam.select_rows(scoring, M, N) == rows
    c = fam.route_consts(e, M=M, N=N, K=0, ldx=0, ldw=0, top_k=8, mode=fam.MODES[scoring], flags=0, n_group=8,
                         topk_group=4, scale=1.0)
    assert c.block == 32 * rows and c.grid == (-(-M // rows), 1, 1) and c.block <= e.launch["block_threads"]
    fused = entries()[next(s for s in entries() if s.startswith("crt_route_w"))]
    cf = fam.route_consts(fused, M=M, N=32, K=64, ldx=64, ldw=64, top_k=4, mode=0, flags=0, n_group=1,
                          topk_group=1, scale=1.0)
    assert cf.block == fused.launch["block_threads"]


@pytest.mark.parametrize("kw", [dict(mode="sigmoid", slots=4), dict(select_only=True, mode="top2", slots=4),
                                dict(select_only=True, mode="sigmoid", slots=3),
                                dict(select_only=True, mode="sigmoid"), dict(select_only=True)])
def test_a_select_spec_names_a_router_and_a_slot_count(kw):
    from cutlass_router.families.route import RouteSpec

    with pytest.raises(ValueError, match="mode must be one of"):
        RouteSpec(**kw)


def test_each_known_model_s_choice_has_its_own_select_kernel():
    """fixed_specs: one select kernel per models.py choice, emitted, reachable and shipped-by-manifest, emitting
    route_select_fixed with that choice's sizes; select_symbol takes it for exactly that choice (router, N, groups,
    top_k) at every M, and another kernel for any other choice; a fixed kernel refuses another N."""
    from cutlass_router import dispatch
    from cutlass_router.families import route as fam
    from cutlass_router.manifest import entries
    from cutlass_router.models import MODELS

    specs = fam.fixed_specs()
    reachable, emitted = dispatch.reachable(), entries()
    assert {"crt_route_select_topk_softmax_n32_k4", "crt_route_select_topk_softmax_n128_k4",
            "crt_route_select_sigmoid_n256_g8_tg4_k8", "crt_route_select_sigmoid_n384_k8"} <= {s.symbol for s in specs}
    for choice in fam.FIXED_CHOICES:  # the Hugging Face patch's other families
        symbol = fam.fixed_symbol(*choice[1:2], choice[0], *choice[2:])
        assert symbol in reachable and symbol in emitted and emitted[symbol].config["n"] == choice[1], choice
    for m in MODELS.values():
        r = m.route
        groups, tg = (r.get("n_group", 1), r.get("topk_group", 1)) if r["scoring"] == "sigmoid" else (1, 1)
        symbol = fam.fixed_symbol(m.experts, r["scoring"], groups, tg, m.top_k)
        spec = next(s for s in specs if s.symbol == symbol)
        assert symbol in reachable and symbol in emitted, symbol
        e = emitted[symbol]
        assert e.config["fixed"] and e.config["select_only"] and e.config["mode"] == r["scoring"]
        assert f"route_select_fixed<{fam.MODES[r['scoring']]}, {m.experts}, {groups}, {tg}, {m.top_k}>" in spec.emit()
        # the arguments test_route_gpu.py's test of these kernels derives from a spec are this model's own
        assert spec.route_args().items() <= r.items() and m.bias == (r["scoring"] != "sigmoid")
        assert r.get("renormalize", False) == (r["scoring"] != "topk_softmax")
        if r["scoring"] == "sigmoid":
            assert r["routed_scaling_factor"] == 2.5 and r["logit_precision"] == "fp32"
        M = fam.BLOCK_MAX_M + 1
        assert fam.select_symbol(m.experts, r["scoring"], groups, M, tg, m.top_k) == symbol
        assert fam.blocker(e, 4096, m.experts) is None and fam.blocker(e, 1, m.experts - 1)
        # another top_k, N or group shape: the runtime-sized kernel
        other = fam.warp_select_symbol(m.experts, r["scoring"])
        assert fam.select_symbol(m.experts, r["scoring"], groups, M, tg, m.top_k - 1) == other
        assert fam.select_symbol(m.experts, r["scoring"], groups, M, tg) == other  # top_k not given
        c = fam.route_consts(e, M=M, N=m.experts, K=0, ldx=0, ldw=0, top_k=m.top_k, mode=fam.MODES[r["scoring"]],
                             flags=0, n_group=groups, topk_group=tg, scale=1.0)
        rows = fam.select_rows(r["scoring"], M, m.experts)
        assert c.block == 32 * rows <= e.launch["block_threads"] and c.grid == (-(-M // rows), 1, 1)
    assert fam.select_symbol(256, "sigmoid", 8, fam.BLOCK_MAX_M + 1, 2, 8) == fam.warp_select_symbol(256, "sigmoid")
    # a softmax router ignores the group arguments: gpt-oss's kernel whatever n_group says
    assert fam.select_symbol(32, "topk_softmax", 4, 300, 2, 4) == "crt_route_select_topk_softmax_n32_k4"
    # DeepSeek-V3 at decode sizes too: its own kernel before the row-per-CTA one, which other choices keep
    assert fam.select_symbol(256, "sigmoid", 8, 1, 4, 8) == "crt_route_select_sigmoid_n256_g8_tg4_k8"
    assert fam.select_symbol(256, "sigmoid", 8, 1, 4, 6) == fam.BLOCK_SPEC.symbol


@pytest.mark.parametrize("kw", [dict(mode="top2", n=32, top_k=4), dict(mode="sigmoid", n=0, top_k=1),
                                dict(mode="sigmoid", n=385, top_k=8), dict(mode="topk_softmax", n=4, top_k=5),
                                dict(mode="topk_softmax", n=32, top_k=9), dict(mode="topk_softmax", n=32, groups=2,
                                                                               top_k=4),
                                dict(mode="sigmoid", n=256, groups=3, top_k=8),
                                dict(mode="sigmoid", n=256, groups=8, topk_group=9, top_k=8),
                                dict(mode="sigmoid", n=100, groups=4, topk_group=2, top_k=8)])
def test_a_fixed_select_spec_refuses_a_choice_the_kernels_cannot_make(kw):
    from cutlass_router.families.route import FixedSelectSpec

    with pytest.raises(ValueError, match="a fixed select kernel needs"):
        FixedSelectSpec(**kw)


def test_a_cuda_call_outside_graph_capture_asks_for_one_launch(monkeypatch):
    """Eager (and torch.compile without graphs) the host's cost bounds a decode-size call: route asks for a fused
    kernel there; inside CUDA-graph capture it takes the tuned table's choice unless out= asks for no allocation.
    Only an eager call whose capture would plan otherwise warms the capture's plan (not an allocation-free out=).
    A CPU tensor never asks (the torch path), and capture is not even queried for it."""
    import types

    from cutlass_router import ops

    a = ops._args(4, "topk_softmax", False, 1, 1, 1.0, "bf16", None, torch.float32, torch.int32)
    cuda, cpu = types.SimpleNamespace(is_cuda=True), types.SimpleNamespace(is_cuda=False)
    outs = (None, (torch.empty(1), torch.empty(1), None), (torch.empty(1), torch.empty(1), torch.empty(1)))
    for capturing in (False, True):
        monkeypatch.setattr(ops, "_capturing", lambda: capturing)
        assert [ops._one_launch(cuda, a, o) for o in outs] == \
            [(not capturing, not capturing), (True, False), (not capturing, not capturing)]
    monkeypatch.setattr(ops, "_capturing", lambda: 1 / 0)
    assert [ops._one_launch(cpu, a, o) for o in outs] == [(False, False), (True, False), (False, False)]


def test_an_eager_call_also_plans_what_a_capture_of_it_takes(monkeypatch):
    """An eager call's plan (one launch) is not the one a CUDA-graph capture of the same call takes (the tuned
    table's): on its first call route makes both, so that the capture's kernels load eagerly, outside capture,
    as callers who warm up before capturing expect. A capture (or out=) call makes only its own."""
    from cutlass_router import plan

    x, w, b = torch.randn(3, 64).bfloat16(), torch.randn(8, 64).bfloat16(), torch.randn(8).bfloat16()
    a = ops._args(2, "topk_softmax", False, 1, 1, 1.0, "bf16", None, torch.float32, torch.int32)
    made = []
    real = plan._make_route
    monkeypatch.setattr(plan, "_make_route", lambda *args, **kw: made.append(kw.get("one_launch")) or real(*args, **kw))
    plan.clear()
    plan.route(x, w, b, None, a, False, one_launch=True, warm=True)
    plan.route(x, w, b, None, a, False, one_launch=True, warm=True)  # cached: nothing made
    plan.route(x, w, b, None, a, False, one_launch=False)            # the capture's: made above
    assert made == [True, False]
    plan.clear()
    plan.route(x, w, b, None, a, False, one_launch=True)             # out= under capture: its own plan only
    assert made == [True, False, True]
    plan.clear()


def test_out_without_a_logits_buffer_asks_for_a_fused_kernel_at_decode_sizes(monkeypatch):
    """route(out=...) allocates nothing at decode sizes: where the tuned table runs GEMM + select (whose logits need
    a buffer), a call whose out brings none for the GEMM's dtype gets a fused kernel instead."""
    import cutlass_router as cr
    from cutlass_router import dispatch, plan

    N, K = 128, 2880
    # a decode size where the table (tuned/sm_90a.json) says GEMM + select
    M = next(m for m in range(1, dispatch._ROUTE_FUSED_MAX_M + 1)
             if dispatch.choose_route(N, K, m) == dispatch.GEMM_THEN_SELECT)
    fused = dispatch.choose_route(N, K, M, one_launch=True)
    assert fused != dispatch.GEMM_THEN_SELECT and fused in dispatch.reachable()
    assert dispatch.choose_route(N, K, 1000, one_launch=True) == dispatch.GEMM_THEN_SELECT  # above decode sizes
    seen = []
    real = plan.route
    monkeypatch.setattr(plan, "route", lambda *a, **kw: seen.append(kw.get("one_launch")) or real(*a, **kw))
    x, w, b = torch.randn(3, 64).bfloat16(), torch.randn(8, 64).bfloat16(), torch.randn(8).bfloat16()
    w_, i_ = torch.empty(3, 2), torch.empty(3, 2, dtype=torch.int32)
    cr.route(x, w, b, 2)
    cr.route(x, w, b, 2, out=(w_, i_))
    cr.route(x, w, b, 2, out=(w_, i_, torch.empty(3, 8, dtype=torch.bfloat16)))  # the GEMM writes there
    cr.route(x, w, b, 2, logit_precision="fp32", out=(w_, i_, torch.empty(3, 8, dtype=torch.bfloat16)))  # not fp32
    cr.route(x, w, b, 2, logit_precision="fp32", out=(w_, i_, torch.empty(3, 8)))
    assert seen == [False, True, False, True, False]


def test_gemv_route_spec_launch_and_limits():
    """The GEMV route kernels launch as the fused ones do (a cluster of ceil(N / rows) CTAs per token tile) and take
    N up to 16 rows; their spec refuses what the template cannot run."""
    from cutlass_router.families import route as fam
    from cutlass_router.manifest import entries

    e = entries()["crt_route_gemv_r2_m2_v1_t384"]
    assert fam.blocker(e, 5, 32) is None and "at most 32 experts" in fam.blocker(e, 5, 33)
    assert fam.grid(e, 5, 7) == ((4, 3, 1), (4, 1, 1))
    c = fam.route_consts(e, M=5, N=2, K=64, ldx=64, ldw=64, top_k=2, mode=0, flags=0, n_group=1, topk_group=1,
                         scale=1.0)
    assert c.grid == (1, 3, 1) and c.cluster == (1, 1, 1) and c.block == 384
    assert fam.geometry(e) == (384, (16, 1, 1), 0)
    assert "route_gemv<2, 2, 1, 384>" in fam.RouteGemvSpec(2, 2, 1, 384).emit()
    for bad in (dict(rows=25), dict(threads=100), dict(rows=2, tokens=200, threads=256), dict(vecs=0)):
        with pytest.raises(ValueError):
            fam.RouteGemvSpec(**bad)


def test_route_pdl_default_comes_from_the_table_unless_the_caller_or_the_environment_says(monkeypatch, tmp_path):
    """pdl per rung: the tuner keeps a choice timed with PDL as {"pdl": true}; a call with pdl=None and
    CUTLASS_ROUTER_PDL unset launches as the plan's rung says; the variable, then the argument, override it."""
    from cutlass_router import dispatch, env, plan, tune

    table = {1: {"k_a": 3.0, "k_a" + tune.WITH_PDL: 2.5, "gemm+select": 4.0},
             8: {"k_a": 3.1, "k_a" + tune.WITH_PDL: 3.15},  # without PDL, within TIE: still the previous rung's
             64: {"k_a": 3.0, "k_a" + tune.WITH_PDL: 4.0, "gemm+select": 2.0}}
    rungs = tune.route_rungs(table)
    assert rungs == [{"max_m": 8, "kernel": "k_a", "pdl": True}, {"max_m": 1 << 62, "kernel": "gemm+select"}]
    monkeypatch.setattr(tune.torch.cuda, "get_device_name", lambda *a: "card")
    tune.write_table(tmp_path / "t.json", 40, 96, table, "tune --what route", section="route")
    rec = json.loads((tmp_path / "t.json").read_text())["route"][0]
    assert rec["rungs"] == rungs and rec["pdl"] == "per rung" and rec["us"]["1"]["k_a+pdl"] == 2.5
    ladder = tuple(dispatch.RouteRung(**r) for r in rungs)
    monkeypatch.setattr(dispatch, "tuned_route_table", lambda arch=None: {(40, 96): ladder})
    assert dispatch.route_rung(40, 96, 8) == dispatch.RouteRung(8, "k_a", True)
    assert dispatch.route_rung(40, 96, 9).pdl is False and dispatch.choose_route(40, 96, 9) == "gemm+select"
    one = dispatch.route_rung(40, 96, 9, one_launch=True)  # the untuned fused kernel: launched without PDL
    assert one.kernel != "gemm+select" and one.pdl is False

    launched = []
    monkeypatch.setattr(plan, "launch_route", lambda p, *a: launched.append(a[-1]))
    x, w = torch.randn(2, 64).bfloat16(), torch.randn(8, 64).bfloat16()
    a = ops._args(2, "topk_softmax", False, 1, 1, 1.0, "bf16", None, torch.float32, torch.int32)
    for tuned in (True, False):
        p = plan.RoutePlan(a, object(), None, None, pdl=tuned)
        plan.run_route(p, x, w, None, None, None, None)
        plan.run_route(p, x, w, None, None, None, not tuned)
        assert launched[-2:] == [tuned, not tuned]

    given = []
    monkeypatch.setattr(plan, "run_route", lambda p, x, w, b, cb, out, pdl: given.append(pdl) or (None,) * 3)
    monkeypatch.delenv(env.PDL, raising=False)
    ops._route(x, w, None, None, a, None, None, None)
    monkeypatch.setenv(env.PDL, "yes")
    ops._route(x, w, None, None, a, None, None, None)
    ops._route(x, w, None, None, a, None, False, None)
    monkeypatch.setenv(env.PDL, "off")
    ops._route(x, w, None, None, a, None, None, None)
    monkeypatch.setenv(env.PDL, "sometimes")  # not a switch word: warns, and the table decides
    ops._route(x, w, None, None, a, None, None, None)
    assert given == [None, True, False, False, None]
    with pytest.raises(TypeError, match="pdl"):
        ops._route(x, w, None, None, a, None, "no", None)


def test_an_untuned_shape_takes_a_fused_kernel_only_where_w_is_small():
    """dispatch.default_route_ladder: one cluster streaming all of W is slower than router_gemm + the select kernel
    once W passes _ROUTE_FUSED_MAX_W (notes/l2/untuned_default.py), so an untuned shape takes the fused kernel at
    decode sizes only for a small W; a call outside graph capture (one launch) keeps its fused kernel."""
    from cutlass_router import dispatch

    G = dispatch.GEMM_THEN_SELECT
    small = dispatch.route_ladder(8, 4096)  # Mixtral: 64 KB
    assert small[0].kernel != G and small[0].max_m == dispatch._ROUTE_FUSED_MAX_M and small[-1].kernel == G
    for N, K in ((384, 7168), (128, 4096), (128, 2048)):  # Kimi-K2, Qwen3-235B, Qwen3-30B: 5.5 MB to 512 KiB
        assert (N, K) not in dispatch.tuned_route_table()
        assert 2 * N * K > dispatch._ROUTE_FUSED_MAX_W
        assert dispatch.route_ladder(N, K) == (dispatch.RouteRung(1 << 62, G),)
        assert dispatch.choose_route(N, K, 1) == G
        assert dispatch.choose_route(N, K, 1, one_launch=True) != G  # eager: one launch
    assert dispatch.default_route_ladder(384)[0].kernel != G  # K unknown: the fused kernel
