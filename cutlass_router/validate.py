"""Argument checks shared by the op, its fake, and the module: errors name the argument, what it got, the fix."""
from __future__ import annotations

import torch

SUPPORTED_IN = (torch.bfloat16,)
SUPPORTED_OUT = (torch.bfloat16, torch.float32)


def check_args(x, weight, bias, out_dtype, out=None) -> torch.dtype:
    """Raise TypeError/ValueError on bad input; return the output dtype (bf16 when None)."""
    for name, t in (("x", x), ("weight", weight)):
        require_bf16(name, t, " (fp16 is not supported: the router weights of the supported models are bf16)")
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
        refuse_negative_view("out", out)
    return out_dtype


def require_bf16(name: str, t, fp16_hint: str = "") -> None:
    """t must be a bf16 tensor: TypeError naming the argument and the conversion (fp16_hint added for fp16)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in SUPPORTED_IN:
        raise TypeError(f"{name} must be torch.bfloat16, got {t.dtype}; convert it with {name}.to(torch.bfloat16)"
                        + (fp16_hint if t.dtype == torch.float16 else ""))


def refuse_negative_view(name, t) -> None:
    """An output must not be a negative view: a kernel would write its stored values, which read negated, and torch's
    Negative fallback (which materializes the inputs) cannot write through an out= op that returns nothing. Not
    checked while torch.compile traces: dynamo does not support is_neg."""
    if t is not None and not torch.compiler.is_compiling() and t.is_neg():
        raise ValueError(f"{name} must not be a negative view (its stored values read negated); write into a plain "
                         f"tensor and negate that")


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


SCORINGS = ("topk_softmax", "softmax_topk", "sigmoid")
PRECISIONS = ("bf16", "fp32")


def _int(name, value, low, high, why):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}] ({why}), got {value}")


def check_route(x, weight, bias, top_k, scoring, renormalize, n_group, topk_group, correction_bias,
                routed_scaling_factor, logit_precision, logits_dtype, weights_dtype, ids_dtype) -> None:
    """Raise TypeError/ValueError on bad arguments to route(): each error names the argument and the fix."""
    if logits_dtype is not None and logits_dtype not in SUPPORTED_OUT:
        raise TypeError(f"logits_dtype must be torch.bfloat16, torch.float32 or None, got {logits_dtype}")
    check_args(x, weight, bias, logits_dtype)
    N = weight.shape[0]
    if scoring not in SCORINGS:
        raise ValueError(f"scoring must be one of {', '.join(map(repr, SCORINGS))}, got {scoring!r}: "
                         "'topk_softmax' for gpt-oss, 'softmax_topk' for Mixtral/Qwen-MoE, 'sigmoid' for DeepSeek-V3")
    _int("top_k", top_k, 1, max(N, 1), f"at least 1 and at most the {N} experts")
    if renormalize is not True and renormalize is not False:
        raise TypeError(f"renormalize must be True or False, got {renormalize!r}")
    if logit_precision not in PRECISIONS:
        raise ValueError(f"logit_precision must be 'bf16' or 'fp32', got {logit_precision!r}")
    if weights_dtype not in (torch.float32, torch.bfloat16):
        raise TypeError(f"weights_dtype must be torch.float32 or torch.bfloat16, got {weights_dtype}")
    if ids_dtype not in (torch.int32, torch.int64):
        raise TypeError(f"ids_dtype must be torch.int32 or torch.int64, got {ids_dtype}")
    _int("n_group", n_group, 1, max(N, 1), "groups of experts")
    _int("topk_group", topk_group, 1, n_group, "groups kept, at most n_group")
    if scoring != "sigmoid":
        if (n_group, topk_group) != (1, 1) or correction_bias is not None or routed_scaling_factor != 1.0:
            raise ValueError("n_group, topk_group, correction_bias and routed_scaling_factor belong to "
                             "scoring='sigmoid' (DeepSeek-V3); leave them at their defaults for "
                             f"scoring={scoring!r}")
        if scoring == "topk_softmax" and renormalize:
            raise ValueError("renormalize does not apply to scoring='topk_softmax': its softmax over the k "
                             "chosen already sums to 1")
        return
    if N % n_group:
        raise ValueError(f"n_group = {n_group} must divide the {N} experts")
    if n_group > 1 and N // n_group < 2:
        raise ValueError(f"n_group = {n_group} leaves {N // n_group} expert per group: a group's score is the sum of "
                         "its two largest scores (DeepSeek-V3), so groups need at least 2 experts")
    if top_k > topk_group * (N // n_group):
        raise ValueError(f"top_k = {top_k} is more than the {topk_group * (N // n_group)} experts of the "
                         f"{topk_group} groups kept")
    if isinstance(routed_scaling_factor, bool) or not isinstance(routed_scaling_factor, (int, float)) \
            or routed_scaling_factor != routed_scaling_factor or abs(routed_scaling_factor) == float("inf"):
        raise TypeError(f"routed_scaling_factor must be a finite number, got {routed_scaling_factor!r}")
    if correction_bias is not None:
        if not isinstance(correction_bias, torch.Tensor):
            raise TypeError(f"correction_bias must be a torch.Tensor or None, got {type(correction_bias).__name__}")
        if correction_bias.dtype != torch.float32:
            raise TypeError(f"correction_bias must be torch.float32 (as DeepSeek-V3's e_score_correction_bias), "
                            f"got {correction_bias.dtype}; convert it with correction_bias.float()")
        if correction_bias.dim() != 1 or correction_bias.shape[0] != N:
            raise ValueError(f"correction_bias must be 1-D of length {N} (one per expert), got shape "
                             f"{tuple(correction_bias.shape)}")
        if correction_bias.device != x.device:
            raise ValueError(f"correction_bias is on {correction_bias.device} but x is on {x.device}; move both "
                             "to one device")


def check_route_out(x, weight, top_k, weights, ids, logits) -> None:
    """route's out= buffers: the shapes, dtypes and device route would allocate, rows contiguous."""
    M, N = x.shape[0], weight.shape[0]
    for name, t, cols, dtypes in (("weights", weights, top_k, (torch.float32, torch.bfloat16)),
                                  ("ids", ids, top_k, (torch.int32, torch.int64)),
                                  ("logits", logits, N, SUPPORTED_OUT)):
        if t is None:
            if name == "logits":
                continue
            raise TypeError(f"out must hold a {name} tensor")
        if t.dtype not in dtypes:
            raise TypeError(f"out's {name} must be one of {', '.join(map(str, dtypes))}, got {t.dtype}")
        if t.shape != (M, cols):
            raise ValueError(f"out's {name} must have shape {(M, cols)}, got {tuple(t.shape)}")
        if t.device != x.device:
            raise ValueError(f"out's {name} is on {t.device} but x is on {x.device}; allocate it on x's device")
        if cols > 1 and t.stride(1) != 1:
            raise ValueError(f"out's {name} must be contiguous along its last dimension, got strides {t.stride()}")
    if weights.stride(0) != ids.stride(0):
        raise ValueError(f"out's weights and ids must share a row stride (the kernels write both with one), got "
                         f"{weights.stride(0)} and {ids.stride(0)}")


def check_rms_norm(x, weight, eps, out=None) -> None:
    """rms_norm's arguments (x [..., K] bf16, weight [K] bf16, eps >= 0, out like x): raise naming the fix."""
    for name, t in (("x", x), ("weight", weight)):
        require_bf16(name, t)
    if x.dim() == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must be [..., hidden] with hidden >= 1, got shape {tuple(x.shape)}")
    K = x.shape[-1]
    if weight.dim() != 1 or weight.shape[0] != K:
        raise ValueError(f"weight must be 1-D of length {K} (x's hidden size), got shape {tuple(weight.shape)}")
    if weight.device != x.device:
        raise ValueError(f"weight is on {weight.device} but x is on {x.device}; move both to one device")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise TypeError(f"eps must be a float, got {type(eps).__name__}")
    if not 0 <= eps < float("inf"):
        raise ValueError(f"eps must be finite and >= 0 (the model config's rms_norm_eps), got {eps}")
    if out is not None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"out must be a torch.Tensor or None, got {type(out).__name__}")
        if out.dtype != torch.bfloat16:
            raise TypeError(f"out must be torch.bfloat16, got {out.dtype}")
        if out.shape != x.shape:
            raise ValueError(f"out must have x's shape {tuple(x.shape)}, got {tuple(out.shape)}")
        if out.device != x.device:
            raise ValueError(f"out is on {out.device} but x is on {x.device}; allocate out on x's device")
        refuse_negative_view("out", out)


def rms_norm_blocker(x: torch.Tensor, weight: torch.Tensor, out: torch.Tensor) -> str | None:
    """Why the RMSNorm kernels cannot take these (valid, 2-D) tensors as they are, or None when they can."""
    M, K = x.shape
    if K % 8:
        return f"K = {K} is not a multiple of 8 (kernel rows are read in 16-byte vectors)"
    for name, t in (("x", x), ("out", out)):
        if K > 1 and t.stride(1) != 1:
            return f"{name} is not contiguous along its last dimension (strides {tuple(t.stride())})"
        if M > 1 and t.stride(0) % 8:
            return f"{name}'s row stride {t.stride(0)} is not a multiple of 8 elements"
        if t.data_ptr() % 16:
            return f"{name}'s data pointer is not 16-byte aligned"
    if weight.stride(0) != 1 or weight.data_ptr() % 16:
        return "weight is not contiguous and 16-byte aligned"
    return None


def refuse_partial_overlap(name: str, out: torch.Tensor, x: torch.Tensor) -> None:
    """out may be x itself (in place) or apart from it; a kernel writing rows that another CTA still reads would
    race, so a partial overlap is refused."""
    if out.numel() == 0 or x.numel() == 0 or (out.data_ptr() == x.data_ptr() and out.stride() == x.stride()):
        return

    def span(t):
        last = sum((n - 1) * s for n, s in zip(t.shape, t.stride()))
        return t.data_ptr(), t.data_ptr() + (last + 1) * t.element_size()

    (a0, a1), (b0, b1) = span(out), span(x)
    if a0 < b1 and b0 < a1:
        raise ValueError(f"{name} overlaps x without being x; pass out=x (in place) or a separate tensor")


def refuse_flat_rows(name: str, out: torch.Tensor) -> None:
    """out [..., K] must flatten to rows [-1, K] without a copy, and its rows must not overlap each other (an
    expanded tensor): a kernel would write them in any order."""
    K = out.shape[-1]
    try:
        o2 = out.view(-1, K)
    except RuntimeError:
        raise ValueError(f"{name}'s rows must flatten to [-1, {K}] (strides {tuple(out.stride())}); pass a "
                         "contiguous tensor") from None
    # Rows of contiguous elements (the kernels' layout) overlap when their stride is below K; other layouts take
    # the torch path, whose copy_ refuses a tensor with overlapping elements itself.
    if o2.shape[0] > 1 and o2.stride(-1) == 1 and abs(o2.stride(0)) < K:
        raise ValueError(f"{name}'s rows overlap each other (strides {tuple(out.stride())}); pass a tensor whose "
                         "elements are distinct, e.g. torch.empty_like(x)")
