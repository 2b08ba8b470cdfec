"""The torch custom ops `cutlass_router::router_gemm`, `route` (and their out= variants), and the Python entry
points router_gemm() and route().

Every path plans through plan.gemm (arguments checked once per call signature, kernel chosen and loaded) and
runs through plan.run_gemm: the eager fast path calls the op's body directly; torch.compile, autograd and tensor
subclasses go through the dispatcher.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from . import env, plan, validate

# Bound once: each is called on every eager call, and a module attribute lookup costs a dict lookup per dot.
_flag, _setting, _PDL, _BATCH_INVARIANT = env.flag, env.setting, env.PDL, env.BATCH_INVARIANT
_is_compiling = torch.compiler.is_compiling  # the same function object: dynamo still folds it to True
_grad_enabled = torch.is_grad_enabled


def check_switch(name: str, value) -> None:
    """A per-call switch is True, False or None (the environment's default); anything else is a TypeError, so
    that pdl='no' cannot turn PDL on."""
    if value is not None and value is not True and value is not False:
        raise TypeError(f"{name} must be True, False or None, got {value!r}")


def switch(name: str, value, env_name: str) -> bool:
    """The switch's value for this call: as given, or the environment's default for None."""
    check_switch(name, value)
    return env.flag(env_name) if value is None else value


def _switches(pdl, batch_invariant, read_pdl=_flag):
    """(pdl, batch_invariant) of this call: switch() for both, inlined for None, True and False (one call per op
    call instead of two); any other value goes to check_switch, which raises. read_pdl reads CUTLASS_ROUTER_PDL for
    pdl=None: env.flag (router_gemm: the default where unset), or env.setting (route: None where unset, the plan's
    tuned choice)."""
    if pdl is None:
        pdl = read_pdl(_PDL)
    elif pdl is not True and pdl is not False:
        check_switch("pdl", pdl)
    if batch_invariant is None:
        batch_invariant = _flag(_BATCH_INVARIANT)
    elif batch_invariant is not True and batch_invariant is not False:
        check_switch("batch_invariant", batch_invariant)
    return pdl, batch_invariant


def _gemm(x, weight, bias, out_dtype, out, pdl, batch_invariant):
    """The ops' body: plan (cached), then the kernel or the torch path."""
    pdl, batch_invariant = _switches(pdl, batch_invariant)
    return plan.run_gemm(plan.gemm(x, weight, bias, out_dtype, out, batch_invariant), x, weight, bias, out, pdl)


def run_kernel(symbol: str, x, weight, bias=None, out_dtype=torch.bfloat16, pdl: Optional[bool] = None,
               out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Run one named kernel of the manifest, bypassing dispatch (for tests, tuning and benchmarks)."""
    from . import families, launch, manifest

    out_dtype = validate.check_args(x, weight, bias, out_dtype, out)
    e = manifest.entry(symbol)
    fam = families.of(e.family)
    if not hasattr(fam, "pack_gemm"):
        raise ValueError(f"kernel {symbol} is not a GEMM kernel (family {e.family}); run_kernel runs the GEMM families")
    reason = plan.device_blocker(x.device.index) or validate.kernel_blocker(x, weight, bias, out)
    if reason:
        raise ValueError(f"kernel {symbol} cannot run these inputs: {reason}")
    # Refused before loading: a kernel that is neither shipped nor cached would be compiled first (a minute, or a
    # ToolkitNotFound where there is no nvcc) only to say that it cannot take this shape.
    if e.out_dtype != plan._DTYPE_NAME[out_dtype]:
        raise ValueError(f"kernel {symbol} writes {e.out_dtype}, not {out_dtype}")
    why = fam.blocker(e, x.shape[0], weight.shape[0])
    if why:
        raise ValueError(why)
    k = launch.load(symbol)
    if out is None:
        out = x.new_empty((x.shape[0], weight.shape[0]), dtype=out_dtype)
    if out.numel():
        plan.launch_gemm(k, x, weight, bias, out, switch("pdl", pdl, env.PDL))
    return out


# router_gemm is the op engines call once per layer, so it is defined the way vLLM defines its ops, without the
# custom_op wrapper (which adds a Python autograd layer with a pytree walk, a dynamo-disable frame and an output
# alias check to every call): the schema, the body for every backend below autograd, a fake, and our own autograd
# kernel, which redispatches below autograd at once when nothing needs a gradient.
_lib = torch.library.Library("cutlass_router", "FRAGMENT")
_lib.define("router_gemm(Tensor x, Tensor weight, Tensor? bias=None, ScalarType? out_dtype=None, bool? pdl=None, "
            "bool? batch_invariant=None) -> Tensor")


def _router_gemm_body(x, weight, bias=None, out_dtype=None, pdl=None, batch_invariant=None):
    """x [M, K] @ weight[N, K].T + bias[N], fp32 accumulation, in out_dtype (bf16 by default)."""
    return _gemm(x, weight, bias, out_dtype, None, pdl, batch_invariant)


_lib.impl("router_gemm", _router_gemm_body, "CompositeExplicitAutograd")


@torch.library.register_fake("cutlass_router::router_gemm")
def _(x, weight, bias=None, out_dtype=None, pdl=None, batch_invariant=None):
    out_dtype = validate.check_args(x, weight, bias, out_dtype)
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=out_dtype)


_ROUTER_GEMM = torch.ops.cutlass_router.router_gemm.default
_BELOW_AUTOGRAD = torch._C._after_autograd_keyset


class _RouterGemmGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, out_dtype, pdl, batch_invariant):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _ROUTER_GEMM(x, weight, bias, out_dtype, pdl, batch_invariant)

    @staticmethod
    def backward(ctx, grad):
        return _backward(ctx, grad)


def _keys(*keys) -> int:
    ks = torch._C.DispatchKeySet(keys[0])
    for k in keys[1:]:
        ks = ks.add(k)
    return ks.raw_repr()


# What remains of a call's dispatch keys below autograd when its tensors are plain dense CPU or CUDA tensors, with
# ADInplaceOrView (absent for inference tensors; a fallthrough for custom ops) and nothing else: no Python key (a
# subclass, a TorchDispatchMode, fake tensors, functional tensors), no Functionalize, no Conjugate/Negative views,
# no functorch wrappers, no PythonDispatcher. Then the redispatch would reach the CompositeExplicitAutograd body next.
_BELOW_AUTOGRAD_RAW = _BELOW_AUTOGRAD.raw_repr()
_K = torch._C.DispatchKey
_DIRECT = frozenset(_keys(backend, *more) for backend in (_K.CPU, _K.CUDA) for more in ((), (_K.ADInplaceOrView,)))


def _router_gemm_autograd(keyset, x, weight, bias=None, out_dtype=None, pdl=None, batch_invariant=None):
    if _grad_enabled() and (x.requires_grad or weight.requires_grad or (bias is not None and bias.requires_grad)):
        return _RouterGemmGrad.apply(x, weight, bias, out_dtype, pdl, batch_invariant)
    if keyset.raw_repr() & _BELOW_AUTOGRAD_RAW in _DIRECT:
        # Nothing between here and the body (see _DIRECT): call it, instead of a redispatch that crosses into C++
        # and back into Python for the same function (about 2 us per torch.ops call on the CPU-stubbed path).
        return _gemm(x, weight, bias, out_dtype, None, pdl, batch_invariant)
    with torch._C._AutoDispatchBelowAutograd():
        return _ROUTER_GEMM.redispatch(keyset & _BELOW_AUTOGRAD, x, weight, bias, out_dtype, pdl, batch_invariant)


_lib.impl("router_gemm", _router_gemm_autograd, "Autograd", with_keyset=True)
router_gemm_op = torch.ops.cutlass_router.router_gemm


@torch.library.custom_op("cutlass_router::router_gemm_out", mutates_args=("out",))
def router_gemm_out_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], out: torch.Tensor,
                       pdl: Optional[bool] = None, batch_invariant: Optional[bool] = None) -> None:
    """router_gemm into a preallocated out [M, N] (bf16 or fp32, rows contiguous): allocates nothing."""
    _gemm(x, weight, bias, out.dtype, out, pdl, batch_invariant)


@router_gemm_out_op.register_fake
def _(x, weight, bias, out, pdl=None, batch_invariant=None):
    validate.check_args(x, weight, bias, out.dtype, out)


def _backward(ctx, grad):
    x, weight = ctx.saved_tensors
    g = grad.float()
    gx = (g @ weight.float()).to(x.dtype) if ctx.needs_input_grad[0] else None
    gw = (g.t() @ x.float()).to(weight.dtype) if ctx.needs_input_grad[1] else None
    gb = g.sum(0).to(weight.dtype) if ctx.has_bias and ctx.needs_input_grad[2] else None
    return gx, gw, gb, None, None, None


# Types whose calls may skip the dispatcher: plain tensors, and nn.Parameter, which disables __torch_function__
# (a model's gate weight is one: sending it through the dispatcher cost every patched gate call the custom op's
# Python round trip and a full argument check). Other subclasses (DTensor, fake tensors, ...) need the dispatcher.
_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)


def needs_dispatcher(*tensors) -> bool:
    """True unless every argument is a plain tensor or an nn.Parameter (or None), nothing is to be differentiated,
    nothing is a negative view, and nothing is being traced: then an op's body can run without the dispatcher's
    Python round trip.

    A negative view (x._neg_view()) stores the un-negated values, which is what a kernel reads (or writes) at its
    pointer; the dispatcher's Negative fallback materializes it first. The conjugate bit needs no check: only
    complex tensors carry it, and every argument is refused for its dtype (TypeError) on either path."""
    if _is_compiling():
        return True
    if _grad_enabled():
        for t in tensors:
            if t is not None and (type(t) not in _PLAIN_TYPES or t.requires_grad or t.is_neg()):
                return True
    else:  # under no_grad (generate, serving) requires_grad does not matter
        for t in tensors:
            if t is not None and (type(t) not in _PLAIN_TYPES or t.is_neg()):
                return True
    return False


def refuse_out_with_grad(out, *tensors) -> None:
    """out= and autograd do not mix (torch raises too): say so at the call, not at a distant backward."""
    if out is not None and torch.is_grad_enabled() and any(t is not None and getattr(t, "requires_grad", False)
                                                           for t in tensors):
        raise RuntimeError("out= does not support automatic differentiation, but an input requires grad; call "
                           "without out=, or under torch.no_grad() (or detach the inputs)")


def router_gemm(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, *,
                out_dtype: Optional[torch.dtype] = None, pdl: Optional[bool] = None,
                out: Optional[torch.Tensor] = None, batch_invariant: Optional[bool] = None) -> torch.Tensor:
    """Same result as F.linear(x, weight, bias) (fp32 accumulation), x of any rank >= 1.

    out_dtype=torch.float32 returns the logits straight from the fp32 accumulator, without bf16 rounding.
    out=: write into this preallocated tensor (shape x.shape[:-1] + (N,), bf16 or fp32) and return it.
    pdl=True launches with programmatic dependent launch: the kernel starts before the previous one ends and may read
    W and the bias then, so they must not be its output; x is read after it (default: off, or $CUTLASS_ROUTER_PDL;
    it pays only after a producer that triggers its dependents early).
    batch_invariant=True makes row i's bits independent of M and of the other rows (default: off, or
    $CUTLASS_ROUTER_BATCH_INVARIANT): kernels of one summation order serve every M, slower above decode sizes.
    In eager mode on plain tensors the op's body is called directly: the dispatcher's Python round trip costs
    more than the kernel. Under torch.compile, autograd, tensor subclasses or negative views it goes through torch.ops
    (out must not be a negative view: ValueError).
    """
    if pdl is not None and pdl is not True and pdl is not False:  # check_switch's test inline: it raises
        check_switch("pdl", pdl)
    if batch_invariant is not None and batch_invariant is not True and batch_invariant is not False:
        check_switch("batch_invariant", batch_invariant)
    if out is not None:
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"out must be a torch.Tensor or None, got {type(out).__name__}")
        if out_dtype is not None and out_dtype != out.dtype:
            raise TypeError(f"out_dtype={out_dtype} but out is {out.dtype}; pass one or make them agree")
        out_dtype = out.dtype
        refuse_out_with_grad(out, x, weight, bias)
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
    if not needs_dispatcher(x, weight, bias, out):
        return _gemm(x, weight, bias, out_dtype, out, pdl, batch_invariant)
    validate.check_args(x, weight, bias, out_dtype, out)  # the dispatcher's own type errors name no fix
    if out is not None:
        torch.ops.cutlass_router.router_gemm_out(x, weight, bias, out, pdl, batch_invariant)
        return out
    return torch.ops.cutlass_router.router_gemm(x, weight, bias, out_dtype, pdl, batch_invariant)


# ---- route: the router GEMM and the expert choice in one op --------------------------------------------------

class RouteResult(NamedTuple):
    weights: torch.Tensor            # [..., top_k], fp32 (or bf16), in selection order
    ids: torch.Tensor                # [..., top_k], int32 (or int64), always in [0, N), distinct per row
    logits: Optional[torch.Tensor]   # [..., N] when asked for (return_logits / logits_dtype), else None


_capturing = torch.cuda.is_current_stream_capturing


def _one_launch(x, a, out) -> tuple[bool, bool]:
    """(one_launch, warm) of a route call. one_launch: a fused kernel (one launch, nothing allocated) at decode
    sizes where the tuned table, chosen by CUDA-graph replay in the decode-layer loop, runs GEMM + select:
    - out= allocates nothing: unless out brings a logits buffer the GEMM can write (its dtype: fp32 when choosing
      on fp32 logits), the GEMM's logits would need one;
    - eager: outside CUDA-graph capture (eager, torch.compile without graphs) the host's cost per call bounds a
      decode-size call, not the GPU's: the second launch and the logits' allocation cost more host time than
      the fused kernel costs GPU time (scripts/eager_cost.py).
    warm (plan.route): an eager call whose capture would plan otherwise, i.e. one_launch for being eager only (an
    allocation-free out= call takes the fused kernel under capture too)."""
    eager = x.is_cuda and not _capturing()
    alloc_free = out is not None and (out[2] is None or (out[2].dtype == torch.bfloat16 and a.logit_precision == "fp32"))
    return alloc_free or eager, eager and not alloc_free


def _route(x, weight, bias, correction_bias, a, out, pdl, batch_invariant):
    """The route ops' body: plan (cached), then the kernels or the torch path. pdl None and CUTLASS_ROUTER_PDL
    not set: the plan's choice (the tuned table's, per shape and M)."""
    pdl, batch_invariant = _switches(pdl, batch_invariant, _setting)
    one_launch, warm = _one_launch(x, a, out)
    p = plan.route(x, weight, bias, correction_bias, a, batch_invariant, one_launch=one_launch, warm=warm)
    return plan.run_route(p, x, weight, bias, correction_bias, out, pdl)


_ARGS: dict = {}  # route()'s scalar arguments as passed -> their RouteArgs; a model makes the same few calls


def _args(*values):
    """RouteArgs(top_k, scoring, renormalize, n_group, topk_group, routed_scaling_factor, logit_precision,
    logits_dtype, weights_dtype, ids_dtype), the same object for the same values (a dict lookup instead of a
    dataclass construction per call; plan.route hashes it again)."""
    key = (values, plan.number_kinds(values[0], values[2], values[3], values[4]))
    try:
        found = _ARGS.get(key)
    except TypeError:  # an unhashable value: validate.check_route names it
        return plan.RouteArgs(*values)
    if found is None:
        found = plan.RouteArgs(*values)
        if len(_ARGS) >= 256:
            _ARGS.clear()
        _ARGS[key] = found
    return found


_NO_LOGITS = (0,)  # what the op returns in the logits slot when none were asked for (ops return tensors)


@torch.library.custom_op("cutlass_router::route", mutates_args=())
def route_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], top_k: int, scoring: str,
             renormalize: bool, n_group: int, topk_group: int, correction_bias: Optional[torch.Tensor],
             routed_scaling_factor: float, logit_precision: str, logits_dtype: Optional[torch.dtype],
             weights_dtype: torch.dtype, ids_dtype: torch.dtype, pdl: Optional[bool] = None,
             batch_invariant: Optional[bool] = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weights [M, top_k], ids [M, top_k], logits [M, N] or an empty tensor when logits_dtype is None)."""
    a = _args(top_k, scoring, renormalize, n_group, topk_group, routed_scaling_factor, logit_precision, logits_dtype,
              weights_dtype, ids_dtype)
    w, i, lg = _route(x, weight, bias, correction_bias, a, None, pdl, batch_invariant)
    return w, i, x.new_empty(_NO_LOGITS, dtype=torch.float32) if lg is None else lg


@route_op.register_fake
def _(x, weight, bias, top_k, scoring, renormalize, n_group, topk_group, correction_bias, routed_scaling_factor,
      logit_precision, logits_dtype, weights_dtype, ids_dtype, pdl=None, batch_invariant=None):
    validate.check_route(x, weight, bias, top_k, scoring, renormalize, n_group, topk_group, correction_bias,
                         routed_scaling_factor, logit_precision, logits_dtype, weights_dtype, ids_dtype)
    M, N = x.shape[0], weight.shape[0]
    return (x.new_empty((M, top_k), dtype=weights_dtype), x.new_empty((M, top_k), dtype=ids_dtype),
            x.new_empty(_NO_LOGITS, dtype=torch.float32) if logits_dtype is None else
            x.new_empty((M, N), dtype=logits_dtype))


@torch.library.custom_op("cutlass_router::route_out", mutates_args=("weights", "ids", "logits"))
def route_out_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], top_k: int, scoring: str,
                 renormalize: bool, n_group: int, topk_group: int, correction_bias: Optional[torch.Tensor],
                 routed_scaling_factor: float, logit_precision: str, weights: torch.Tensor, ids: torch.Tensor,
                 logits: Optional[torch.Tensor], pdl: Optional[bool] = None,
                 batch_invariant: Optional[bool] = None) -> None:
    """route() into preallocated weights [M, top_k], ids [M, top_k] and optionally logits [M, N]."""
    a = _args(top_k, scoring, renormalize, n_group, topk_group, routed_scaling_factor, logit_precision,
              None if logits is None else logits.dtype, weights.dtype, ids.dtype)
    validate.check_route_out(x, weight, top_k, weights, ids, logits)
    _route(x, weight, bias, correction_bias, a, (weights, ids, logits), pdl, batch_invariant)


@route_out_op.register_fake
def _(x, weight, bias, top_k, scoring, renormalize, n_group, topk_group, correction_bias, routed_scaling_factor,
      logit_precision, weights, ids, logits, pdl=None, batch_invariant=None):
    validate.check_route(x, weight, bias, top_k, scoring, renormalize, n_group, topk_group, correction_bias,
                         routed_scaling_factor, logit_precision, None if logits is None else logits.dtype,
                         weights.dtype, ids.dtype)
    validate.check_route_out(x, weight, top_k, weights, ids, logits)


def route(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, top_k: int = 4, *,
          scoring: str = "topk_softmax", renormalize: bool = False, n_group: int = 1, topk_group: int = 1,
          correction_bias: Optional[torch.Tensor] = None, routed_scaling_factor: float = 1.0,
          logit_precision: str = "bf16", return_logits: bool = False, logits_dtype: Optional[torch.dtype] = None,
          weights_dtype: torch.dtype = torch.float32, ids_dtype: torch.dtype = torch.int32,
          pdl: Optional[bool] = None, batch_invariant: Optional[bool] = None,
          out: Optional[tuple] = None) -> RouteResult:
    """The MoE router in one op: logits = x @ weight.T + bias (fp32 accumulation), then the expert choice.

    scoring:
      "topk_softmax" (gpt-oss): the top_k logits, weights = softmax over those k.
      "softmax_topk" (Mixtral, Qwen2/3-MoE): softmax over all N, the top_k; renormalize=True divides the k
        weights by their sum (Qwen's norm_topk_prob; Mixtral always renormalizes).
      "sigmoid" (DeepSeek-V3, Kimi-K2): scores = sigmoid(logits); correction_bias (fp32 [N]) is added for the
        choice only; with n_group > 1 only the topk_group groups with the largest sum of their top-2 take part;
        weights = the uncorrected scores of the chosen, renormalized (+1e-20) if asked, times
        routed_scaling_factor. No GEMM bias in those models: pass bias=None.
    logit_precision "bf16" chooses on logits rounded to bf16, as a model whose F.linear runs in bf16 does (the ids
      then equal that reference's); "fp32" chooses on the fp32 accumulator.
    Choice rule: larger first; ties go to the lower expert id; NaN counts as larger than +inf (as in torch.topk),
      so a NaN logit is chosen and its weights are NaN; ids are always in [0, N) and distinct within a row.
    Returns RouteResult(weights [..., top_k] weights_dtype, ids [..., top_k] ids_dtype, logits [..., N] or None);
      logits are returned when return_logits or logits_dtype is given (bf16 by default; fp32 = unrounded).
    out=(weights, ids[, logits]) writes into preallocated tensors (rows contiguous) instead; with it route
      allocates nothing at decode sizes (the fused kernel), and above them only the logits the GEMM writes for the
      choice, unless a logits buffer of that dtype (fp32 for logit_precision="fp32", else bf16) is passed.
    pdl and batch_invariant as for router_gemm, except pdl's default: where neither pdl nor CUTLASS_ROUTER_PDL
      is given, route takes the tuned table's choice for the shape and M (the decode-layer benchmark, after a
      torch RMSNorm, found PDL faster by 0.1-0.4 us for some shapes and slower by 0.5-0.7 for others). With PDL the
      kernels read weight, bias and correction_bias before the previous kernel has finished: they must not be
      written by that kernel (pass pdl=False after a weight update on the same stream).
      batch_invariant=True routes every M through the batch-invariant GEMM and the select kernel. pdl is for the
      first kernel; where route runs the GEMM then the select kernel, the select kernel follows the GEMM with PDL
      whatever pdl says (it waits for the logits; the overlap saved up to 1.9 us per layer in the decode-layer
      benchmark).
    Kernels: at decode sizes (M <= 64) a call outside CUDA-graph capture (eager, torch.compile without graphs) runs
      one fused kernel, since the host's cost per launch bounds it; inside capture route takes the kernels the
      decode-layer benchmark chose (GEMM + select for the common shapes). Without batch_invariant the two may
      differ in the last bits of the logits, and so in the choice between experts that close.
    """
    if pdl is not None and pdl is not True and pdl is not False:  # check_switch's test inline: it raises
        check_switch("pdl", pdl)
    if batch_invariant is not None and batch_invariant is not True and batch_invariant is not False:
        check_switch("batch_invariant", batch_invariant)
    if return_logits and logits_dtype is None:
        logits_dtype = torch.bfloat16
    if not isinstance(x, torch.Tensor) or x.ndim == 0:
        raise TypeError("x must be a torch.Tensor of shape [..., hidden]") if not isinstance(x, torch.Tensor) else \
            ValueError("x must have at least 1 dimension (the hidden size), got a 0-d tensor")
    lead = x.shape[:-1]
    x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])
    if out is not None:
        if not isinstance(out, (tuple, list)) or len(out) not in (2, 3):
            raise TypeError("out must be a tuple (weights, ids) or (weights, ids, logits)")
        weights, ids, logits = (*out, None)[:3]
        flat = []
        for name, t, last in (("weights", weights, top_k), ("ids", ids, top_k), ("logits", logits, None)):
            if t is None:
                flat.append(None)
                continue
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"out's {name} must be a torch.Tensor, got {type(t).__name__}")
            if t.ndim != x.ndim or t.shape[:-1] != lead:
                raise ValueError(f"out's {name} must have shape {tuple(lead)} + ({name[0] == 'l' and 'experts' or 'top_k'},), "
                                 f"got {tuple(t.shape)}")
            flat.append(t if t.ndim == 2 else t.view(-1, t.shape[-1]))  # a view costs ~1 us: only where needed
        refuse_out_with_grad(weights, x, weight, bias)
        if needs_dispatcher(x2, weight, bias, correction_bias, *[t for t in flat if t is not None]):
            for name, t in zip(("weights", "ids", "logits"), flat):  # the fallback would fail on them, less clearly
                validate.refuse_negative_view(f"out's {name}", t)
            torch.ops.cutlass_router.route_out(x2, weight, bias, top_k, scoring, renormalize, n_group, topk_group,
                                               correction_bias, routed_scaling_factor, logit_precision, *flat,
                                               pdl, batch_invariant)
        else:
            a = _args(top_k, scoring, renormalize, n_group, topk_group, routed_scaling_factor, logit_precision,
                      None if flat[2] is None else flat[2].dtype, flat[0].dtype, flat[1].dtype)
            validate.check_route_out(x2, weight, top_k, *flat)
            _route(x2, weight, bias, correction_bias, a, tuple(flat), pdl, batch_invariant)
        return RouteResult(weights, ids, logits)
    a = _args(top_k, scoring, renormalize, n_group, topk_group, routed_scaling_factor, logit_precision, logits_dtype,
              weights_dtype, ids_dtype)
    if needs_dispatcher(x2, weight, bias, correction_bias):
        validate.check_route(x2, weight, bias, top_k, scoring, renormalize, n_group, topk_group, correction_bias,
                             routed_scaling_factor, logit_precision, logits_dtype, weights_dtype, ids_dtype)
        w, i, lg = torch.ops.cutlass_router.route(x2, weight, bias, top_k, scoring, renormalize, n_group, topk_group,
                                                  correction_bias, routed_scaling_factor, logit_precision,
                                                  logits_dtype, weights_dtype, ids_dtype, pdl, batch_invariant)
        lg = None if logits_dtype is None else lg
    else:
        w, i, lg = _route(x2, weight, bias, correction_bias, a, None, pdl, batch_invariant)
    if len(lead) != 1:
        w, i = w.view(*lead, top_k), i.view(*lead, top_k)
        lg = None if lg is None else lg.view(*lead, lg.shape[-1])
    return RouteResult(w, i, lg)
