"""rms_norm: the router's producer as a kernel that lets the router start before it ends.

A router launched with programmatic dependent launch (route / router_gemm with pdl=True) can overlap the kernel
before it (its launch, its weight loads) only if that kernel lets its dependents launch early; torch's RMSNorm
does not, so after it PDL only costs. `rms_norm` does (templates/rmsnorm.cuh): call it for the router's input
and launch both with PDL. Everything else reads its output as it would F.rms_norm's.

    xn = cutlass_router.rms_norm(h, norm.weight, norm.variance_epsilon, pdl=True)  # == F.rms_norm(h, (K,), w, eps)
    weights, ids, _ = cutlass_router.route(xn, gate.weight, gate.bias, 4, pdl=True)

Why both: a kernel launched with PDL makes the kernel after it pay 0.5-1.5 us per layer when that one is launched
without (the decode-layer loop, H200); a chain of PDL launches does not. In that loop the pair costs 0.3-1.1 us
less per layer than the same norm and route launched plainly (notes/l2/norm_pdl_probe.py).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional

import torch

from . import env, plan, validate
from .families import rmsnorm as family
from .ops import check_switch, needs_dispatcher, refuse_out_with_grad

_grad_enabled = torch.is_grad_enabled


def torch_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The reference and the fallback: fp32 throughout, one rounding to bf16 (F.rms_norm's and gpt-oss's
    arithmetic; norms that round x * rsqrt(...) to bf16 before the weight differ in the last bit)."""
    xf = x.float()
    return (weight.float() * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps))).to(torch.bfloat16)


@lru_cache(maxsize=256)
def kernel_for(device: int, K: int):
    """(loaded kernel, None) for rows of K on this device, or (None, why not)."""
    reason = plan.device_blocker(device)
    if reason:
        return None, reason
    symbol = family.choose(K)
    if symbol is None:
        return None, f"K = {K} is above the RMSNorm kernels' {family.MAX_K}"
    from . import build, launch  # deferred: cuda.bindings is needed only on this path

    try:
        return launch.load(symbol), None
    except (build.BuildError, launch.LaunchError, KeyError, OSError) as e:
        return None, f"kernel {symbol} unavailable: {e}"


def _run(x: torch.Tensor, weight: torch.Tensor, eps: float, out: Optional[torch.Tensor], pdl: bool) -> torch.Tensor:
    """The ops' body on validated tensors of any rank: the kernel, or (CPU, a layout or K it does not take, a
    refused launch) the torch path. Returns out (allocated here when None)."""
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    K = x.shape[-1]
    x2, o2 = x.reshape(-1, K), out.view(-1, K)  # out: rows that flatten (its shape is x's; validate)
    if x2.shape[0] == 0:
        return out
    reason = None
    if x.is_cuda:
        dev = x.get_device()
        reason = f"{env.DISABLE} is set" if env.flag(env.DISABLE) else validate.rms_norm_blocker(x2, weight, o2)
        k = None
        if reason is None:
            k, reason = kernel_for(dev, K)
        if k is not None:
            launch = plan._launch()
            try:
                if dev == plan._current_device():
                    _launch(launch, k, dev, x2, weight, o2, eps, pdl)
                else:
                    with torch.cuda.device(dev):  # a kernel launches into the current device's context
                        _launch(launch, k, dev, x2, weight, o2, eps, pdl)
                return out
            except launch.LaunchError as e:  # nothing was enqueued: torch computes it
                reason = str(e)
        plan.log_once(f"rms_norm: using the torch fallback: {reason}")
    o2.copy_(torch_rms_norm(x2, weight, eps))
    return out


def _launch(launch, k, dev: int, x2, weight, o2, eps: float, pdl: bool) -> None:
    grid = family.pack(launch.params_buffer()[0], x2.data_ptr(), weight.data_ptr(), o2.data_ptr(), x2.stride(0),
                       o2.stride(0), x2.shape[0], x2.shape[1], float(eps))
    launch.launch(k, dev, plan.raw_stream(dev), pdl, grid)


def _pdl(pdl: Optional[bool]) -> bool:
    return env.flag(env.PDL) if pdl is None else pdl


@torch.library.custom_op("cutlass_router::rms_norm", mutates_args=())
def rms_norm_op(x: torch.Tensor, weight: torch.Tensor, eps: float, pdl: Optional[bool] = None) -> torch.Tensor:
    """RMSNorm of x [..., K] (bf16) with weight [K] (bf16), fp32 inside, one rounding; lets its dependents launch
    early."""
    validate.check_rms_norm(x, weight, eps)  # torch.ops callers skip rms_norm()'s checks
    return _run(x, weight, eps, None, _pdl(pdl))


@rms_norm_op.register_fake
def _(x, weight, eps, pdl=None):
    validate.check_rms_norm(x, weight, eps)
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.custom_op("cutlass_router::rms_norm_out", mutates_args=("out",))
def rms_norm_out_op(x: torch.Tensor, weight: torch.Tensor, eps: float, out: torch.Tensor,
                    pdl: Optional[bool] = None) -> None:
    """rms_norm into a preallocated out (x's shape, bf16, rows that flatten to [-1, K]); out may be x."""
    validate.check_rms_norm(x, weight, eps, out)
    validate.refuse_partial_overlap("out", out, x)
    validate.refuse_flat_rows("out", out)
    _run(x, weight, eps, out, _pdl(pdl))


@rms_norm_out_op.register_fake
def _(x, weight, eps, out, pdl=None):
    validate.check_rms_norm(x, weight, eps, out)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, *, out: Optional[torch.Tensor] = None,
             pdl: Optional[bool] = None) -> torch.Tensor:
    """F.rms_norm(x, (K,), weight, eps) for bf16 x [..., K] and weight [K] (fp32 inside, one rounding to bf16),
    as a kernel that lets the next kernel launch at once: a router launched after it with pdl=True overlaps it.

    out=: write into this tensor (x's shape, bf16; x itself for in place) and return it.
    pdl=True launches this kernel itself with PDL: pass it when the next kernel (the router) is launched with PDL
    too (default off, or $CUTLASS_ROUTER_PDL). Where autograd needs a gradient, the torch path runs (differentiable). Kernel limits:
    K % 8 == 0 and K <= 16384, rows contiguous and 16-byte aligned; otherwise the torch path, logged once.
    """
    check_switch("pdl", pdl)
    validate.check_rms_norm(x, weight, eps, out)
    if _grad_enabled() and (x.requires_grad or weight.requires_grad):
        refuse_out_with_grad(out, x, weight)
        return torch_rms_norm(x, weight, eps)
    if out is not None:
        validate.refuse_partial_overlap("out", out, x)
        validate.refuse_flat_rows("out", out)
    if needs_dispatcher(x, weight, out):
        if out is None:
            return torch.ops.cutlass_router.rms_norm(x, weight, float(eps), pdl)
        torch.ops.cutlass_router.rms_norm_out(x, weight, float(eps), out, pdl)
        return out
    return _run(x, weight, eps, out, _pdl(pdl))
