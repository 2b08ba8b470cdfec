"""The eager fast paths, checked on the CPU (no GPU needed): a plan's kept launch (PlanLaunch) packs and launches
exactly what launch_gemm / the general launch_route would, on the current stream of each call; the router_gemm op's
autograd kernel calls the body directly only for plain dense tensors and redispatches otherwise."""
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from cutlass_router import dispatch, families, ops, plan

BF16 = torch.bfloat16


def rand(*shape):
    return torch.randn(*shape).to(BF16)


@pytest.fixture
def recorded(monkeypatch):
    """Launches recorded instead of made: the foreign call is a Python function that keeps (config address, kernel
    handle, the packed parameter bytes); CPU tensors' device (-1) is the current one; streams come from `stream`."""
    launch = pytest.importorskip("cutlass_router.launch")
    calls, stream = [], [7]

    def call(address, kernel, argv, extra):  # 384 bytes: SplitKTiledParams, tensor maps included
        calls.append((address, kernel, bytes(launch.params_buffer()[0][:384])))
        return 0

    monkeypatch.setattr(launch, "_libcuda_launch", lambda: call)
    monkeypatch.setattr(plan, "_current_device", lambda: -1)
    monkeypatch.setattr(plan, "_raw_stream_of", lambda dev: stream[0])
    monkeypatch.setattr(plan, "sm_count", lambda dev: 132)
    return launch, calls, stream


def fake_kernel(launch, symbol):
    from cutlass_router.manifest import entry

    e = entry(symbol)
    fam = families.of(e.family)
    block, cluster, smem = fam.geometry(e, None)
    k = launch.LoadedKernel(e, fam, None, 0x1234, block, cluster, smem, "fake")
    k.devices.add(-1)  # nothing to set on the "device" of CPU tensors
    return k


@pytest.mark.parametrize("symbol", ["crt_splitk_bf16_w4_c16_e1_t1_u1", "crt_gemv_bf16_r1_m2_v2_t192"])
@pytest.mark.parametrize("with_out", [False, True])
def test_a_gemm_plan_launches_what_launch_gemm_launches(recorded, with_out, symbol):
    launch, calls, stream = recorded
    M, N, K = 3, 40, 64
    x = rand(M, 2 * K)[:, :K]  # a row stride that is not K
    w, b = rand(N, K), rand(N)
    out = torch.empty(M, N + 8, dtype=BF16)[:, :N] if with_out else None
    k = fake_kernel(launch, symbol)
    fast = plan._gemm_launch(k, x, w, out)
    assert fast is not None
    p = plan.GemmPlan(BF16, k, None, False, fast)
    for pdl, s in ((False, 7), (True, 7), (False, 9), (False, 7)):
        stream[0] = s
        y = plan.run_gemm(p, x, w, b, out, pdl)
        assert y.shape == (M, N) and (y is out if with_out else y.is_contiguous())
        fast_call = calls.pop()
        launch.params_buffer()[0][:384] = bytes(384)
        plan.launch_gemm(k, x, w, b, y, pdl)  # the general path, recorded the same way
        assert calls.pop() == fast_call, (pdl, s)
        cfg = next(c for c in k.configs.values() if c.address == fast_call[0])
        # the cluster (none for the GEMV), and PDL when asked
        assert cfg.config.hStream == s and cfg.config.numAttrs == (k.cluster != (1, 1, 1)) + pdl
    assert len(fast.configs) == 3  # one per (stream, PDL) seen


def test_a_refused_gemm_launch_falls_back_to_torch(recorded, monkeypatch, caplog):
    launch, calls, _ = recorded
    monkeypatch.setattr(launch, "_libcuda_launch", lambda: lambda *args: 700)

    def refused(k, err):
        raise launch.LaunchError(f"launch refused for the test ({err})")

    monkeypatch.setattr(launch, "refused", refused)
    x, w, b = rand(2, 64), rand(16, 64), rand(16)
    k = fake_kernel(launch, dispatch.choose(16, 64, 2, "bf16"))
    p = plan.GemmPlan(BF16, k, None, False, plan._gemm_launch(k, x, w, None))
    with caplog.at_level("WARNING", logger="cutlass_router"):
        y = plan.run_gemm(p, x, w, b, None, False)
    assert torch.equal(y, plan.torch_gemm(x, w, b, BF16))
    assert "launch refused for the test (700)" in caplog.text


def test_a_tiled_kernel_keeps_no_launch(recorded, monkeypatch):
    """A tiled kernel's parameters hold the TMA tensor maps of x and W, which embed their addresses: its plan keeps no
    launch, and every call goes through launch_gemm, which encodes both maps for that call's tensors."""
    import ctypes

    from cutlass_router.families import splitk_mma

    launch, calls, _ = recorded
    encoded = []

    def encode(at, dtype, rank, ptr, *rest):  # a stand-in map: the matrix's address, 16 times
        encoded.append(ptr)
        ctypes.memmove(at, ptr.to_bytes(8, "little") * 16, 128)
        return 0

    monkeypatch.setattr(splitk_mma, "_encode_tiled", lambda: encode)
    M, N, K = 512, 128, 2880
    k = fake_kernel(launch, dispatch.choose_invariant(N, K, M, "bf16"))
    assert "smem_bytes" in k.entry.launch  # a tiled kernel
    w, b = rand(N, K), rand(N)
    xs = [torch.empty(M, K, dtype=BF16) for _ in range(2)]
    assert splitk_mma.gemm_pack_fixed(k.entry, M, N, K, K, K, N) is None
    assert plan._gemm_launch(k, xs[0], w, None) is None
    p = plan.GemmPlan(BF16, k, None, True, None)
    for x in xs:
        plan.run_gemm(p, x, w, b, None, False)
    assert encoded == [w.data_ptr(), xs[0].data_ptr(), w.data_ptr(), xs[1].data_ptr()]
    (w0, x0), (w1, x1) = [(c[2][128:256], c[2][256:384]) for c in calls]  # splitk_mma.TILED_MAPS
    assert w0 == w1 and x0 != x1 and x1 == xs[1].data_ptr().to_bytes(8, "little") * 16


@pytest.mark.parametrize("two_kernels", [False, True])
@pytest.mark.parametrize("pdl", [False, True])
def test_a_route_plan_launches_what_the_general_path_launches(recorded, monkeypatch, two_kernels, pdl):
    import dataclasses

    from cutlass_router.families import route as fam

    launch, calls, stream = recorded
    gemms = []
    monkeypatch.setattr(plan, "launch_gemm", lambda k, x_, w_, b_, out, p: gemms.append((k, p, out.data_ptr())))
    M, N, K = 5, 32, 64
    x, w, b = rand(M, K), rand(N, K), rand(N)
    a = ops._args(4, "topk_softmax", False, 1, 1, 1.0, "bf16", BF16, torch.float32, torch.int32)
    symbol = fam.select_symbol(N, "topk_softmax") if two_kernels else dispatch.choose_route(N, K, M)
    k = fake_kernel(launch, symbol)
    assert k.entry.config["select_only"] == two_kernels
    c = fam.route_consts(k.entry, M=M, N=N, K=K, ldx=0 if two_kernels else K, ldw=0 if two_kernels else K,
                         top_k=4, mode=0, flags=plan.route_flags(a), n_group=1, topk_group=1, scale=1.0)
    gemm = plan.GemmPlan(BF16, "the gemm kernel", None, False) if two_kernels else None
    fast = plan.PlanLaunch(k, -1, c.grid, launch, c.cluster, c.block)
    p = plan.RoutePlan(a, k, gemm, None, False, c, fast)
    weights, ids, logits = torch.empty(M, 4), torch.empty(M, 4, dtype=torch.int32), torch.empty(M, N, dtype=BF16)
    for s in (7, 9):
        stream[0] = s
        plan.launch_route(p, x, w, b, None, weights, ids, logits, pdl)
        plan.launch_route(dataclasses.replace(p, fast=None), x, w, b, None, weights, ids, logits, pdl)
        general = calls.pop()
        assert calls.pop() == general
        cfg = next(c for c in k.configs.values() if c.address == general[0])
        assert cfg.config.hStream == s
        assert (cfg.config.numAttrs == 2) == (pdl or two_kernels)  # the select kernel always follows with PDL
    assert len(gemms) == (4 if two_kernels else 0)


def test_the_autograd_kernel_calls_the_body_only_for_plain_tensors(monkeypatch):
    """Plain dense tensors: the autograd kernel runs the body itself (no redispatch). Anything that a kernel below
    autograd must see first (a TorchDispatchMode, a negative view, functionalization) goes through the redispatch,
    and every result is the one the body gives."""
    callers = []
    real = ops._gemm

    def spy(*args):
        callers.append(sys._getframe(1).f_code.co_name)
        return real(*args)

    monkeypatch.setattr(ops, "_gemm", spy)
    x, w, b = rand(3, 64), rand(16, 64), rand(16)
    ref = plan.torch_gemm(x, w, b, BF16)
    op = torch.ops.cutlass_router.router_gemm

    assert torch.equal(op(x, w, b), ref) and callers[-1] == "_router_gemm_autograd"
    with torch.inference_mode():  # no autograd keys: the dispatcher calls the body, as before
        assert torch.equal(op(x, w, b), ref) and callers[-1] == "_router_gemm_body"
    with torch.no_grad():
        assert torch.equal(op(x, torch.nn.Parameter(w), b), ref) and callers[-1] == "_router_gemm_autograd"

    class Seen(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(func)
            return func(*args, **(kwargs or {}))

    with Seen() as mode:
        assert torch.equal(op(x, w, b), ref)
    assert op.default in mode.ops and callers[-1] == "_router_gemm_body"

    neg = (-x)._neg_view()  # reads as x; the Negative fallback materializes it before the body
    assert torch.equal(op(neg, w, b), ref) and callers[-1] == "_router_gemm_body"

    before = len(callers)  # functionalization unwraps, then calls the op again on plain tensors: one body call
    y = torch.func.functionalize(lambda t: op(t, w, b))(x)
    assert torch.equal(y, ref) and len(callers) == before + 1

    wg = w.clone().requires_grad_()
    y = op(x, wg, b, torch.float32)
    y.sum().backward()
    assert torch.allclose(wg.grad.float(), F.linear(torch.ones(16, 3), x.float().t()).to(BF16).float())


def test_negative_views_go_through_the_dispatcher(monkeypatch):
    """A negative view stores the un-negated values, which a kernel would read (or write) at its pointer: the direct
    eager path leaves it to the dispatcher, whose Negative fallback materializes it, so the ops' bodies (where the
    kernels launch) never see one. On the CPU the torch path reads views correctly either way: hence the spy."""
    import cutlass_router as cr

    def tensors(args):
        for a in args:
            if isinstance(a, (tuple, list)):
                yield from tensors(a)
            elif isinstance(a, torch.Tensor):
                yield a

    negs = []
    for name in ("_gemm", "_route"):
        def spy(*args, real=getattr(ops, name)):
            negs.append(any(t.is_neg() for t in tensors(args)))
            return real(*args)

        monkeypatch.setattr(ops, name, spy)
    x, w, b = rand(3, 64), rand(16, 64), rand(16)
    for xs, ws in (((-x)._neg_view(), w), (x, (-w)._neg_view())):  # read as x and w, store -x or -w
        xm, wm = xs.resolve_neg(), ws.resolve_neg()
        ref = F.linear(xm.float(), wm.float(), b.float())
        for grad in (True, False):
            with torch.set_grad_enabled(grad):
                assert ops.needs_dispatcher(xs, ws, b, None)
                y = cr.router_gemm(xs, ws, b)
                assert torch.equal(y, cr.router_gemm(xm, wm, b))
                assert torch.allclose(y.float(), ref, atol=1e-2, rtol=1e-2)
                r = cr.route(xs, ws, b, 4, return_logits=True)
                rm = cr.route(xm, wm, b, 4, return_logits=True)
                assert all(torch.equal(u, v) for u, v in zip(r, rm))
                assert torch.allclose(r.logits.float(), ref, atol=1e-2, rtol=1e-2)
    assert negs and not any(negs)
    out = torch.zeros(3, 16, dtype=BF16)._neg_view()  # a kernel would write what it stores: refused, say why
    assert ops.needs_dispatcher(x, w, b, out)
    with pytest.raises(ValueError, match="out must not be a negative view"):
        cr.router_gemm(x, w, b, out=out)
    with pytest.raises(ValueError, match="out's ids must not be a negative view"):
        cr.route(x, w, b, 4, out=(torch.empty(3, 4), torch.empty(3, 4, dtype=torch.int32)._neg_view()))
    with pytest.raises(TypeError, match="bfloat16"):  # a conjugate view is complex: refused either way
        cr.router_gemm(torch.randn(3, 64, dtype=torch.complex64).conj(), w, b)


def test_out_is_checked_for_negative_views_only_in_eager_mode():
    """Dynamo does not trace Tensor.is_neg: out= under torch.compile(fullgraph=True) skips that check."""
    import cutlass_router as cr

    x, w, b = rand(5, 64), rand(16, 64), rand(16)
    gemm = torch.compile(lambda t, o: cr.router_gemm(t, w, b, out=o), fullgraph=True, backend="eager")
    route = torch.compile(lambda t, o: cr.route(t, w, b, 4, out=o), fullgraph=True, backend="eager")
    with torch.no_grad():
        assert torch.equal(gemm(x, torch.empty(5, 16, dtype=BF16)), cr.router_gemm(x, w, b))
        got, want = route(x, (torch.empty(5, 4), torch.empty(5, 4, dtype=torch.int32))), cr.route(x, w, b, 4)
    assert torch.equal(got.weights, want.weights) and torch.equal(got.ids, want.ids)


@pytest.mark.parametrize("strided_logits", [False, True])
def test_route_s_gemm_takes_its_plan_s_kept_launch(recorded, monkeypatch, strided_logits):
    """GEMM + select: the GEMM goes through the GEMM plan's kept launch, packing what launch_gemm would; where the
    logits it writes have another row stride than the plan's contiguous output, through launch_gemm itself."""
    from cutlass_router.families import route as fam

    launch, calls, stream = recorded
    general = plan.launch_gemm
    used = []
    monkeypatch.setattr(plan, "launch_gemm", lambda *args: used.append(args[-2].stride(0)) or general(*args))
    M, N, K = 3, 32, 64
    x, w, b = rand(M, K), rand(N, K), rand(N)
    a = ops._args(4, "topk_softmax", False, 1, 1, 1.0, "bf16", torch.float32, torch.float32, torch.int32)
    gk = fake_kernel(launch, "crt_gemv_f32_r1_m2_v2_t192")
    gemm = plan.GemmPlan(torch.float32, gk, None, False, plan._gemm_launch(gk, x, w, None))
    sk = fake_kernel(launch, fam.select_symbol(N, "topk_softmax"))
    c = fam.route_consts(sk.entry, M=M, N=N, K=K, ldx=0, ldw=0, top_k=4, mode=0, flags=plan.route_flags(a, True),
                         n_group=1, topk_group=1, scale=1.0)
    p = plan.RoutePlan(a, sk, gemm, None, False, c, plan.PlanLaunch(sk, -1, c.grid, launch, c.cluster, c.block))
    logits = torch.empty(M, N + 8)[:, :N] if strided_logits else torch.empty(M, N)
    weights, ids = torch.empty(M, 4), torch.empty(M, 4, dtype=torch.int32)
    launch.params_buffer()[0][:384] = bytes(384)  # recorded bytes past the parameters: the same on both paths
    plan.launch_route(p, x, w, b, None, weights, ids, logits, False)
    assert used == ([N + 8] if strided_logits else [])
    gemm_call = calls[0]
    launch.params_buffer()[0][:384] = bytes(384)
    general(gk, x, w, b, logits, False)  # what the general path launches for the same output
    assert calls[-1] == gemm_call
    assert len(calls) == 3  # the GEMM, the select kernel, the comparison
