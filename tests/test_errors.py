"""Bad input gets an error that names the argument, what it got and what it needs."""
import re

import pytest
import torch

from cutlass_router import RouterLinear, router_gemm

BF16 = torch.bfloat16
X, W, B = torch.randn(4, 64).to(BF16), torch.randn(16, 64).to(BF16), torch.randn(16).to(BF16)
OP = torch.ops.cutlass_router.router_gemm


@pytest.mark.parametrize("call", [router_gemm, lambda x, w, b, **kw: OP(x, w, b, kw.get("out_dtype"))])
@pytest.mark.parametrize("args,kwargs,exc,pattern", [
    ((X.float(), W, B), {}, TypeError, r"x must be torch.bfloat16, got torch.float32"),
    ((X.half(), W, B), {}, TypeError, r"x must be torch.bfloat16, got torch.float16.*fp16 is not supported"),
    ((X, W.float(), B), {}, TypeError, r"weight must be torch.bfloat16, got torch.float32"),
    ((X, W, B.float()), {}, TypeError, r"bias must be torch.bfloat16, got torch.float32"),
    ((X, W[:, :32], B), {}, ValueError, r"x has hidden size 64 but weight has 32"),
    ((X, W.T.contiguous(), None), {}, ValueError, r"hidden size 64 but weight has 16.*pass weight, not weight.T"),
    ((X, W, B[:8]), {}, ValueError, r"bias must be 1-D of length 16.*got shape \(8,\)"),
    ((X, W, B.view(4, 4)), {}, ValueError, r"bias must be 1-D of length 16"),
    ((X, W[0], B), {}, ValueError, r"weight must be 2-D \[experts, hidden\], got shape \(64,\)"),
    ((X, W, B), {"out_dtype": torch.float16}, TypeError, r"out_dtype must be torch.bfloat16 or torch.float32"),
])
def test_bad_input(call, args, kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call(*args, **kwargs)


def test_op_rejects_3d_x_with_a_hint():
    with pytest.raises(ValueError, match=r"x must be 2-D.*reshape"):
        OP(X.view(2, 2, 64), W, B, None)


def test_zero_dim_x():
    with pytest.raises(ValueError, match="at least 1 dimension"):
        router_gemm(torch.tensor(1.0, dtype=BF16), W, B)


def test_not_a_tensor():
    with pytest.raises(TypeError, match="weight must be a torch.Tensor, got list"):
        router_gemm(X, [[1.0]], B)


def test_meta_device_mismatch():
    with pytest.raises(ValueError, match=r"x is on cpu but weight is on meta"):
        router_gemm(X, W.to("meta"), B)
    with pytest.raises(ValueError, match=r"bias is on meta but x is on cpu"):
        router_gemm(X, W, B.to("meta"))


def test_module_rejects_wrong_hidden_size():
    gate = RouterLinear(64, 16)
    with pytest.raises(ValueError, match="hidden size 32 but weight has 64"):
        gate(torch.randn(3, 32).to(BF16))


def test_empty_batch():
    y = router_gemm(X[:0], W, B)
    assert y.shape == (0, 16) and y.dtype == BF16


# The eager path (the op's body called directly) and the dispatcher path (torch.ops, as under torch.compile or
# autograd) plan through the same function: they accept and reject the same inputs, with the same message.
_BAD_AND_GOOD = [
    (X, W, B, None), (X, W, None, torch.float32), (X[:0], W, B, None),
    (X.float(), W, B, None), (X, W.half(), B, None), (X, W, B.float(), None), (X, W[:, :32], B, None),
    (X, W, B[:8], None), (X, W[0], B, None), (X, W, B, torch.float16), (X, W.to("meta"), B, None),
    (X, W, [1.0], None), (X.view(2, 2, 64), W, B, None),
]


@pytest.mark.parametrize("case", range(len(_BAD_AND_GOOD)))
def test_eager_and_dispatcher_paths_accept_and_reject_the_same_inputs(case, monkeypatch):
    from cutlass_router import ops

    x, w, b, dt = _BAD_AND_GOOD[case]

    def outcome():
        try:
            y = router_gemm(x, w, b, out_dtype=dt)
            return "ok", (y.shape, y.dtype)
        except (TypeError, ValueError, RuntimeError) as e:
            return type(e).__name__, str(e)

    eager = outcome()
    monkeypatch.setattr(ops, "needs_dispatcher", lambda *tensors: True)  # as under torch.compile or autograd
    dispatched = outcome()
    assert dispatched == eager


@pytest.mark.parametrize("name", ["pdl", "batch_invariant"])
@pytest.mark.parametrize("value", ["no", 0, 1, "True", [True]])
def test_switches_take_bool_or_none_only(name, value):
    with pytest.raises(TypeError, match=re.escape(f"{name} must be True, False or None, got {value!r}")):
        router_gemm(X, W, B, **{name: value})


def test_out_with_inputs_that_require_grad_is_refused_at_the_call():
    w = W.clone().requires_grad_()
    with pytest.raises(RuntimeError, match="out= does not support automatic differentiation"):
        router_gemm(X, w, B, out=torch.empty(4, 16, dtype=BF16))
    with torch.no_grad():  # no graph being recorded: out= is fine
        router_gemm(X, w, B, out=torch.empty(4, 16, dtype=BF16))
