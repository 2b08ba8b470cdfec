"""Argument checks shared by the op, its fake, and the module: errors name the argument, what it got, the fix."""
from __future__ import annotations

import torch

SUPPORTED_IN = (torch.bfloat16,)
SUPPORTED_OUT = (torch.bfloat16, torch.float32)


def check_args(x, weight, bias, out_dtype, out=None) -> torch.dtype:
    """Raise TypeError/ValueError on bad input; return the output dtype (bf16 when None)."""
    for name, t in (("x", x), ("weight", weight)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in SUPPORTED_IN:
            raise TypeError(f"{name} must be torch.bfloat16, got {t.dtype}; convert it with {name}.to(torch.bfloat16)"
                            + (" (fp16 is not supported: the router weights of the supported models are bf16)"
                               if t.dtype == torch.float16 else ""))
    if x.dim() != 2:
        raise ValueError(f"x must be 2-D [tokens, hidden], got shape {tuple(x.shape)}; "
                         "flatten leading dims with x.reshape(-1, x.shape[-1]) or call cutlass_router.router_gemm")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D [experts, hidden], got shape {tuple(weight.shape)}")
    if x.shape[1] != weight.shape[1]:
        raise ValueError(f"x has hidden size {x.shape[1]} but weight has {weight.shape[1]} (weight is [experts, hidden]"
                         ", as nn.Linear stores it); pass weight, not weight.T")
    if x.device != weight.device:
        raise ValueError(f"x is on {x.device} but weight is on {weight.device}; move both to one device")
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if bias.dtype not in SUPPORTED_IN:
            raise TypeError(f"bias must be torch.bfloat16, got {bias.dtype}; convert it with bias.to(torch.bfloat16)")
        if bias.dim() != 1 or bias.shape[0] != weight.shape[0]:
            raise ValueError(f"bias must be 1-D of length {weight.shape[0]} (one per expert), got shape "
                             f"{tuple(bias.shape)}")
        if bias.device != x.device:
            raise ValueError(f"bias is on {bias.device} but x is on {x.device}; move both to one device")
    if out_dtype is None:
        out_dtype = torch.bfloat16
    if out_dtype not in SUPPORTED_OUT:
        raise TypeError(f"out_dtype must be torch.bfloat16 or torch.float32, got {out_dtype}")
    if out is not None:
        want = (x.shape[0], weight.shape[0])
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
        if out.dtype != out_dtype:
            raise TypeError(f"out must be {out_dtype}, got {out.dtype}")
        if tuple(out.shape) != want:
            raise ValueError(f"out must have shape {want} ([tokens, experts]), got {tuple(out.shape)}")
        if out.device != x.device:
            raise ValueError(f"out is on {out.device} but x is on {x.device}; allocate out on x's device")
    return out_dtype


def kernel_blocker(x: torch.Tensor, weight: torch.Tensor, bias, out=None) -> str | None:
    """Why the emitted kernels cannot take these (valid) tensors as they are, or None when they can."""
    if out is not None and out.shape[1] > 1 and out.stride(1) != 1:
        return f"out is not contiguous along its last dimension (stride {tuple(out.stride())})"
    M, K = x.shape
    xs0, xs1 = x.stride()
    ws0, ws1 = weight.stride()
    if (K and not K % 8 and xs1 == 1 and ws1 == 1 and (M == 1 or not xs0 % 8) and not ws0 % 8
            and not (x.data_ptr() | weight.data_ptr()) % 16 and (bias is None or bias.stride(0) == 1)):
        return None  # the common case, decided with as few tensor calls as possible
    if K == 0:
        return "K = 0"
    if K % 8:
        return f"K = {K} is not a multiple of 8 (kernel rows are read in 16-byte vectors)"
    for name, t in (("x", x), ("weight", weight)):
        if t.stride(1) != 1:
            return f"{name} is not contiguous along K (stride {tuple(t.stride())})"
        if t.shape[0] > 1 and t.stride(0) % 8:
            return f"{name}'s row stride {t.stride(0)} is not a multiple of 8 elements"
        if t.data_ptr() % 16:
            return f"{name}'s data pointer is not 16-byte aligned"
    if bias is not None and bias.shape[0] > 1 and bias.stride(0) != 1:
        return "bias is not contiguous"
    return None
