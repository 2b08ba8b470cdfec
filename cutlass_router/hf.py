"""Hugging Face transformers integration: the MoE gates of the common families, routed by cutlass_router.route.

    from cutlass_router.hf import patch_routers
    model = AutoModelForCausalLM.from_pretrained(..., dtype=torch.bfloat16)
    print(patch_routers(model))                # a PatchReport: what was patched, what was left alone and why

Each supported gate's `forward` is replaced (on the instance, types.MethodType) by one that returns exactly what
transformers' forward returns (the same tuple, shapes and dtypes), computed by `cutlass_router.route` in one op:
the router GEMM and the expert choice. Only modules whose class `forward` is, statement for statement, the
transformers code reproduced here are patched (compared as Python ASTs, so comments and formatting do not
matter; where no source can be read, the class name and transformers' major version decide); the classes below
are the ones transformers 5.24 ships with that code. T = tokens (transformers' MoE blocks pass hidden_states as
[T, hidden]; other leading dims are kept), N = experts, k = top_k:

  gpt-oss   GptOssTopKRouter (5.x) -> (logits bf16 [T, N], scores bf16 [T, k], ids int64 [T, k])
            route(scoring="topk_softmax", logit_precision="bf16"): the k largest bf16 logits, softmax over them.
            (transformers 4.x's forward -> (scattered scores bf16 [T, N], ids int64 [T, k]) is patched too.)
  Mixtral   MixtralTopKRouter, MiniMaxTopKRouter
            -> (logits bf16 [T, N], weights fp32 [T, k], ids int64 [T, k]); softmax over all N (fp32), top-k,
            always renormalized: route(scoring="softmax_topk", renormalize=True).
  Qwen-MoE  Qwen2MoeTopKRouter, Qwen3MoeTopKRouter, Qwen3NextTopKRouter, OlmoeTopKRouter, FlexOlmoTopKRouter,
            MellumTopKRouter, Qwen3OmniMoeThinkerTextTopKRouter, Qwen3OmniMoeTalkerTextTopKRouter,
            Qwen4ExpTextTopKRouter -> (logits bf16 [T, N], weights bf16 [T, k], ids int64 [T, k]);
            softmax_topk, renormalized iff the module's norm_topk_prob (config.norm_topk_prob).
            Qwen3_5MoeTopKRouter, Qwen3VLMoeTextTopKRouter, Qwen3OmniMoeTextTopKRouter: the same, always
            renormalized.
  DeepSeek  DeepseekV3TopkRouter and the 17 classes of 5.24 with its forward (Glm4Moe, Glm4MoeLite,
            Glm4vMoeText, Dots1, KimiLinear, ExaoneMoe, SolarOpen, MiMoV2Flash, NemotronH, ...; Kimi-K2 has no
            class of its own: transformers builds model_type kimi_k2 as deepseek_v3)
            -> (logits fp32 [T, N], weights fp32 [T, k], ids int64 [T, k]);
            route(scoring="sigmoid", n_group, topk_group, correction_bias=e_score_correction_bias,
            routed_scaling_factor, renormalize=norm_topk_prob, logit_precision="fp32").
            Only with deepseek_bf16=True: transformers keeps this gate's weight in fp32 and computes in fp32;
            the route op takes a bf16 weight, so the opt-in casts the weight to bf16 in place (the choice can then
            differ from the fp32 one on near-ties). transformers returns these ids in no specified order
            (topk(sorted=False)); ours are in descending order of the choice value.

Choice and ties: route's rule (larger first, ties to the lower expert id) where transformers' torch.topk leaves
ties unspecified; with identical logits the chosen sets are equal whenever the k-th and (k+1)-th keys differ.
A gate whose weight is not bf16 is refused with a TypeError (cast the model to bf16), except the DeepSeek
opt-in. mode="gemm" (gpt-oss only) keeps transformers' top-k and softmax and swaps only the GEMM (router_gemm).
Gates of other classes that look like MoE gates (a top_k and a weight [experts, hidden]) are reported as left
alone ("unknown class"). unpatch_routers(model) gives the gates their forward back (the benchmark swaps variants
on one model this way); with accelerate's hooks (device_map=...) the hooked forward is the one replaced.
For inference: the route op has no backward (a backward through a patched gate raises; mode="gemm" has one).
"""
from __future__ import annotations

import ast
import inspect
import textwrap
import types
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Optional

import torch

from .ops import route, router_gemm

MODES = ("route", "gemm")
UNKNOWN = "unknown class"
_FLAG = "_cutlass_router_patched"   # the mode a module was patched with
_SAVED = "_cutlass_router_saved"    # (attribute replaced, its previous instance value or _ABSENT)
_ABSENT = "absent"


# ---- the patched forwards --------------------------------------------------------------------------------------
# They run inside transformers' MoE blocks, eagerly or under torch.compile (route and router_gemm go through their
# custom ops when traced). Attributes are read from the module at each call, as transformers' forwards do.

def _gpt_oss_route_v5(self, hidden_states):
    w, ids, logits = route(hidden_states, self.weight, self.bias, self.top_k, scoring="topk_softmax",
                           logit_precision="bf16", logits_dtype=torch.bfloat16, weights_dtype=torch.bfloat16,
                           ids_dtype=torch.int64)
    return logits, w, ids


def _gpt_oss_route_v4(self, hidden_states):
    hidden_states = hidden_states.reshape(-1, self.hidden_dim)
    w, ids, _ = route(hidden_states, self.weight, self.bias, self.top_k, scoring="topk_softmax",
                      logit_precision="bf16", weights_dtype=torch.bfloat16, ids_dtype=torch.int64)
    scores = hidden_states.new_zeros((hidden_states.shape[0], self.weight.shape[0]), dtype=torch.bfloat16)
    return scores.scatter_(1, ids, w), ids


def _gpt_oss_gemm_v5(self, hidden_states):
    router_logits = router_gemm(hidden_states, self.weight, self.bias)
    router_top_value, router_indices = torch.topk(router_logits, self.top_k, dim=-1)
    router_scores = torch.nn.functional.softmax(router_top_value, dim=1, dtype=router_top_value.dtype)
    return router_logits, router_scores, router_indices


def _gpt_oss_gemm_v4(self, hidden_states):
    hidden_states = hidden_states.reshape(-1, self.hidden_dim)
    router_logits = router_gemm(hidden_states, self.weight, self.bias)
    router_top_value, router_indices = torch.topk(router_logits, self.top_k, dim=-1)
    router_top_value = torch.nn.functional.softmax(router_top_value, dim=1, dtype=router_top_value.dtype)
    router_scores = torch.zeros_like(router_logits).scatter_(1, router_indices, router_top_value)
    return router_scores, router_indices


def _softmax_topk(self, hidden_states, renormalize: bool, weights_dtype: torch.dtype):
    w, ids, logits = route(hidden_states.reshape(-1, self.hidden_dim), self.weight, None, self.top_k,
                           scoring="softmax_topk", renormalize=renormalize, logit_precision="bf16",
                           logits_dtype=torch.bfloat16, weights_dtype=weights_dtype, ids_dtype=torch.int64)
    return logits, w, ids


def _mixtral_route(self, hidden_states):
    return _softmax_topk(self, hidden_states, True, torch.float32)


def _qwen_route(self, hidden_states):
    return _softmax_topk(self, hidden_states, bool(self.norm_topk_prob), torch.bfloat16)


def _qwen_renorm_route(self, hidden_states):
    return _softmax_topk(self, hidden_states, True, torch.bfloat16)


def _deepseek_route(self, hidden_states):
    bias = self.e_score_correction_bias
    if bias.dtype != torch.float32:  # a model cast to bf16 as a whole: transformers adds it to fp32 scores
        bias = bias.float()
    w, ids, logits = route(hidden_states.reshape(-1, self.hidden_dim), self.weight, None, self.top_k,
                           scoring="sigmoid", renormalize=bool(self.norm_topk_prob), n_group=self.num_group,
                           topk_group=self.topk_group, correction_bias=bias,
                           routed_scaling_factor=float(self.routed_scaling_factor), logit_precision="fp32",
                           logits_dtype=torch.float32, weights_dtype=torch.float32, ids_dtype=torch.int64)
    return logits, w, ids


# ---- the transformers code each patched forward reproduces (transformers 5.24; gpt-oss also 4.x) -------------

_GPT_OSS_V5 = """
def forward(self, hidden_states):
    router_logits = F.linear(hidden_states, self.weight, self.bias)
    router_top_value, router_indices = torch.topk(router_logits, self.top_k, dim=-1)
    router_scores = torch.nn.functional.softmax(router_top_value, dim=1, dtype=router_top_value.dtype)
    return router_logits, router_scores, router_indices
"""
_GPT_OSS_V4 = """
def forward(self, hidden_states):
    hidden_states = hidden_states.reshape(-1, self.hidden_dim)
    router_logits = F.linear(hidden_states, self.weight, self.bias)
    router_top_value, router_indices = torch.topk(router_logits, self.top_k, dim=-1)
    router_top_value = torch.nn.functional.softmax(router_top_value, dim=1, dtype=router_top_value.dtype)
    router_scores = torch.zeros_like(router_logits).scatter_(1, router_indices, router_top_value)
    return router_scores, router_indices
"""
_MIXTRAL = """
def forward(self, hidden_states):
    hidden_states = hidden_states.reshape(-1, self.hidden_dim)
    router_logits = F.linear(hidden_states, self.weight)
    router_probs = torch.nn.functional.softmax(router_logits.float(), dim=-1)
    router_top_value, router_indices = torch.topk(router_probs, self.top_k, dim=-1)
    router_top_value /= router_top_value.sum(dim=-1, keepdim=True)
    router_scores = router_top_value
    return router_logits, router_scores, router_indices
"""
_QWEN = """
def forward(self, hidden_states):
    hidden_states = hidden_states.reshape(-1, self.hidden_dim)
    router_logits = F.linear(hidden_states, self.weight)
    router_probs = torch.nn.functional.softmax(router_logits, dtype=torch.float, dim=-1)
    router_top_value, router_indices = torch.topk(router_probs, self.top_k, dim=-1)
    if self.norm_topk_prob:
        router_top_value /= router_top_value.sum(dim=-1, keepdim=True)
    router_top_value = router_top_value.to(router_logits.dtype)
    router_scores = router_top_value
    return router_logits, router_scores, router_indices
"""
_QWEN_RENORM = """
def forward(self, hidden_states):
    hidden_states = hidden_states.reshape(-1, self.hidden_dim)
    router_logits = F.linear(hidden_states, self.weight)
    router_probs = torch.nn.functional.softmax(router_logits, dtype=torch.float, dim=-1)
    router_top_value, router_indices = torch.topk(router_probs, self.top_k, dim=-1)
    router_top_value /= router_top_value.sum(dim=-1, keepdim=True)
    router_top_value = router_top_value.to(router_logits.dtype)
    router_scores = router_top_value
    return router_logits, router_scores, router_indices
"""
_DEEPSEEK = """
def forward(self, hidden_states):
    hidden_states = hidden_states.view(-1, self.hidden_dim)
    router_logits = F.linear(hidden_states.type(torch.float32), self.weight.type(torch.float32))
    scores = router_logits.sigmoid()
    scores_for_choice = scores + self.e_score_correction_bias
    group_scores = (
        scores_for_choice.view(-1, self.num_group, self.num_experts // self.num_group)
        .topk(2, dim=-1)[0]
        .sum(dim=-1)
    )
    group_idx = torch.topk(group_scores, k=self.topk_group, dim=-1, sorted=False)[1]
    group_mask = torch.zeros_like(group_scores)
    group_mask.scatter_(1, group_idx, 1)
    score_mask = (
        group_mask.unsqueeze(-1)
        .expand(-1, self.num_group, self.num_experts // self.num_group)
        .reshape(-1, self.num_experts)
    )
    scores_for_choice = scores_for_choice.masked_fill(~score_mask.bool(), float("-inf"))
    topk_indices = torch.topk(scores_for_choice, k=self.top_k, dim=-1, sorted=False)[1]
    topk_weights = scores.gather(1, topk_indices)
    if self.norm_topk_prob:
        denominator = topk_weights.sum(dim=-1, keepdim=True) + 1e-20
        topk_weights /= denominator
    topk_weights = topk_weights * self.routed_scaling_factor
    return router_logits, topk_weights, topk_indices
"""


@dataclass(frozen=True)
class _Kind:
    name: str
    reference: str                      # transformers' forward, as source
    route_forward: Callable
    gemm_forward: Optional[Callable]    # mode="gemm" (gpt-oss only)
    classes: tuple                      # class names known to carry this forward (fallback when no source)
    bias: bool = False                  # the gate has a GEMM bias
    deepseek: bool = False              # fp32 gate in transformers: patched only with deepseek_bf16=True
    major: Optional[int] = None         # the transformers major version of this forward (name fallback)


_KINDS = (
    _Kind("gpt-oss", _GPT_OSS_V5, _gpt_oss_route_v5, _gpt_oss_gemm_v5, ("GptOssTopKRouter",), bias=True, major=5),
    _Kind("gpt-oss (transformers 4.x)", _GPT_OSS_V4, _gpt_oss_route_v4, _gpt_oss_gemm_v4, ("GptOssTopKRouter",),
          bias=True, major=4),
    _Kind("mixtral", _MIXTRAL, _mixtral_route, None, ("MixtralTopKRouter", "MiniMaxTopKRouter")),
    _Kind("qwen-moe", _QWEN, _qwen_route, None,
          ("Qwen2MoeTopKRouter", "Qwen3MoeTopKRouter", "Qwen3NextTopKRouter", "OlmoeTopKRouter",
           "FlexOlmoTopKRouter", "MellumTopKRouter", "Qwen3OmniMoeThinkerTextTopKRouter",
           "Qwen3OmniMoeTalkerTextTopKRouter", "Qwen4ExpTextTopKRouter")),
    _Kind("qwen-moe (always renormalized)", _QWEN_RENORM, _qwen_renorm_route, None,
          ("Qwen3_5MoeTopKRouter", "Qwen3VLMoeTextTopKRouter", "Qwen3OmniMoeTextTopKRouter")),
    _Kind("deepseek-v3", _DEEPSEEK, _deepseek_route, None,
          ("DeepseekV3TopkRouter", "DeepseekV32TopkRouter", "Glm4MoeTopkRouter", "Glm4MoeLiteTopkRouter",
           "Glm4vMoeTextTopkRouter", "Glm5NextTextTopkRouter", "GlmMoeDsaTopkRouter", "Dots1TopkRouter",
           "Dots3NoteTextTopkRouter", "ExaoneMoeTopkRouter", "KimiLinearTopkRouter", "MiMoV2FlashTopkRouter",
           "NemotronHTopkRouter", "SolarOpenTopkRouter", "AXK1TopkRouter", "BailingHybridTopkRouter",
           "HYV4TopkRouter", "HYV4VLTopkRouter"), deepseek=True),
)


def _normalize(fn_source: str) -> Optional[str]:
    """The function's AST (docstring, annotations and name dropped) as a string; None if it does not parse."""
    try:
        tree = ast.parse(textwrap.dedent(fn_source))
    except SyntaxError:
        return None
    fn = tree.body[0] if tree.body else None
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs):
        a.annotation = None
    fn.name, fn.body, fn.decorator_list, fn.returns = "forward", body, [], None
    return ast.dump(fn)


_REFERENCE = {_normalize(k.reference): k for k in _KINDS}


@lru_cache(maxsize=None)
def _kind_of_forward(fn) -> tuple:
    """(kind or None, source readable): the kind whose transformers code `fn` (a class's forward) is."""
    try:
        src = inspect.getsource(inspect.unwrap(fn))
    except (OSError, TypeError):
        return None, False
    return _REFERENCE.get(_normalize(src)), True


def _transformers_major() -> Optional[int]:
    try:
        import transformers

        return int(transformers.__version__.split(".")[0])
    except Exception:
        return None


def _classify(module) -> tuple:
    """(kind, None) for a supported gate; (None, reason) for a module to report as left alone; (None, None) for
    a module that is no MoE gate."""
    cls = type(module)
    fn = getattr(cls, "forward", None)
    kind, readable = _kind_of_forward(fn) if fn is not None else (None, False)
    if kind is not None:
        return kind, None
    name = cls.__name__
    named = [k for k in _KINDS if name in k.classes]
    if named and not readable:  # no source to compare (a frozen install): trust the name and the version
        major = _transformers_major()
        for k in named:
            if k.major is None or k.major == major or (k.major == 5 and major is not None and major > 5):
                return k, None
    if named:
        return None, "forward differs from the transformers (5.24) code this patch reproduces"
    if _looks_like_gate(module):
        return None, UNKNOWN
    return None, None


def _looks_like_gate(module) -> bool:
    """A module with a top_k and a weight [experts, hidden] of its own: an MoE gate of a class not known here."""
    w = getattr(module, "weight", None)
    if not isinstance(getattr(module, "top_k", None), int) or not isinstance(w, torch.Tensor) or w.dim() != 2:
        return False
    n = getattr(module, "num_experts", None)
    return not isinstance(n, int) or n == w.shape[0]


# ---- the report --------------------------------------------------------------------------------------------------

@dataclass
class PatchReport:
    """What patch_routers did: patched (module name, class name), skipped (module name, class name, reason)."""
    patched: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)
    mode: str = "route"

    def __str__(self) -> str:
        lines = [f"cutlass_router.hf.patch_routers(mode={self.mode!r}): {len(self.patched)} gate(s) patched, "
                 f"{len(self.skipped)} left alone"]
        by_class: dict = {}
        for name, cls in self.patched:
            by_class.setdefault(cls, []).append(name)
        for cls, names in by_class.items():
            lines.append(f"  patched {cls} x{len(names)}: {_names(names)}")
        by_reason: dict = {}
        for name, cls, reason in self.skipped:
            by_reason.setdefault((cls, reason), []).append(name)
        for (cls, reason), names in by_reason.items():
            lines.append(f"  left alone {cls} x{len(names)} ({reason}): {_names(names)}")
        return "\n".join(lines)


def _names(names: list) -> str:
    return ", ".join(names) if len(names) <= 3 else f"{names[0]}, {names[1]}, ..., {names[-1]}"


# ---- patching ------------------------------------------------------------------------------------------------------

def _activation_dtype(model, skip: set) -> Optional[torch.dtype]:
    """The floating dtype holding most of the model's parameters but `skip` (ids): what its activations run in;
    None when there are none."""
    count: Counter = Counter()
    for p in model.parameters():
        if p.is_floating_point() and id(p) not in skip:
            count[p.dtype] += p.numel()
    return count.most_common(1)[0][0] if count else None


def _bf16_fix(name: str, what: str, dtype) -> str:
    return (f"{name}.{what} is {dtype}; cutlass_router routes bf16 gates (a slower fp32 path is not offered): cast "
            "the model to bf16 first, model.to(torch.bfloat16), or load it with from_pretrained(..., "
            "dtype=torch.bfloat16) (torch_dtype=torch.bfloat16 in transformers 4.x)")


def _install(module, fn, mode: str) -> None:
    # accelerate's hooks (device_map=...) keep the real forward in _old_forward and call it from their wrapper:
    # replace that one, so that the hooks (device moves, offload) keep working.
    attr = "_old_forward" if hasattr(module, "_hf_hook") and "_old_forward" in module.__dict__ else "forward"
    setattr(module, _SAVED, (attr, module.__dict__.get(attr, _ABSENT)))
    setattr(module, attr, types.MethodType(fn, module))
    setattr(module, _FLAG, mode)


def patch_routers(model: torch.nn.Module, *, mode: str = "route", deepseek_bf16: bool = False) -> PatchReport:
    """Replace the forward of every supported MoE gate in `model` (see the module docstring); returns a PatchReport.

    mode="route": the GEMM and the expert choice in one op (cutlass_router.route). mode="gemm": gpt-oss gates
    only, router_gemm for the logits and transformers' own top-k and softmax (other gates are left alone).
    deepseek_bf16=True: also patch the DeepSeek-V3-style sigmoid gates, casting their fp32 weight to bf16 in place.
    Raises TypeError, before changing anything, for a gate whose weight is not bf16 (cast the model to bf16).
    A module already patched is left alone (unpatch_routers first to change the mode).
    """
    return _patch(model, mode, deepseek_bf16, None)


def _patch(model, mode: str, deepseek_bf16: bool, families: Optional[tuple]) -> PatchReport:
    """patch_routers, restricted to the kinds whose name starts with one of `families` (None: all)."""
    if mode not in MODES:
        raise ValueError(f"mode must be 'route' or 'gemm', got {mode!r}")
    if deepseek_bf16 is not True and deepseek_bf16 is not False:
        raise TypeError(f"deepseek_bf16 must be True or False, got {deepseek_bf16!r}")
    report = PatchReport(mode=mode)
    plan = []  # (name, module, kind): checked first, applied only when every gate passes
    for name, module in model.named_modules():
        kind, reason = _classify(module)
        cls = type(module).__name__
        if families is not None and (kind is None or not kind.name.startswith(families)):
            continue
        if kind is None:
            if reason is not None:
                report.skipped.append((name, cls, reason))
            continue
        if getattr(module, _FLAG, None):
            report.skipped.append((name, cls, f"already patched (mode={getattr(module, _FLAG)!r}); call "
                                              "unpatch_routers(model) first to patch it again"))
            continue
        if mode == "gemm" and kind.gemm_forward is None:
            report.skipped.append((name, cls, "mode='gemm' patches gpt-oss gates only; use mode='route'"))
            continue
        if kind.deepseek:
            if not deepseek_bf16:
                report.skipped.append((name, cls, _deepseek_reason(module)))
                continue
            if module.weight.dtype not in (torch.float32, torch.bfloat16):
                raise TypeError(_bf16_fix(name, "weight", module.weight.dtype))
        else:
            for what in ("weight", "bias") if kind.bias else ("weight",):
                t = getattr(module, what, None)
                if t is not None and t.dtype != torch.bfloat16:
                    raise TypeError(_bf16_fix(name, what, t.dtype))
        plan.append((name, module, kind))
    opted_in = [(name, module) for name, module, kind in plan if kind.deepseek]
    if opted_in:  # their fp32 weights aside, the model must run in bf16: route takes bf16 activations
        act_dtype = _activation_dtype(model, {id(p) for _, m in opted_in for p in m.parameters()})
        if act_dtype not in (None, torch.bfloat16):
            raise TypeError(f"{opted_in[0][0]}: the model runs in {act_dtype}, and the route op takes bf16 "
                            "activations: cast the model to bf16 first, model.to(torch.bfloat16), or load it with "
                            "from_pretrained(..., dtype=torch.bfloat16)")
    for name, module, kind in plan:
        if kind.deepseek and module.weight.dtype != torch.bfloat16:
            with torch.no_grad():  # in place: the same Parameter object, now bf16
                module.weight.data = module.weight.data.to(torch.bfloat16)
        _install(module, kind.gemm_forward if mode == "gemm" else kind.route_forward, mode)
        report.patched.append((name, type(module).__name__))
    return report


def _deepseek_reason(module) -> str:
    if module.weight.dtype == torch.bfloat16:
        return ("DeepSeek-style sigmoid gate: patched only with deepseek_bf16=True (its weight is already bf16, "
                "so routing it changes nothing but the summation order)")
    return (f"DeepSeek-style sigmoid gate with a {module.weight.dtype} weight, computed in fp32 by transformers: "
            "pass deepseek_bf16=True to cast the weight to bf16 and route it (the chosen experts can then differ "
            "from fp32's on near-ties)")


def unpatch_routers(model: torch.nn.Module) -> int:
    """Give every patched gate in `model` its previous forward back; returns how many. A DeepSeek gate's weight
    stays bf16 (transformers' forward casts it to fp32 itself)."""
    n = 0
    for _, module in model.named_modules():
        if not getattr(module, _FLAG, None):
            continue
        attr, prev = getattr(module, _SAVED)
        if isinstance(prev, str):  # _ABSENT: the class's forward was in use
            module.__dict__.pop(attr, None)
        else:
            setattr(module, attr, prev)
        module.__dict__.pop(_SAVED, None)
        module.__dict__.pop(_FLAG, None)
        n += 1
    return n


def patched_mode(module: torch.nn.Module) -> Optional[str]:
    """The mode a gate was patched with, or None."""
    return getattr(module, _FLAG, None) or None
