"""Bad input gets an error that names the argument, what it got and what it needs."""
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
