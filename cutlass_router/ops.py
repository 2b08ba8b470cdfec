"""The torch custom op `cutlass_router::router_gemm`: emitted kernels on Hopper, a correct fallback elsewhere."""
from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Optional

import torch
import torch.nn.functional as F

from . import dispatch, validate

logger = logging.getLogger("cutlass_router")
ENV_DISABLE = "CUTLASS_ROUTER_DISABLE"  # 1: never run the emitted kernels
ENV_PDL = "CUTLASS_ROUTER_PDL"          # 0: launch without programmatic dependent launch
ENV_INVARIANT = "CUTLASS_ROUTER_BATCH_INVARIANT"  # 1: row results independent of M and of the other rows
_DTYPE_NAME = {torch.bfloat16: "bf16", torch.float32: "f32"}


@lru_cache(maxsize=None)
def _log_once(message: str) -> None:
    logger.warning("cutlass_router: %s", message)


def pdl_default() -> bool:
    return os.environ.get(ENV_PDL, "1") not in ("0", "false", "off")


def invariant_default() -> bool:
    return os.environ.get(ENV_INVARIANT, "0") not in ("0", "false", "off", "")


def _disabled() -> bool:
    return os.environ.get(ENV_DISABLE, "0") not in ("0", "")


@lru_cache(maxsize=None)
def _device_blocker(index: int) -> str | None:
    major, minor = torch.cuda.get_device_capability(index)
    if (major, minor) != (9, 0):
        return f"GPU {index} is sm_{major}{minor}; the emitted kernels are sm_90a (Hopper) only"
    return None


@lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _raw_stream(device: int) -> int:
    get = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # the cheap path Triton and Inductor use
    return get(device) if get is not None else torch.cuda.current_stream(device).cuda_stream


def reference(x, weight, bias, out_dtype, invariant=False):
    """fp32-accumulated x @ weight.T + bias in out_dtype, through torch: the CPU path and the fallback.

    invariant: one row at a time, so that a row's bits cannot depend on how many rows there are (torch picks
    its GEMM algorithm by shape); slow, and only used when batch invariance is asked for off the kernel path.
    """
    if invariant and x.shape[0] > 1:
        return torch.cat([reference(x[i:i + 1], weight, bias, out_dtype) for i in range(x.shape[0])])
    if out_dtype == torch.bfloat16 and x.is_cuda:
        return F.linear(x, weight, bias)  # cuBLAS accumulates bf16 GEMMs in fp32
    y = F.linear(x.float(), weight.float(), None if bias is None else bias.float())
    return y.to(out_dtype)


@lru_cache(maxsize=4096)
def _plan(device: int, N: int, K: int, M: int, dt: str, invariant: bool = False):
    """(loaded kernel, None) for this shape on this device, or (None, why not). Cached: shapes repeat.

    invariant: the kernel chosen for M = 1 serves every M. A split-K kernel's per-element arithmetic (its K
    split and summation order) is fixed by its configuration and K, so one kernel for all M makes each row's
    result independent of the batch.
    """
    reason = _device_blocker(device)
    if reason:
        return None, reason
    from . import build, launch  # deferred: cuda.bindings is needed only on this path

    symbol = dispatch.choose(N, K, 1 if invariant else M, dt)
    try:
        k = launch.load(symbol)
    except (build.BuildError, launch.LaunchError, KeyError, OSError) as e:
        # A CUTLASS kernel's host library may not load here (another platform, glibc < 2.34) nor build (no nvcc);
        # the split-K ladder needs none. Try it next.
        fallback = dispatch.choose_splitk(N, 1 if invariant else M, dt)
        if fallback == symbol:
            return None, f"kernel {symbol} unavailable: {e}"
        _log_once(f"kernel {symbol} unavailable ({e}); using {fallback}")
        try:
            k = launch.load(fallback)
        except (build.BuildError, launch.LaunchError, KeyError, OSError) as e2:
            return None, f"kernels {symbol} and {fallback} unavailable: {e2}"
    if k.host is None and launch.grid_for(k, M, N)[1] > dispatch.MAX_GRID_Y:
        return None, f"M = {M} exceeds the grid limit of {k.entry.symbol}"
    return k, None


def _launch(k, x, weight, bias, out, pdl):
    from .launch import launch

    dev = x.device.index
    if dev != torch.cuda.current_device():  # a CUkernel launches into the current context
        with torch.cuda.device(dev):
            return _launch(k, x, weight, bias, out, pdl)
    launch(k, dev, _raw_stream(dev), pdl_default() if pdl is None else pdl, _sm_count(dev),
           x.data_ptr(), weight.data_ptr(), 0 if bias is None else bias.data_ptr(), out.data_ptr(),
           x.shape[0], weight.shape[0], x.shape[1], x.stride(0), weight.stride(0), out.stride(0))


def _launch_or_fallback(k, x, weight, bias, out, out_dtype, pdl, invariant=False):
    """Launch; if the driver or CUTLASS refuses this call (nothing was enqueued), compute it through torch."""
    from .launch import LaunchError

    try:
        _launch(k, x, weight, bias, out, pdl)
        return out
    except LaunchError as e:
        return _fallback(x, weight, bias, out_dtype, out, str(e), invariant)


def _fallback(x, weight, bias, out_dtype, out, reason, invariant=False):
    _log_once(f"using the torch fallback: {reason}")
    y = reference(x, weight, bias, out_dtype, invariant)
    return y if out is None else out.copy_(y)


def _run_cuda(x, weight, bias, out_dtype, pdl, out=None, invariant=False):
    M, K = x.shape
    N = weight.shape[0]
    if out is None:
        out = torch.empty((M, N), dtype=out_dtype, device=x.device)
    if M == 0 or N == 0:
        return out
    reason = "CUTLASS_ROUTER_DISABLE is set" if _disabled() else validate.kernel_blocker(x, weight, bias, out)
    k = None
    if reason is None:
        k, reason = _plan(x.device.index, N, K, M, _DTYPE_NAME[out_dtype], invariant)
    if k is None:
        return _fallback(x, weight, bias, out_dtype, out, reason, invariant)
    return _launch_or_fallback(k, x, weight, bias, out, out_dtype, pdl, invariant)


_current_device = getattr(torch._C, "_cuda_getDevice", None) or torch.cuda.current_device


def _try_fast(x, weight, bias, out_dtype, pdl, out=None, invariant=False):
    """The common eager case decided in one pass, each tensor attribute read once: supported dtypes and layouts
    on one sm90 device. Returns the output, or None when anything is unusual, and the checked path then raises
    or falls back. Every condition here is one that validate.check_args or validate.kernel_blocker verifies;
    in eager mode the Python around a launch costs more than the kernel, hence this path.
    """
    if out_dtype is None or out_dtype is torch.bfloat16:
        out_dtype, dt = torch.bfloat16, "bf16"
    elif out_dtype is torch.float32:
        dt = "f32"
    else:
        return None
    if x.dtype is not torch.bfloat16 or weight.dtype is not torch.bfloat16 or x.ndim != 2 or weight.ndim != 2:
        return None
    M, K = x.shape
    N, K_w = weight.shape
    dev = x.get_device()
    if K != K_w or dev < 0 or weight.get_device() != dev or M == 0 or N == 0 or K % 8:
        return None
    bp = 0
    if bias is not None:
        if (not isinstance(bias, torch.Tensor) or bias.dtype is not torch.bfloat16 or bias.ndim != 1
                or bias.shape[0] != N or bias.get_device() != dev or bias.stride(0) != 1):
            return None
        bp = bias.data_ptr()
    xs0, xs1 = x.stride()
    ws0, ws1 = weight.stride()
    xp, wp = x.data_ptr(), weight.data_ptr()
    if xs1 != 1 or ws1 != 1 or (xs0 % 8 and M > 1) or ws0 % 8 or (xp | wp) % 16 or _disabled():
        return None
    if out is not None and (out.dtype is not out_dtype or out.shape != (M, N) or out.get_device() != dev
                            or out.stride(1) != 1):
        return None
    k, _ = _plan(dev, N, K, M, dt, invariant)
    if k is None or dev != _current_device():
        return None
    from .launch import LaunchError, launch

    if out is None:
        out = torch.empty((M, N), dtype=out_dtype, device=dev)
    try:
        launch(k, dev, _raw_stream(dev), pdl_default() if pdl is None else pdl, _sm_count(dev),
               xp, wp, bp, out.data_ptr(), M, N, K, xs0, ws0, out.stride(0))
    except LaunchError as e:
        return _fallback(x, weight, bias, out_dtype, out, str(e), invariant)
    return out


def _impl(x, weight, bias, out_dtype, pdl, out=None, invariant=None):
    out_dtype = validate.check_args(x, weight, bias, out_dtype, out)
    invariant = invariant_default() if invariant is None else invariant
    if x.is_cuda:
        return _run_cuda(x, weight, bias, out_dtype, pdl, out, invariant)
    y = reference(x, weight, bias, out_dtype, invariant)
    return y if out is None else out.copy_(y)


def run_kernel(symbol: str, x, weight, bias=None, out_dtype=torch.bfloat16, pdl: Optional[bool] = None,
               out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Run one named kernel of the manifest, bypassing dispatch (for tests, tuning and benchmarks)."""
    from . import launch

    out_dtype = validate.check_args(x, weight, bias, out_dtype)
    reason = _device_blocker(x.device.index) or validate.kernel_blocker(x, weight, bias)
    if reason:
        raise ValueError(f"kernel {symbol} cannot run these inputs: {reason}")
    if out is None:
        out = torch.empty((x.shape[0], weight.shape[0]), dtype=out_dtype, device=x.device)
    k = launch.load(symbol)
    if k.entry.out_dtype != _DTYPE_NAME[out_dtype]:
        raise ValueError(f"kernel {symbol} writes {k.entry.out_dtype}, not {out_dtype}")
    n_multiple = k.entry.launch.get("n_multiple", 1)
    if weight.shape[0] % n_multiple:
        raise ValueError(f"kernel {symbol} needs N a multiple of {n_multiple}, got {weight.shape[0]}")
    if out.numel():
        _launch(k, x, weight, bias, out, pdl)
    return out


@torch.library.custom_op("cutlass_router::router_gemm", mutates_args=())
def router_gemm_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                   out_dtype: Optional[torch.dtype] = None, pdl: Optional[bool] = None,
                   batch_invariant: Optional[bool] = None) -> torch.Tensor:
    """x [M, K] @ weight[N, K].T + bias[N], fp32 accumulation, in out_dtype (bf16 by default)."""
    return _impl(x, weight, bias, out_dtype, pdl, None, batch_invariant)


@router_gemm_op.register_fake
def _(x, weight, bias=None, out_dtype=None, pdl=None, batch_invariant=None):
    out_dtype = validate.check_args(x, weight, bias, out_dtype)
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=out_dtype)


@torch.library.custom_op("cutlass_router::router_gemm_out", mutates_args=("out",))
def router_gemm_out_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], out: torch.Tensor,
                       pdl: Optional[bool] = None, batch_invariant: Optional[bool] = None) -> None:
    """router_gemm into a preallocated out [M, N] (bf16 or fp32, rows contiguous): allocates nothing."""
    _impl(x, weight, bias, out.dtype, pdl, out, batch_invariant)


@router_gemm_out_op.register_fake
def _(x, weight, bias, out, pdl=None, batch_invariant=None):
    validate.check_args(x, weight, bias, out.dtype, out)


def _setup_context(ctx, inputs, output):
    x, weight, bias = inputs[:3]
    ctx.save_for_backward(x, weight)
    ctx.has_bias = bias is not None


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    g = grad.float()
    gx = (g @ weight.float()).to(x.dtype) if ctx.needs_input_grad[0] else None
    gw = (g.t() @ x.float()).to(weight.dtype) if ctx.needs_input_grad[1] else None
    gb = g.sum(0).to(weight.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return gx, gw, gb, None, None, None


router_gemm_op.register_autograd(_backward, setup_context=_setup_context)


def _eager_ok(x, weight, bias) -> bool:
    """Plain tensors, nothing to differentiate, not tracing: the op's body can run without the dispatcher."""
    if type(x) is not torch.Tensor or type(weight) is not torch.Tensor or torch.compiler.is_compiling():
        return False
    if bias is not None and type(bias) is not torch.Tensor:
        return False
    return not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                             or (bias is not None and bias.requires_grad)))


def router_gemm(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, *,
                out_dtype: Optional[torch.dtype] = None, pdl: Optional[bool] = None,
                out: Optional[torch.Tensor] = None, batch_invariant: Optional[bool] = None) -> torch.Tensor:
    """Same result as F.linear(x, weight, bias) (fp32 accumulation), x of any rank >= 1.

    out_dtype=torch.float32 returns the logits straight from the fp32 accumulator, without bf16 rounding.
    out=: write into this preallocated tensor (shape x.shape[:-1] + (N,), bf16 or fp32) and return it.
    pdl=False launches without programmatic dependent launch (default: on, or $CUTLASS_ROUTER_PDL).
    batch_invariant=True makes row i's bits independent of M and of the other rows (default: off, or
    $CUTLASS_ROUTER_BATCH_INVARIANT): one kernel serves every M, slower at large M.
    In eager mode on plain tensors the op's body is called directly: the dispatcher's Python round trip costs
    more than the kernel. Under torch.compile, autograd or tensor subclasses it goes through torch.ops.
    """
    if out is not None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"out must be a torch.Tensor or None, got {type(out).__name__}")
        if out_dtype is not None and out_dtype != out.dtype:
            raise TypeError(f"out_dtype={out_dtype} but out is {out.dtype}; pass one or make them agree")
        out_dtype = out.dtype
    if isinstance(x, torch.Tensor) and x.ndim != 2:
        if x.ndim == 0:
            raise ValueError("x must have at least 1 dimension (the hidden size), got a 0-d tensor")
        lead = x.shape[:-1]
        if out is not None and tuple(out.shape[:-1]) != tuple(lead):
            raise ValueError(f"out must have shape {tuple(lead)} + (experts,), got {tuple(out.shape)}")
        flat_out = None if out is None else out.view(-1, out.shape[-1])
        y = router_gemm(x.reshape(-1, x.shape[-1]), weight, bias, out_dtype=out_dtype, pdl=pdl, out=flat_out,
                        batch_invariant=batch_invariant)
        return out if out is not None else y.reshape(*lead, y.shape[-1])
    if _eager_ok(x, weight, bias) and (out is None or type(out) is torch.Tensor):
        if x.is_cuda:
            inv = invariant_default() if batch_invariant is None else batch_invariant
            y = _try_fast(x, weight, bias, out_dtype, pdl, out, inv)
            if y is not None:
                return y
        return _impl(x, weight, bias, out_dtype, pdl, out, batch_invariant)
    validate.check_args(x, weight, bias, out_dtype, out)  # the dispatcher's own type errors name no fix
    if out is not None:
        torch.ops.cutlass_router.router_gemm_out(x, weight, bias, out, pdl, batch_invariant)
        return out
    return torch.ops.cutlass_router.router_gemm(x, weight, bias, out_dtype, pdl, batch_invariant)
