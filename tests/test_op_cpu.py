"""The custom op and module on the CPU path (what CI can run): registration, fake, opcheck, numerics."""
import logging

import pytest
import torch
import torch.nn.functional as F
from conftest import fp64_ref, rel_err

import cutlass_router
from cutlass_router import RouterLinear, plan, router_gemm

BF16 = torch.bfloat16


def rand(*shape, scale=1.0, gen=None):
    return (torch.randn(*shape, generator=gen) * scale).to(BF16)


def test_op_registered():
    assert hasattr(torch.ops.cutlass_router, "router_gemm")
    schema = str(torch.ops.cutlass_router.router_gemm.default._schema)
    assert "Tensor x, Tensor weight, Tensor? bias=None, ScalarType? out_dtype=None, bool? pdl=None, bool? batch_invariant=None" in schema


@pytest.mark.parametrize("M", [0, 1, 3, 7, 13, 127])
@pytest.mark.parametrize("N,K", [(32, 2880), (60, 1000), (128, 264)])
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("out_dtype", [None, torch.float32])
def test_cpu_matches_fp64(M, N, K, with_bias, out_dtype):
    x, w = rand(M, K), rand(N, K, scale=K ** -0.5)
    b = rand(N) if with_bias else None
    y = torch.ops.cutlass_router.router_gemm(x, w, b, out_dtype)
    assert y.shape == (M, N) and y.dtype == (out_dtype or BF16)
    if M:
        err = rel_err(y, fp64_ref(x, w, b))
        assert err < (1e-2 if out_dtype is None else 1e-5), err


def test_fp32_logits_are_not_rounded_to_bf16():
    x, w, b = rand(7, 2880), rand(32, 2880, scale=0.02), rand(32)
    y32 = router_gemm(x, w, b, out_dtype=torch.float32)
    ref = fp64_ref(x, w, b)
    assert rel_err(y32, ref) < 1e-5
    assert rel_err(y32.to(BF16), ref) > rel_err(y32, ref) * 10  # bf16 rounding would be visible


def test_leading_dims_like_f_linear():
    x, w, b = rand(2, 3, 64), rand(16, 64), rand(16)
    y = router_gemm(x, w, b)
    assert y.shape == (2, 3, 16)
    assert rel_err(y, F.linear(x.double(), w.double(), b.double())) < 1e-2
    assert router_gemm(rand(64), w, b).shape == (16,)


def test_opcheck():
    for args in [(rand(5, 64), rand(16, 64), rand(16), None, None),
                 (rand(5, 64), rand(16, 64), None, torch.float32, False, True),
                 (rand(0, 64), rand(16, 64), rand(16), None, None)]:
        torch.library.opcheck(torch.ops.cutlass_router.router_gemm.default, args)


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x, w, b = torch.empty(9, 2880, dtype=BF16), torch.empty(128, 2880, dtype=BF16), torch.empty(128, dtype=BF16)
        y = torch.ops.cutlass_router.router_gemm(x, w, b, torch.float32)
        assert y.shape == (9, 128) and y.dtype == torch.float32
        with pytest.raises(ValueError, match="hidden size"):
            torch.ops.cutlass_router.router_gemm(x, torch.empty(128, 64, dtype=BF16), None, None)


def test_autograd_matches_f_linear():
    x, w, b = (rand(5, 64).requires_grad_(), rand(16, 64).requires_grad_(), rand(16).requires_grad_())
    router_gemm(x, w, b, out_dtype=torch.float32).sum().backward()
    grads = [t.grad.clone() for t in (x, w, b)]
    for t in (x, w, b):
        t.grad = None
    F.linear(x.float(), w.float(), b.float()).sum().backward()
    for g, t in zip(grads, (x, w, b)):
        assert rel_err(g, t.grad) < 1e-2


def test_router_linear_is_a_drop_in_for_nn_linear():
    lin = torch.nn.Linear(64, 16, bias=True, dtype=BF16)
    gate = RouterLinear.from_linear(lin)
    assert gate.weight.data_ptr() != lin.weight.data_ptr()
    x = rand(7, 64)
    with torch.no_grad():
        assert rel_err(gate(x), lin(x).double()) < 1e-2
    fresh = RouterLinear(64, 16)
    fresh.load_state_dict(lin.state_dict())  # same parameter names and shapes as nn.Linear
    assert torch.equal(fresh.weight, lin.weight)
    assert "in_features=64, out_features=16" in repr(fresh)
    assert RouterLinear(64, 16, bias=False).bias is None


def test_public_entry_point_and_op_give_the_same_numbers():
    x, w, b = rand(9, 64), rand(16, 64), rand(16)
    for out_dtype in (None, torch.float32):
        a = cutlass_router.router_gemm(x, w, b, out_dtype=out_dtype)
        c = torch.ops.cutlass_router.router_gemm(x, w, b, out_dtype)
        assert torch.equal(a, c) and a.dtype == (out_dtype or BF16)


def test_fallback_reason_is_logged_once_per_reason(caplog):
    """A GPU fallback says why once per reason, not per call (here through the plan's log, as run_gemm uses it)."""
    plan.log_once.cache_clear()
    with caplog.at_level(logging.WARNING, logger="cutlass_router"):
        for reason in ("reason A", "reason A", "reason B", "reason A"):
            plan.log_once(reason)
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("reason A" in m for m in msgs) == 1 and sum("reason B" in m for m in msgs) == 1
    plan.log_once.cache_clear()


def test_cpu_path_logs_nothing(caplog):
    """On a CPU the torch path is the path, not a fallback: nothing to warn about."""
    plan.log_once.cache_clear()
    with caplog.at_level(logging.DEBUG, logger="cutlass_router"):
        router_gemm(rand(3, 64), rand(16, 64), rand(16))
    assert caplog.records == []


def test_torch_compile_on_cpu_fullgraph_dynamic():
    gate = RouterLinear(64, 16)
    compiled = torch.compile(gate, fullgraph=True, dynamic=True, backend="eager")
    with torch.no_grad():
        for M in (1, 5, 33):
            x = rand(M, 64)
            assert torch.equal(compiled(x), gate(x))


@pytest.mark.parametrize("out_dtype", [BF16, torch.float32])
def test_out_variant(out_dtype):
    x, w, b = rand(7, 64), rand(16, 64), rand(16)
    out = torch.full((7, 16), float("nan"), dtype=out_dtype)
    y = router_gemm(x, w, b, out=out)
    assert y is out
    assert rel_err(out, fp64_ref(x, w, b)) < (1e-2 if out_dtype == BF16 else 1e-5)
    out3 = torch.full((1, 7, 16), float("nan"), dtype=out_dtype)
    assert router_gemm(x.view(1, 7, 64), w, b, out=out3) is out3
    assert torch.equal(out3[0], out)
    torch.ops.cutlass_router.router_gemm_out(x, w, None, out)
    assert rel_err(out, fp64_ref(x, w, None)) < (1e-2 if out_dtype == BF16 else 1e-5)


def test_out_variant_opcheck():
    torch.library.opcheck(torch.ops.cutlass_router.router_gemm_out.default,
                          (rand(5, 64), rand(16, 64), rand(16), torch.empty(5, 16, dtype=torch.float32), None))


def test_out_variant_errors():
    x, w, b = rand(7, 64), rand(16, 64), rand(16)
    with pytest.raises(ValueError, match=r"out must have shape \(7, 16\)"):
        router_gemm(x, w, b, out=torch.empty(7, 8, dtype=BF16))
    with pytest.raises(TypeError, match="out_dtype=torch.float32 but out is torch.bfloat16"):
        router_gemm(x, w, b, out=torch.empty(7, 16, dtype=BF16), out_dtype=torch.float32)
    with pytest.raises(TypeError, match="out_dtype must be torch.bfloat16 or torch.float32"):
        router_gemm(x, w, b, out=torch.empty(7, 16, dtype=torch.float16))
    with pytest.raises(TypeError, match="out must be a torch.Tensor"):
        router_gemm(x, w, b, out=[0.0])
    with pytest.raises(ValueError, match=r"out must have shape \(1, 7\) \+ \(experts,\)"):
        router_gemm(x.view(1, 7, 64), w, b, out=torch.empty(7, 1, 16, dtype=BF16))


def test_batch_invariant_cpu_rows_do_not_depend_on_the_batch(monkeypatch):
    x, w, b = rand(300, 256), rand(32, 256), rand(32)
    full = router_gemm(x, w, b, batch_invariant=True)
    for M in (1, 7, 64):
        assert torch.equal(router_gemm(x[:M], w, b, batch_invariant=True), full[:M])
    other = x.clone()
    other[1:] = rand(299, 256)
    assert torch.equal(router_gemm(other, w, b, batch_invariant=True)[0], full[0])
    monkeypatch.setenv("CUTLASS_ROUTER_BATCH_INVARIANT", "1")
    assert torch.equal(router_gemm(x[:5], w, b), full[:5])


def test_invariant_mode_falls_back_to_the_m1_kernel_not_the_default_ladder(monkeypatch):
    """If a serial kernel cannot load (not shipped, no toolkit), invariant mode must keep the M = 1 kernel's bits:
    it falls back to the invariant ladder's M = 1 kernel, not to the default ladder's (another order)."""
    import types

    from cutlass_router import dispatch, launch, plan

    loaded = []

    def load(symbol):
        loaded.append(symbol)
        if "tiled" in symbol:
            raise OSError("not shipped here")
        return types.SimpleNamespace(entry=None, family=types.SimpleNamespace(blocker=lambda e, M, N: None))

    monkeypatch.setattr(plan, "device_blocker", lambda index: None)
    monkeypatch.setattr(launch, "load", load)
    plan.kernel_for.cache_clear()
    try:
        k, why = plan.kernel_for(0, 128, 2880, 8192, "bf16", True)
        base = dispatch.choose_invariant(128, 2880, 1, "bf16")
        assert why is None and loaded == [dispatch.choose_invariant(128, 2880, 8192, "bf16"), base]
        assert base != dispatch.choose_splitk(128, 1, "bf16")  # the case this guards
    finally:
        plan.kernel_for.cache_clear()
