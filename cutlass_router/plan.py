"""The planning step: arguments checked once, the kernel chosen and loaded, cached per call signature.

Both the eager path (`router_gemm` on plain tensors) and the custom op's body go through `gemm()`. A plan is a
pure function of what the call's tensors look like (dtypes, shapes, strides, devices, 16-byte alignment), the
output dtype and the switches, so it is made once per signature and afterwards found by one dict lookup: in
eager mode the Python around a launch costs more than the kernel.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache

import torch
import torch.nn.functional as F

from . import dispatch, env, target, validate

logger = logging.getLogger("cutlass_router")
_DTYPE_NAME = {torch.bfloat16: "bf16", torch.float32: "f32"}


@lru_cache(maxsize=None)
def log_once(message: str) -> None:
    logger.warning("cutlass_router: %s", message)


class PlanLaunch:
    """What a plan fixes of its kernel's launch, kept with the plan: the device, the grid (cluster, block), the
    prepared launch configuration per (stream, PDL), the foreign call; for a GEMM also the output's size and the
    parameters but the four pointers (the family's gemm_pack_fixed). An eager call then makes one struct call and
    one foreign call: no pack function, grid computation, device preparation check or lookup of the kernel's
    configurations by a 5-tuple (about 1.5 us of Python per router_gemm call on the CPU-stubbed path)."""
    __slots__ = ("kernel", "device", "grid", "cluster", "block", "configs", "call", "params_buffer", "launch", "size",
                 "pack", "tail")

    def __init__(self, kernel, device: int, grid: tuple, launch, cluster=None, block=None, size=None, pack=None,
                 tail=()):
        self.kernel, self.device, self.grid, self.cluster, self.block = kernel, device, grid, cluster, block
        self.configs: dict = {}  # (stream, pdl) -> launch._Launch
        self.call = launch._libcuda_launch()
        self.params_buffer = launch.params_buffer
        self.launch = launch
        self.size, self.pack, self.tail = size, pack, tail

    def prepare(self, stream: int, pdl: bool):
        """The configuration for this stream and PDL setting, made (and the device prepared) on first use."""
        if len(self.configs) >= 64:  # streams come and go (one per graph capture, per worker): stay bounded
            self.configs.clear()
        c = self.configs[(stream, pdl)] = self.launch.prepare(self.kernel, self.device, stream, pdl, self.grid,
                                                              self.cluster, self.block)
        return c

    def fire(self, argv: int, pdl: bool) -> None:
        """The foreign call, the parameters packed at argv: on this call's current stream (graph capture,
        torch.cuda.stream), with the configuration kept for it. LaunchError if refused (nothing enqueued)."""
        stream = raw_stream(self.device) if _raw_stream_of is None else _raw_stream_of(self.device)
        c = self.configs.get((stream, pdl))
        if c is None:
            c = self.prepare(stream, pdl)  # sets the device's kernel attributes the first time: may be refused
        err = self.call(c.address, c.kernel, argv, None)
        if err:
            self.launch.refused(self.kernel, err)


def _gemm_launch(k, x, weight, out) -> PlanLaunch | None:
    """A GEMM plan's PlanLaunch, or None where a call goes through launch_gemm: a family without gemm_pack_fixed
    (its host library packs per call) or whose gemm_pack_fixed declines the kernel (a tiled kernel's tensor maps
    hold the call's pointers), an empty problem, or no ctypes libcuda (cuda.bindings launches then)."""
    fixed = getattr(k.family, "gemm_pack_fixed", None)
    M, K = x.shape
    N = weight.shape[0]
    launch = _launch()
    if fixed is None or not M or not N or launch._libcuda_launch() is None:
        return None
    # out None: run_gemm allocates a contiguous [M, N] output, whose row stride is N.
    packed = fixed(k.entry, M, N, K, x.stride(0), weight.stride(0), N if out is None else out.stride(0))
    if packed is None:
        return None
    pack, tail, grid = packed
    return PlanLaunch(k, x.get_device(), grid, launch, size=(M, N), pack=pack, tail=tail)


@dataclass(frozen=True)
class GemmPlan:
    out_dtype: torch.dtype
    kernel: object | None   # a launch.LoadedKernel, or None: the torch path
    reason: str | None      # why the torch path on a GPU (logged once); None on a CPU, where torch is the path
    invariant: bool
    fast: PlanLaunch | None = field(default=None, compare=False, repr=False)  # run_gemm's launch, where it has one


@lru_cache(maxsize=None)
def device_blocker(index: int) -> str | None:
    return target.device_blocker(index, torch.cuda.get_device_capability(index))


@lru_cache(maxsize=None)
def sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


@lru_cache(maxsize=4096)
def kernel_for(device: int, N: int, K: int, M: int, dt: str, invariant: bool = False):
    """(loaded kernel, None) for this shape on this device, or (None, why not).

    invariant: every M gets the bits it has at M = 1. A split-K kernel's per-element arithmetic (its K split and
    summation order) is fixed by its configuration and K; the invariant ladder's kernels share one order
    (dispatch.choose_invariant), which makes each row's result independent of the batch.
    """
    reason = device_blocker(device)
    if reason:
        return None, reason
    from . import build, launch  # deferred: cuda.bindings is needed only on this path

    symbol = dispatch.choose_invariant(N, K, M, dt) if invariant else dispatch.choose(N, K, M, dt)
    try:
        k = launch.load(symbol)
    except (build.BuildError, launch.LaunchError, KeyError, OSError) as e:
        # A CUTLASS kernel's host library may not load here (another platform, glibc < 2.34) nor build (no nvcc);
        # the split-K ladder needs none. Try it next.
        if invariant:  # the ladder's M = 1 kernel keeps the bits of every M; the default ladder's may not
            base = dispatch.choose_invariant(N, K, 1, dt)
            fallback = base if symbol != base else dispatch.choose_splitk(N, 1, dt)
        else:
            fallback = dispatch.choose_splitk(N, M, dt)
        if fallback == symbol:
            return None, f"kernel {symbol} unavailable: {e}"
        log_once(f"kernel {symbol} unavailable ({e}); using {fallback}")
        try:
            k = launch.load(fallback)
        except (build.BuildError, launch.LaunchError, KeyError, OSError) as e2:
            return None, f"kernels {symbol} and {fallback} unavailable: {e2}"
    why = k.family.blocker(k.entry, M, N)
    return (None, why) if why else (k, None)


_PLANS: dict = {}
_launch_module = None


def _launch():
    """The launch module, imported on first use (it needs cuda.bindings, which only the kernel path does); a
    function-level import statement costs about half a microsecond on every call."""
    global _launch_module
    if _launch_module is None:
        from . import launch
        _launch_module = launch
    return _launch_module


def _signature(t) -> tuple:
    return t.dtype, t.shape, t.stride(), t.device, t.data_ptr() % 16 == 0


_flag, _DISABLE = env.flag, env.DISABLE


def gemm(x, weight, bias, out_dtype, out, invariant: bool) -> GemmPlan:
    """The plan for this call; raises TypeError/ValueError (naming the argument and the fix) on bad input."""
    disabled = _flag(_DISABLE)
    try:
        # _signature(x) and _signature(weight) written out: two calls fewer on every call.
        key = ((x.dtype, x.shape, x.stride(), x.device, x.data_ptr() % 16 == 0),
               (weight.dtype, weight.shape, weight.stride(), weight.device, weight.data_ptr() % 16 == 0),
               None if bias is None else _signature(bias), out_dtype, None if out is None else _signature(out),
               invariant, disabled)
        found = _PLANS.get(key)
    except Exception:  # not tensors, or tensors without storage: the checks below say what is wrong
        key = found = None
    if found is not None:
        return found
    return _keep(_PLANS, key, _make(x, weight, bias, out_dtype, out, invariant, disabled))


def _keep(plans: dict, key, p):
    """Store a new plan under key (None: the call's signature could not be formed, so not cached); bounded, as
    prefill brings many M."""
    if key is not None:
        if len(plans) >= 4096:
            plans.clear()
        plans[key] = p
    return p


def _make(x, weight, bias, out_dtype, out, invariant: bool, disabled: bool) -> GemmPlan:
    out_dtype = validate.check_args(x, weight, bias, out_dtype, out)
    if not x.is_cuda:
        return GemmPlan(out_dtype, None, None, invariant)
    reason = f"{env.DISABLE} is set" if disabled else validate.kernel_blocker(x, weight, bias, out)
    kernel = None
    if reason is None:
        kernel, reason = kernel_for(x.device.index, weight.shape[0], x.shape[1], x.shape[0],
                                    _DTYPE_NAME[out_dtype], invariant)
    fast = None if kernel is None else _gemm_launch(kernel, x, weight, out)
    return GemmPlan(out_dtype, kernel, reason, invariant, fast)


def clear() -> None:
    """Forget every plan and kernel choice (tests that change what is available)."""
    _PLANS.clear()
    _ROUTE_PLANS.clear()
    kernel_for.cache_clear()


def torch_gemm(x, weight, bias, out_dtype, invariant=False):
    """fp32-accumulated x @ weight.T + bias in out_dtype, through torch: the CPU path and the fallback.

    invariant: one row at a time, so that a row's bits cannot depend on how many rows there are (torch picks
    its GEMM algorithm by shape); slow, and only used when batch invariance is asked for off the kernel path.
    """
    if invariant and x.shape[0] > 1:
        return torch.cat([torch_gemm(x[i:i + 1], weight, bias, out_dtype) for i in range(x.shape[0])])
    if out_dtype == torch.bfloat16 and x.is_cuda:
        return F.linear(x, weight, bias)  # cuBLAS accumulates bf16 GEMMs in fp32
    y = F.linear(x.float(), weight.float(), None if bias is None else bias.float())
    return y.to(out_dtype)


_raw_stream_of = getattr(torch._C, "_cuda_getCurrentRawStream", None)  # the cheap path Triton and Inductor use
_current_device = getattr(torch._C, "_cuda_getDevice", None) or torch.cuda.current_device


def raw_stream(device: int) -> int:
    return _raw_stream_of(device) if _raw_stream_of is not None else torch.cuda.current_stream(device).cuda_stream


def launch_gemm(k, x, weight, bias, out, pdl: bool) -> None:
    """Pack (the kernel's family does) and launch on the current stream of x's device; LaunchError if refused."""
    launch = _launch()
    dev = x.get_device()
    if dev != _current_device():  # a CUkernel launches into the current context
        with torch.cuda.device(dev):
            return launch_gemm(k, x, weight, bias, out, pdl)
    buf, _, grid_buf = launch.params_buffer()
    M, K = x.shape
    grid = k.family.pack_gemm(k, buf, launch.PARAM_CAPACITY, grid_buf, x.data_ptr(), weight.data_ptr(),
                              0 if bias is None else bias.data_ptr(), out.data_ptr(), M, weight.shape[0], K,
                              x.stride(0), weight.stride(0), out.stride(0), sm_count(dev))
    launch.launch(k, dev, raw_stream(dev), pdl, grid)


def fast_gemm(f: PlanLaunch, x, weight, bias, dst, pdl: bool) -> None:
    """launch_gemm inlined with what a plan fixes (its PlanLaunch; dst's row stride the plan's): the pointers are
    the call's, the stream is the current one of this call (graph capture, torch.cuda.stream), the rest is the
    plan's. LaunchError if refused (nothing enqueued)."""
    buf, argv, _ = f.params_buffer()
    f.pack(buf, 0, x.data_ptr(), weight.data_ptr(), 0 if bias is None else bias.data_ptr(), dst.data_ptr(), *f.tail)
    f.fire(argv, pdl)


def run_gemm(p: GemmPlan, x, weight, bias, out, pdl: bool):
    """Execute a plan: the kernel, or (CPU, unsupported GPU or layout, a refused launch) the torch path."""
    f = p.fast
    if f is not None and _current_device() == f.device:
        # The eager common case: launch_gemm with what the plan fixes.
        dst = x.new_empty(f.size, dtype=p.out_dtype) if out is None else out
        try:
            fast_gemm(f, x, weight, bias, dst, pdl)
            return dst
        except f.launch.LaunchError as e:  # nothing was enqueued: torch computes it
            log_once(f"using the torch fallback: {e}")
        y = torch_gemm(x, weight, bias, p.out_dtype, p.invariant)
        return y if out is None else out.copy_(y)
    M, N = x.shape[0], weight.shape[0]
    if p.kernel is not None and M and N:
        dst = x.new_empty((M, N), dtype=p.out_dtype) if out is None else out
        try:
            launch_gemm(p.kernel, x, weight, bias, dst, pdl)
            return dst
        except _launch().LaunchError as e:  # (evaluated only if raised) nothing was enqueued: torch computes it
            log_once(f"using the torch fallback: {e}")
    elif p.reason is not None and M and N:
        log_once(f"using the torch fallback: {p.reason}")
    y = torch_gemm(x, weight, bias, p.out_dtype, p.invariant)
    return y if out is None else out.copy_(y)


# ---- route: the router GEMM and the expert choice ------------------------------------------------------------

@dataclass(frozen=True)
class RouteArgs:
    """route()'s scalar arguments, validated (hashable: part of a plan's key)."""
    top_k: int
    scoring: str
    renormalize: bool
    n_group: int
    topk_group: int
    routed_scaling_factor: float
    logit_precision: str
    logits_dtype: torch.dtype | None
    weights_dtype: torch.dtype
    ids_dtype: torch.dtype
    # The numbers' types, so that RouteArgs compare (and key plans) as the call was made (number_kinds).
    kinds: tuple = field(init=False, repr=False, default=())

    def __post_init__(self):
        object.__setattr__(self, "kinds", number_kinds(self.top_k, self.renormalize, self.n_group, self.topk_group))


def number_kinds(top_k, renormalize, n_group, topk_group) -> tuple:
    """The types of route()'s numbers, part of every cache key made of them: 2.0 == 2 and True == 1, but top_k=2.0
    and renormalize=1 must meet validation, not an entry cached for top_k=2 or renormalize=True."""
    return type(top_k), type(renormalize), type(n_group), type(topk_group)


def route_flags(a: RouteArgs, input_f32: bool = False) -> int:
    """RouteParams.flags for these arguments; input_f32: the select kernel reads fp32 logits."""
    from .families import route as fam

    return ((fam.RENORMALIZE if a.renormalize else 0) | (fam.SELECT_BF16 if a.logit_precision == "bf16" else 0)
            | (fam.LOGITS_F32 if a.logits_dtype == torch.float32 else 0)
            | (fam.WEIGHTS_BF16 if a.weights_dtype == torch.bfloat16 else 0)
            | (fam.IDS_INT64 if a.ids_dtype == torch.int64 else 0) | (fam.INPUT_F32 if input_f32 else 0))


@dataclass(frozen=True)
class RoutePlan:
    args: RouteArgs
    kernel: object | None       # the fused route kernel, or the select kernel after `gemm`; None: the torch path
    gemm: GemmPlan | None       # the two-kernel path: the GEMM that writes the logits the select kernel reads
    reason: str | None          # why the torch path on a GPU (logged once)
    invariant: bool = False
    consts: object = None       # the kernel's families.route.RouteConsts (flags included): what every launch shares
    fast: PlanLaunch | None = field(default=None, compare=False, repr=False)  # the route kernel's, for launch_route
    pdl: bool = False           # the tuned default (dispatch.RouteRung.pdl) where neither caller nor environment say


_ROUTE_PLANS: dict = {}


def route(x, weight, bias, correction_bias, a: RouteArgs, invariant: bool, choice: str | None = None,
          one_launch: bool = False, warm: bool = False) -> RoutePlan:
    """The plan for a route() call; raises TypeError/ValueError on bad input. choice forces a fused kernel or
    dispatch.GEMM_THEN_SELECT instead of the dispatch table's pick (tune, tests), uncached. one_launch: a fused
    kernel at decode sizes (dispatch.choose_route; ops._one_launch says when). warm (an eager call): on a miss,
    also make the plan a CUDA-graph capture of the same call takes (one_launch=False), so that its kernels load
    now: an eager warm-up before capture is what loads a captured call's kernels outside capture."""
    disabled = _flag(_DISABLE)
    if choice is not None:
        return _make_route(x, weight, bias, correction_bias, a, invariant, disabled, choice)
    try:
        key = ((x.dtype, x.shape, x.stride(), x.device, x.data_ptr() % 16 == 0),  # as in gemm()
               (weight.dtype, weight.shape, weight.stride(), weight.device, weight.data_ptr() % 16 == 0),
               None if bias is None else _signature(bias),
               None if correction_bias is None else _signature(correction_bias), a, invariant, disabled, one_launch)
        found = _ROUTE_PLANS.get(key)
    except Exception:
        key = found = None
    if found is not None:
        return found
    made = _keep(_ROUTE_PLANS, key, _make_route(x, weight, bias, correction_bias, a, invariant, disabled,
                                                one_launch=one_launch))
    if warm and one_launch and key is not None:  # an uncached call would make both plans every time
        route(x, weight, bias, correction_bias, a, invariant, one_launch=False)
    return made


def _make_route(x, weight, bias, correction_bias, a: RouteArgs, invariant: bool, disabled: bool,
                choice: str | None = None, one_launch: bool = False) -> RoutePlan:
    from .families import route as fam

    validate.check_route(x, weight, bias, a.top_k, a.scoring, a.renormalize, a.n_group, a.topk_group,
                         correction_bias, a.routed_scaling_factor, a.logit_precision, a.logits_dtype,
                         a.weights_dtype, a.ids_dtype)
    if not x.is_cuda:
        return RoutePlan(a, None, None, None, invariant)
    M, K = x.shape
    N = weight.shape[0]
    reason = (f"{env.DISABLE} is set" if disabled else validate.kernel_blocker(x, weight, bias)
              or device_blocker(x.device.index)
              or fam.selection_blocker(N, a.top_k, a.scoring, a.n_group, a.topk_group))
    if reason:
        return RoutePlan(a, None, None, reason, invariant)
    from . import build, launch

    pdl = False
    if choice is None:
        rung = dispatch.RouteRung(1 << 62, dispatch.GEMM_THEN_SELECT) if invariant else \
            dispatch.route_rung(N, K, M, one_launch)
        choice, pdl = rung.kernel, rung.pdl
    gemm_plan = None
    wide = False  # the select kernel reads fp32 logits
    try:
        if choice == dispatch.GEMM_THEN_SELECT:
            # The GEMM writes the logits in the precision the choice is made in (fp32 also when fp32 logits are
            # returned: the select kernel rounds them to bf16 itself when selecting on bf16).
            wide = a.logit_precision == "fp32" or a.logits_dtype == torch.float32
            gemm_plan = gemm(x, weight, bias, torch.float32 if wide else torch.bfloat16, None, invariant)
            if gemm_plan.kernel is None:
                return RoutePlan(a, None, None, gemm_plan.reason, invariant)
            choice = fam.select_symbol(N, a.scoring, a.n_group, M, a.topk_group, a.top_k)
        k = launch.load(choice)
    except (build.BuildError, launch.LaunchError, KeyError, OSError) as e:
        return RoutePlan(a, None, None, f"kernel {choice} unavailable: {e}", invariant)
    why = k.family.blocker(k.entry, M, N)
    if why:
        return RoutePlan(a, None, None, why, invariant)
    fused = gemm_plan is None
    consts = fam.route_consts(k.entry, M=M, N=N, K=K, ldx=x.stride(0) if fused else 0,
                              ldw=weight.stride(0) if fused else 0, top_k=a.top_k, mode=fam.MODES[a.scoring],
                              flags=route_flags(a, wide), n_group=a.n_group, topk_group=a.topk_group,
                              scale=a.routed_scaling_factor)
    fast = None
    if M and launch._libcuda_launch() is not None:
        fast = PlanLaunch(k, x.get_device(), consts.grid, launch, consts.cluster, consts.block)
    return RoutePlan(a, k, gemm_plan, None, invariant, consts, fast, pdl)


def torch_route(x, weight, bias, correction_bias, a: RouteArgs):
    """The torch path (CPU, and the fallback): routing_ref's reference in the requested dtypes."""
    from .routing_ref import route_reference

    w, ids, logits = route_reference(x, weight, bias, a.top_k, scoring=a.scoring, renormalize=a.renormalize,
                                     n_group=a.n_group, topk_group=a.topk_group, correction_bias=correction_bias,
                                     routed_scaling_factor=a.routed_scaling_factor,
                                     logit_precision=a.logit_precision)
    return w.to(a.weights_dtype), ids.to(a.ids_dtype), None if a.logits_dtype is None else logits.to(a.logits_dtype)


def launch_route(p: RoutePlan, x, weight, bias, correction_bias, weights, ids, logits, pdl: bool) -> None:
    """The fused kernel, or the GEMM into logits then the select kernel; LaunchError if the driver refuses."""
    f = p.fast
    if f is not None and _current_device() == f.device:  # the plan knows the device and keeps the configurations
        launch, dev = f.launch, f.device
    else:
        f = None
        launch = _launch()
        dev = x.get_device()
        if dev != _current_device():
            with torch.cuda.device(dev):
                return launch_route(p, x, weight, bias, correction_bias, weights, ids, logits, pdl)
    source = ldi = 0
    if p.gemm is not None:  # two kernels: the logits go through global memory
        inter = logits if logits is not None and logits.dtype == p.gemm.out_dtype else \
            x.new_empty((x.shape[0], weight.shape[0]), dtype=p.gemm.out_dtype)
        g = p.gemm.fast  # made for a contiguous output (the GEMM plan's out is None): its row stride is N
        if g is not None and g.device == dev and inter.stride(0) == g.size[1]:
            fast_gemm(g, x, weight, bias, inter, pdl)
        else:
            launch_gemm(p.gemm.kernel, x, weight, bias, inter, pdl)
        source, ldi = inter.data_ptr(), inter.stride(0)
        if logits is not None and inter is not logits:
            logits.copy_(inter)
        x_ptr = w_ptr = b_ptr = lg_ptr = 0  # the select kernel reads the logits only
    else:
        x_ptr, w_ptr = x.data_ptr(), weight.data_ptr()
        b_ptr = 0 if bias is None else bias.data_ptr()
        lg_ptr = 0 if logits is None else logits.data_ptr()
    c = p.consts
    buf, argv, _ = launch.params_buffer()
    p.kernel.family.pack_route(buf, c, x_ptr, w_ptr, b_ptr,
                               0 if correction_bias is None else correction_bias.data_ptr(), source, lg_ptr,
                               weights.data_ptr(), ids.data_ptr(), ldi, 0 if logits is None else logits.stride(0),
                               weights.stride(0))
    # After our GEMM the select kernel always launches with PDL: the GEMM lets its dependents launch early and the
    # select kernel waits (griddepcontrol.wait) before it reads the logits, so its launch overlaps the GEMM's tail
    # (up to 1.9 us per layer in the decode-layer benchmark); `pdl` is the caller's choice for the first kernel.
    pdl = pdl or p.gemm is not None
    if f is None:
        launch.launch(p.kernel, dev, raw_stream(dev), pdl, c.grid, c.cluster, c.block)
    else:  # launch.launch with what the plan keeps
        f.fire(argv, pdl)


def run_route(p: RoutePlan, x, weight, bias, correction_bias, out, pdl: bool | None):
    """Execute a route plan into out = (weights, ids, logits or None), allocated here when None; pdl None: the
    plan's (the tuned table's) choice."""
    a = p.args
    M, N = x.shape[0], weight.shape[0]
    if out is None:
        out = (x.new_empty((M, a.top_k), dtype=a.weights_dtype), x.new_empty((M, a.top_k), dtype=a.ids_dtype),
               None if a.logits_dtype is None else x.new_empty((M, N), dtype=a.logits_dtype))
    weights, ids, logits = out
    if M == 0:
        return out
    if p.kernel is not None:
        try:
            launch_route(p, x, weight, bias, correction_bias, weights, ids, logits, p.pdl if pdl is None else pdl)
            return out
        except _launch().LaunchError as e:
            log_once(f"route: using the torch fallback: {e}")
    elif p.reason is not None:
        log_once(f"route: using the torch fallback: {p.reason}")
    w, i, lg = torch_route(x, weight, bias, correction_bias, a)
    weights.copy_(w)
    ids.copy_(i)
    if logits is not None:
        logits.copy_(lg)
    return out
