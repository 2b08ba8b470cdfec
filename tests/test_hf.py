"""cutlass_router.hf on small random transformers models (CPU): the patched gates return what transformers' do.

Each family is built with transformers' own model class (2 layers, hidden 64), in bf16 (DeepSeek-V3 as
from_pretrained builds it: bf16 with its fp32 gate). The unpatched model and a patched deep copy run the same
input_ids, eagerly and under torch.compile(fullgraph=False) with a backend that runs the captured graphs eagerly
(as backend="eager" does) and checks that the gates were captured through the route custom op. The model logits
must match, and every gate call must pick the same experts: in the same order where transformers' topk is sorted
and the top-k keys differ, as sets for DeepSeek's topk(sorted=False). On CPU, route() runs routing_ref's torch
path, whose logits are the fp32 GEMM rounded once (bit-equal to transformers' bf16 F.linear on these sizes), so
both sides rank the same numbers and can only differ on exact ties, which transformers' torch.topk breaks in no
specified order. The inputs are drawn to be tie-free: input_ids are redrawn until every gate row of the unpatched
run has its k-th and (k+1)-th keys clearly apart (see clear_rows).
"""
import copy

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from cutlass_router import hf  # noqa: E402

VOCAB = 128
COMMON = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
              head_dim=16, vocab_size=VOCAB)
# family: (transformers module, config class, model class, gate class, config arguments, choice kind)
FAMILIES = {
    "gpt_oss": ("gpt_oss", "GptOssConfig", "GptOssForCausalLM", "GptOssTopKRouter",
                dict(COMMON, num_local_experts=16, num_experts_per_tok=4, sliding_window=8,
                     max_position_embeddings=131072, layer_types=["sliding_attention", "full_attention"]),
                "topk_softmax"),
    "mixtral": ("mixtral", "MixtralConfig", "MixtralForCausalLM", "MixtralTopKRouter",
                dict(COMMON, num_local_experts=8, num_experts_per_tok=2), "softmax_topk"),
    "qwen2_moe": ("qwen2_moe", "Qwen2MoeConfig", "Qwen2MoeForCausalLM", "Qwen2MoeTopKRouter",
                  dict({k: v for k, v in COMMON.items() if k != "head_dim"}, moe_intermediate_size=32,
                       shared_expert_intermediate_size=32, num_experts=16, num_experts_per_tok=4,
                       norm_topk_prob=False), "softmax_topk"),
    "qwen3_moe": ("qwen3_moe", "Qwen3MoeConfig", "Qwen3MoeForCausalLM", "Qwen3MoeTopKRouter",
                  dict(COMMON, moe_intermediate_size=32, num_experts=16, num_experts_per_tok=4, norm_topk_prob=True),
                  "softmax_topk"),
    "qwen3_moe_no_norm": ("qwen3_moe", "Qwen3MoeConfig", "Qwen3MoeForCausalLM", "Qwen3MoeTopKRouter",
                          dict(COMMON, moe_intermediate_size=32, num_experts=16, num_experts_per_tok=4,
                               norm_topk_prob=False), "softmax_topk"),
    "olmoe": ("olmoe", "OlmoeConfig", "OlmoeForCausalLM", "OlmoeTopKRouter",
              dict({k: v for k, v in COMMON.items() if k != "head_dim"}, num_experts=16, num_experts_per_tok=4),
              "softmax_topk"),
    "deepseek_v3": ("deepseek_v3", "DeepseekV3Config", "DeepseekV3ForCausalLM", "DeepseekV3TopkRouter",
                    dict(num_hidden_layers=2, hidden_size=64, intermediate_size=64, moe_intermediate_size=32,
                         n_routed_experts=16, n_shared_experts=1, n_group=4, topk_group=2, num_experts_per_tok=4,
                         first_k_dense_replace=0, num_attention_heads=4, num_key_value_heads=4, kv_lora_rank=16,
                         q_lora_rank=32, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=16, vocab_size=VOCAB,
                         routed_scaling_factor=2.5, norm_topk_prob=True),
                    "sigmoid"),
}
BF16_FAMILIES = [f for f in FAMILIES if f != "deepseek_v3"]
# The model logits of a patched and an unpatched 2-layer bf16 model whose gates pick the same experts can differ
# only where a gate's weights do, by one bf16 rounding (transformers rounds its softmax in bf16, route once from
# fp32): a relative 2^-8 of one expert's share of a hidden state, which can flip the bf16 rounding of a logit
# (|logits| < 2 here: one step is at most 2^-7). Measured: bit-equal (printed with -s). A wrongly chosen expert
# is caught by the per-gate checks, not by this bound: one of low weight moves the logits by as little as 2^-7.
LOGITS_ATOL = 2.0**-7
# Two keys whose exact (fp64) values are this far apart, relative, stay distinct and in order through an fp32 GEMM
# and one bf16 rounding (bf16 spacing is at most 2^-7 relative): such rows have one right answer on both sides.
REL_GAP = 2.0**-6
SIGMOID_GAP = 1e-4  # DeepSeek's fp32 choice values: both sides differ only by fp32 summation order (~1e-7)


def family_parts(family):
    module, cfg_name, model_name, gate_name, cfg, kind = FAMILIES[family]
    mod = pytest.importorskip(f"transformers.models.{module}.modeling_{module}")
    parts = [getattr(transformers, cfg_name, None), getattr(transformers, model_name, None),
             getattr(mod, gate_name, None)]
    for name, part in zip((cfg_name, model_name, gate_name), parts):
        if part is None:
            pytest.skip(f"{family}: transformers {transformers.__version__} has no {name}")
    return (*parts, cfg, kind)


def randomize(model, gate_cls, gate_std):
    """Random weights (a fresh transformers init routes too uniformly to test much): gates N(0, gate_std^2),
    the other matrices and biases N(0, 0.05^2); norms keep their ones; DeepSeek's correction bias N(0, 0.05^2)."""
    gates = {id(m.weight) for m in model.modules() if isinstance(m, gate_cls)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0.0, gate_std if id(p) in gates else 0.2 if "experts" in name else 0.05)
        for m in model.modules():
            if isinstance(m, gate_cls) and hasattr(m, "e_score_correction_bias"):
                m.e_score_correction_bias.normal_(0.0, 0.05)


def build(family, tmp_path=None):
    """(bf16 model in eval mode, gate class, kind). DeepSeek goes through save/from_pretrained(dtype=bf16), which
    keeps its gate weight and correction bias in fp32 (_keep_in_fp32_modules_strict), as users get it."""
    cfg_cls, model_cls, gate_cls, cfg, kind = family_parts(family)
    torch.manual_seed(0)
    model = model_cls(cfg_cls(**cfg))
    randomize(model, gate_cls, 0.1 if kind == "sigmoid" else 0.5)
    if kind == "sigmoid":
        model.save_pretrained(tmp_path / family)
        model = model_cls.from_pretrained(tmp_path / family, dtype=torch.bfloat16)
    else:
        model = model.to(torch.bfloat16)
    return model.eval(), gate_cls, kind


def gate_names(model, gate_cls):
    return [name for name, m in model.named_modules() if isinstance(m, gate_cls)]


def run(model, ids, gate_cls, call=None):
    """(model logits fp32, [(gate name, gate input, gate outputs)] of every gate call)."""
    calls, handles = [], []
    for name, m in model.named_modules():
        if isinstance(m, gate_cls):
            handles.append(m.register_forward_hook(
                lambda mod, args, out, name=name: calls.append(
                    (name, args[0].detach().clone(), tuple(o.detach().clone() for o in out)))))
    try:
        with torch.no_grad():
            logits = (model if call is None else call)(ids).logits.float()
    finally:
        for h in handles:
            h.remove()
    return logits, calls


def _separated(keys, k, gap_fn):
    top = keys.sort(dim=-1, descending=True).values[:, : k + 1]
    return torch.isfinite(top).all(-1) & (top[:, k - 1] - top[:, k] > gap_fn(top[:, k - 1], top[:, k]))


def clear_rows(gate, x, kind):
    """Rows of x on which the gate's choice has one right answer on both sides (see REL_GAP, SIGMOID_GAP)."""
    x2 = x.reshape(-1, x.shape[-1]).double()
    exact = x2 @ gate.weight.double().T
    if getattr(gate, "bias", None) is not None:
        exact = exact + gate.bias.double()
    k = gate.top_k
    if kind != "sigmoid":
        return _separated(exact, k, lambda a, b: REL_GAP * torch.maximum(a.abs(), b.abs()))
    choice = exact.sigmoid() + gate.e_score_correction_bias.double()
    g, tg = gate.num_group, gate.topk_group
    groups = choice.view(len(x2), g, -1).topk(2, dim=-1).values.sum(-1)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, groups.topk(tg).indices, True)
    masked = choice.masked_fill(~keep.repeat_interleave(choice.shape[1] // g, 1), float("-inf"))
    ok = _separated(masked, k, lambda a, b: SIGMOID_GAP)
    return ok & (_separated(groups, tg, lambda a, b: SIGMOID_GAP) if tg < g else True)


def tie_free_run(model, gate_cls, kind, shape=(2, 8)):
    """(input_ids, model logits, gate calls) of an unpatched run where every gate row is clear."""
    modules = dict(model.named_modules())
    for seed in range(300):
        g = torch.Generator().manual_seed(seed)
        ids = torch.randint(0, VOCAB, shape, generator=g)
        logits, calls = run(model, ids, gate_cls)
        if all(clear_rows(modules[name], x, kind).all() for name, x, _ in calls):
            return ids, logits, calls
    raise AssertionError("no tie-free input_ids found in 300 draws")


def by_expert(weights, ids):
    """Weights and ids ordered by expert id: routings that order their top k differently compare equal."""
    order = ids.argsort(dim=-1)
    return weights.float().gather(-1, order), ids.gather(-1, order)


def assert_same_gate_outputs(calls, ref_calls, label, ordered=True):
    assert [c[0] for c in calls] == [c[0] for c in ref_calls], label
    for (name, _, out), (_, _, ref) in zip(calls, ref_calls):
        where = f"{label}, {name}"
        assert len(out) == len(ref), where
        for o, r in zip(out, ref):  # the same tuple of the same shapes and dtypes
            assert (o.shape, o.dtype) == (r.shape, r.dtype), where
        if ordered:  # transformers' topk(sorted=True): descending, as route's, wherever the top k keys differ
            keys = ref[0].float().gather(-1, ref[2])  # the bf16 logits (softmax_topk: monotonic in them)
            distinct = (keys.diff(dim=-1) < 0).all(-1)
            assert torch.equal(out[2][distinct], ref[2][distinct]), f"{where}: other experts, or another order"
        w, ids = by_expert(out[1], out[2])
        rw, rids = by_expert(ref[1], ref[2])
        assert torch.equal(ids, rids), f"{where}: other experts chosen"
        # bf16 weights: one rounding apart at most (transformers rounds its softmax in bf16, route once from fp32)
        tol = 2.0**-8 if out[1].dtype == torch.bfloat16 else 1e-5
        torch.testing.assert_close(w, rw, atol=tol, rtol=tol, msg=where)
        # logits: bf16 one rounding apart (the layer-1 inputs can differ by a rounding too); fp32 ones by order
        tol = 2.0**-6 if out[0].dtype == torch.bfloat16 else 1e-4
        torch.testing.assert_close(out[0].float(), ref[0].float(), atol=tol, rtol=tol, msg=where)


class GraphRecorder:
    """A torch.compile backend that runs the captured graphs eagerly (as backend="eager") and records their ops,
    to check that the patched gates were traced into a graph through the custom op."""

    def __init__(self):
        self.targets = set()

    def __call__(self, gm, example_inputs):
        self.targets.update(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
        return gm.forward

    def has(self, op: str) -> bool:  # "cutlass_router.route" (the packet) or "cutlass_router.route.default"
        return any(t == op or t.startswith(op + ".") for t in self.targets)


def compare_models(model, patched, gate_cls, kind, label):
    """Eager, then compiled: patched vs unpatched logits and per-gate choices on tie-free input_ids."""
    ids, ref_logits, ref_calls = tie_free_run(model, gate_cls, kind)
    assert len(ref_calls) == len(gate_names(model, gate_cls)) > 0
    logits, calls = run(patched, ids, gate_cls)
    assert_same_gate_outputs(calls, ref_calls, f"{label} eager", ordered=kind != "sigmoid")
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, ref_logits, atol=LOGITS_ATOL, rtol=0, msg=f"{label} eager")
    print(f"{label}: eager max |logits diff| {(logits - ref_logits).abs().max().item():.2e}")

    torch._dynamo.reset()
    recorder = GraphRecorder()
    compiled = torch.compile(patched, fullgraph=False, backend=recorder)
    logits_c, calls_c = run(patched, ids, gate_cls, call=compiled)
    assert recorder.has("cutlass_router.route"), "the patched gates were not traced into a graph"
    assert_same_gate_outputs(calls_c, ref_calls, f"{label} compiled", ordered=kind != "sigmoid")
    torch.testing.assert_close(logits_c, ref_logits, atol=LOGITS_ATOL, rtol=0, msg=f"{label} compiled")
    print(f"{label}: compiled max |logits diff| {(logits_c - ref_logits).abs().max().item():.2e}")
    torch._dynamo.reset()


# ---------------------------------------------------------------- the bf16 families

@pytest.mark.parametrize("family", BF16_FAMILIES)
def test_patched_model_matches_transformers(family):
    model, gate_cls, kind = build(family)
    names = gate_names(model, gate_cls)
    patched = copy.deepcopy(model)
    report = hf.patch_routers(patched)
    assert report.patched == [(n, gate_cls.__name__) for n in names]
    assert report.skipped == []
    assert all(hf.patched_mode(m) == "route" for m in patched.modules() if isinstance(m, gate_cls))
    assert not any(hf.patched_mode(m) for m in model.modules())  # the original is untouched
    compare_models(model, patched, gate_cls, kind, family)


def test_gpt_oss_gemm_mode_and_unpatch():
    model, gate_cls, kind = build("gpt_oss")
    patched = copy.deepcopy(model)
    report = hf.patch_routers(patched, mode="gemm")
    assert len(report.patched) == 2 and report.mode == "gemm"
    ids, ref_logits, ref_calls = tie_free_run(model, gate_cls, kind)
    logits, calls = run(patched, ids, gate_cls)
    assert_same_gate_outputs(calls, ref_calls, "gpt_oss gemm")
    torch.testing.assert_close(logits, ref_logits, atol=LOGITS_ATOL, rtol=0)
    # Already patched: left alone, with the reason; unpatch gives transformers' forward back, bit for bit.
    again = hf.patch_routers(patched)
    assert again.patched == [] and len(again.skipped) == 2 and "already patched" in again.skipped[0][2]
    assert hf.unpatch_routers(patched) == 2
    assert not any("forward" in m.__dict__ for m in patched.modules() if isinstance(m, gate_cls))
    assert torch.equal(run(patched, ids, gate_cls)[0], ref_logits)
    assert len(hf.patch_routers(patched, mode="route").patched) == 2  # and it can be patched again


def test_gemm_mode_leaves_other_families_alone():
    model, gate_cls, _ = build("qwen3_moe")
    report = hf.patch_routers(model, mode="gemm")
    assert report.patched == [] and len(report.skipped) == 2
    assert all("gpt-oss" in reason for _, _, reason in report.skipped)
    with pytest.raises(ValueError, match="mode"):
        hf.patch_routers(model, mode="fast")


def test_fp32_gate_is_refused_with_the_fix():
    model, gate_cls, _ = build("gpt_oss")
    model = model.float()
    with pytest.raises(TypeError, match=r"model\.layers\.0\.mlp\.router\.weight is torch\.float32.*"
                                        r"model\.to\(torch\.bfloat16\)"):
        hf.patch_routers(model)
    assert not any(hf.patched_mode(m) for m in model.modules())  # refused before anything changed


def test_report_lists_patched_skipped_and_unknown():
    class OddGate(torch.nn.Module):  # MoE-looking (a top_k and a weight [experts, hidden]), of no known class
        def __init__(self):
            super().__init__()
            self.top_k, self.num_experts = 2, 8
            self.weight = torch.nn.Parameter(torch.zeros(8, 64, dtype=torch.bfloat16))

        def forward(self, x):
            return torch.topk(x @ self.weight.T, self.top_k)

    fam = family_parts("mixtral")

    class MixtralTopKRouter(fam[2]):  # a known name whose forward is not transformers' code: left alone
        def forward(self, hidden_states):
            return super().forward(hidden_states)

    model, gate_cls, _ = build("mixtral")
    model.odd = OddGate()
    model.lookalike = MixtralTopKRouter(model.config).to(torch.bfloat16)
    report = hf.patch_routers(model)
    assert [cls for _, cls in report.patched] == ["MixtralTopKRouter"] * 2
    skipped = {name: (cls, reason) for name, cls, reason in report.skipped}
    assert skipped["odd"] == ("OddGate", "unknown class")
    assert skipped["lookalike"][0] == "MixtralTopKRouter" and "differs" in skipped["lookalike"][1]
    text = str(report)
    print(text)
    assert "2 gate(s) patched, 2 left alone" in text and "unknown class" in text
    assert "patched MixtralTopKRouter x2: model.layers.0.mlp.gate, model.layers.1.mlp.gate" in text


def test_gpt_oss_shim():
    from cutlass_router.hf_gpt_oss import patch_gpt_oss_routers

    model, gate_cls, _ = build("gpt_oss")
    assert patch_gpt_oss_routers(model) == 2
    assert patch_gpt_oss_routers(model) == 0
    assert all(hf.patched_mode(m) == "route" for m in model.modules() if isinstance(m, gate_cls))


class LegacyGptOssTopKRouter(torch.nn.Module):
    """transformers 4.55's GptOssTopKRouter, verbatim (4.x returned scattered scores and the indices)."""

    def __init__(self, hidden, experts, top_k):
        super().__init__()
        self.top_k = top_k
        self.num_experts = experts
        self.hidden_dim = hidden
        self.weight = torch.nn.Parameter(torch.empty(self.num_experts, self.hidden_dim))
        self.bias = torch.nn.Parameter(torch.empty(self.num_experts))

    def forward(self, hidden_states):
        hidden_states = hidden_states.reshape(-1, self.hidden_dim)
        router_logits = F.linear(hidden_states, self.weight, self.bias)  # (seq_len, num_experts)
        router_top_value, router_indices = torch.topk(router_logits, self.top_k, dim=-1)  # (seq_len, top_k)
        router_top_value = torch.nn.functional.softmax(router_top_value, dim=1, dtype=router_top_value.dtype)
        router_scores = torch.zeros_like(router_logits).scatter_(1, router_indices, router_top_value)
        return router_scores, router_indices


@pytest.mark.parametrize("mode", ["route", "gemm"])
def test_gpt_oss_transformers_4_forward(mode):
    """A gate with transformers 4.x's gpt-oss forward is recognized by its code and patched to return the same
    pair: scattered scores bf16 [T, N] and indices int64 [T, k]."""
    legacy = LegacyGptOssTopKRouter(64, 16, 4)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        legacy.weight.copy_(torch.randn(16, 64, generator=g) * 0.5)
        legacy.bias.copy_(torch.randn(16, generator=g) * 0.5)
    legacy = legacy.to(torch.bfloat16)
    report = hf.patch_routers(torch.nn.ModuleDict({"router": legacy}), mode=mode)
    assert report.patched == [("router", "LegacyGptOssTopKRouter")]
    x = torch.randn(256, 64, generator=g).to(torch.bfloat16)
    x = x[clear_rows(legacy, x, "topk_softmax")]
    assert len(x) > 100
    with torch.no_grad():
        ref_scores, ref_ids = LegacyGptOssTopKRouter.forward(legacy, x)  # transformers' code, unpatched
        scores, ids = legacy(x)
    assert (scores.shape, scores.dtype, ids.shape, ids.dtype) == \
        (ref_scores.shape, ref_scores.dtype, ref_ids.shape, ref_ids.dtype)
    assert torch.equal(ids.sort(-1).values, ref_ids.sort(-1).values)
    torch.testing.assert_close(scores.float(), ref_scores.float(), atol=2.0**-8, rtol=0)


# ---------------------------------------------------------------- DeepSeek-V3: fp32 gate, opt-in

def test_deepseek_is_left_alone_without_the_opt_in(tmp_path):
    model, gate_cls, _ = build("deepseek_v3", tmp_path)
    if not all(m.weight.dtype == torch.float32 for m in model.modules() if isinstance(m, gate_cls)):
        # transformers 5.17 (the lent GPU machine's, 2026-11-29) loads this gate in bf16; 5.24 keeps it fp32
        pytest.skip(f"transformers {transformers.__version__} does not keep the DeepSeek gate in fp32: no fp32 gate "
                    f"to leave alone")
    report = hf.patch_routers(model)
    assert report.patched == [] and len(report.skipped) == 2
    assert all(cls == "DeepseekV3TopkRouter" and "deepseek_bf16=True" in reason and "fp32" in reason
               for _, cls, reason in report.skipped)
    assert all(m.weight.dtype == torch.float32 and not hf.patched_mode(m)
               for m in model.modules() if isinstance(m, gate_cls))


def test_deepseek_opt_in_matches_transformers_on_the_bf16_weight(tmp_path):
    """With deepseek_bf16=True the weight becomes bf16; transformers' own forward on that bf16 weight (it casts
    it to fp32 itself) is then the exact reference: same logits up to fp32 summation order, same experts."""
    model, gate_cls, kind = build("deepseek_v3", tmp_path)
    patched = copy.deepcopy(model)
    weights_before = [m.weight for m in patched.modules() if isinstance(m, gate_cls)]
    report = hf.patch_routers(patched, deepseek_bf16=True)
    assert report.patched == [(n, "DeepseekV3TopkRouter") for n in gate_names(model, gate_cls)]
    gates = [m for m in patched.modules() if isinstance(m, gate_cls)]
    assert all(m.weight is w and m.weight.dtype == torch.bfloat16 and isinstance(m.weight, torch.nn.Parameter)
               for m, w in zip(gates, weights_before))  # cast in place: the same Parameter objects
    assert all(m.e_score_correction_bias.dtype == torch.float32 for m in gates)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, gate_cls):
                m.weight.data = m.weight.data.to(torch.bfloat16)
    compare_models(reference, patched, gate_cls, kind, "deepseek_v3 (bf16 gate)")


def test_deepseek_bf16_gate_agrees_with_the_fp32_gate(tmp_path):
    """What the opt-in costs: expert choice of the patched bf16 gate vs transformers' fp32 gate, on random rows."""
    model, gate_cls, _ = build("deepseek_v3", tmp_path)
    gate32 = next(m for m in model.modules() if isinstance(m, gate_cls))
    gate16 = copy.deepcopy(gate32)
    hf.patch_routers(torch.nn.ModuleDict({"gate": gate16}), deepseek_bf16=True)
    assert hf.patched_mode(gate16) == "route" and gate16.weight.dtype == torch.bfloat16
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4096, gate32.hidden_dim, generator=g).to(torch.bfloat16)
    with torch.no_grad():
        logits32, w32, ids32 = gate32(x)
        logits16, w16, ids16 = gate16(x)
    assert (logits16.dtype, w16.dtype, ids16.dtype) == (logits32.dtype, w32.dtype, ids32.dtype)
    assert (logits16.shape, w16.shape, ids16.shape) == (logits32.shape, w32.shape, ids32.shape)
    same = (ids16.sort(-1).values == ids32.sort(-1).values).all(-1)
    rel = ((logits16 - logits32).norm() / logits32.norm()).item()
    print(f"deepseek_v3 bf16 gate vs fp32 gate: {same.float().mean().item():.2%} of {len(x)} rows choose the same "
          f"experts; logits rel. error {rel:.1e}")
    assert same.float().mean() >= 0.95
    assert rel < 2.0**-7  # bf16 weights: about 2^-9 relative per element, less after the sum


def test_deepseek_opt_in_refuses_a_fp32_model(tmp_path):
    model, gate_cls, _ = build("deepseek_v3", tmp_path)
    model = model.float()
    with pytest.raises(TypeError, match=r"runs in torch\.float32.*model\.to\(torch\.bfloat16\)"):
        hf.patch_routers(model, deepseek_bf16=True)
    assert all(m.weight.dtype == torch.float32 and not hf.patched_mode(m)
               for m in model.modules() if isinstance(m, gate_cls))


# ---------------------------------------------------------------- the verified code

def test_every_listed_class_has_the_reproduced_forward():
    """Every class the module lists, where this transformers has it, carries the forward its kind reproduces."""
    import importlib
    import re

    checked = 0
    for kind in hf._KINDS:
        if kind.major is not None and kind.major != int(transformers.__version__.split(".")[0]):
            continue
        for cls_name in kind.classes:
            # GptOssTopKRouter -> gpt_oss; the module is found from the class name's model prefix
            module = _module_of(cls_name, importlib, re)
            if module is None:
                continue
            cls = getattr(module, cls_name)
            assert hf._kind_of_forward(cls.forward)[0] is kind, cls_name
            checked += 1
    assert checked >= 4
    print(f"{checked} listed gate classes carry the reproduced forward in transformers {transformers.__version__}")


def _module_of(cls_name, importlib, re):
    import pkgutil

    import transformers.models as models

    stem = cls_name.lower().replace("_", "")
    for info in pkgutil.iter_modules(models.__path__):
        name = info.name
        if not stem.startswith(name.replace("_", "")):
            continue
        try:
            mod = importlib.import_module(f"transformers.models.{name}.modeling_{name}")
        except Exception:
            continue
        if hasattr(mod, cls_name):
            return mod
    return None


# ---------------------------------------------------------------- benchmarks/bench_e2e_hf.py's model

def test_bench_e2e_model_is_gpt_oss_20b_shaped():
    """The benchmark's hard-coded config is gpt-oss-20b's, and its parameter count (its memory check) is exact:
    checked on the meta device (no memory), 2 layers, and extrapolated to 24 (20.9B parameters, 41.8 GB bf16)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bench_e2e_hf as bench

    cfg_cls, model_cls, _, _, _ = family_parts("gpt_oss")
    c = bench.GPT_OSS_20B
    assert (c["hidden_size"], c["num_hidden_layers"], c["num_local_experts"], c["num_experts_per_tok"],
            c["vocab_size"]) == (2880, 24, 32, 4, 201088)
    with torch.device("meta"):
        model = model_cls(cfg_cls(**dict(c, num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"])))
    assert sum(p.numel() for p in model.parameters()) == bench.param_count(c, 2)
    assert abs(bench.param_count(c, 24) / 1e9 - 20.91) < 0.01


def test_bench_e2e_gate_time_attribution():
    """The profiler arithmetic of the benchmark's GPU path, on synthetic profiler events: kernels attributed to
    ops inside the gate's record_function range count for the gate, crt_* kernels count by name too (once)."""
    import sys
    from pathlib import Path

    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import FunctionEvent

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bench_e2e_hf as bench

    def cpu(name, start, end, kernels=(), thread=1):
        e = FunctionEvent(0, name, thread, start, end, use_device="cuda")
        for k, d in kernels:
            e.append_kernel(k, 0, d)
        return e

    def kernel(name, start, dur):
        return FunctionEvent(0, name, 7, start, start + dur, use_device="cuda", device_type=DeviceType.CUDA)

    dev = torch.device("cuda", 0)
    launches = [("crt_route_w16_s1_e2_t1_u3", 5.0)]
    for attributed in (True, False):  # the route kernel attributed to the range (driver launch) or not at all
        events = [cpu(bench.GATE_LABEL, 100, 200, launches if attributed else ()),
                  cpu("aten::addmm", 120, 130, [("nvjet_gemm", 3.0)]),      # a GEMM inside the gate
                  cpu("aten::mm", 300, 310, [("attention_gemm", 10.0)]),    # not the gate
                  cpu("aten::mm", 150, 160, [("other_thread_gemm", 4.0)], thread=2),
                  kernel("crt_route_w16_s1_e2_t1_u3", 400, 5.0), kernel("nvjet_gemm", 410, 3.0),
                  kernel("attention_gemm", 420, 10.0), kernel("other_thread_gemm", 430, 4.0)]
        got = bench.gate_time(events, True, dev)
        assert (got["total_us"], got["gate_us"], got["crt_us"], got["events"]) == (22.0, 8.0, 5.0, 4)
        assert got["gate_kernels"] == ({"crt_route_w16_s1_e2_t1_u3": 5.0, "nvjet_gemm": 3.0} if attributed
                                       else {"nvjet_gemm": 3.0})
        # the profiler's GPU-side spans of user annotations (a step, the gate's range) are not device work
        spans = [FunctionEvent(0, "ProfilerStep#3", 7, 390, 450, use_device="cuda", device_type=DeviceType.CUDA,
                               is_user_annotation=True),
                 FunctionEvent(0, bench.GATE_LABEL, 7, 400, 406, use_device="cuda", device_type=DeviceType.CUDA,
                               is_user_annotation=True)]
        assert bench.gate_time(events + spans, True, dev)["total_us"] == 22.0
        graph = bench.gate_time(events, False, dev)  # graph mode: by name only
        assert (graph["total_us"], graph["gate_us"]) == (22.0, 5.0)
    assert bench.gate_time([kernel("nvjet_gemm", 0, 3.0)], False, dev)["gate_us"] is None


def test_bench_e2e_graph_decoder_decodes_what_generate_decodes():
    """The cudagraph mode's decode loop (static cache, step by step, the token fed back through a static buffer;
    on a CPU the steps run without capture) emits the tokens model.generate emits greedily, for every variant
    the benchmark interleaves, and rejects more tokens than its captured positions."""
    import sys
    import types
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bench_e2e_hf as bench

    cfg_cls, model_cls, _, _, _ = family_parts("gpt_oss")
    values = dict(bench.TINY, layer_types=["sliding_attention", "full_attention"])
    torch.manual_seed(0)
    model = model_cls._from_config(cfg_cls(**values), dtype=torch.bfloat16).eval()
    args = types.SimpleNamespace(new_tokens=10, profile_steps=2, prompt_len=6)
    dec = bench.GraphDecoder(model, 2, args, torch.device("cpu"))
    assert dec.max_new == 10 and not dec.capture
    ids = torch.randint(0, values["vocab_size"], (2, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for variant in ("unpatched", "route"):
            bench.set_variant(model, variant, 2)
            want = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10,
                                  min_new_tokens=10, do_sample=False, disable_compile=True)
            got = dec.generate(ids, None, 10)
            assert torch.equal(got, want), variant
    bench.set_variant(model, "unpatched", 2)
    with pytest.raises(ValueError, match="at most 10"):
        dec.generate(ids, None, 11)


def test_bench_e2e_summary_pairs_rounds_and_pools_token_steps():
    """The benchmark's statistics: the paired ratio is the median over rounds of the variant's tok/s over the
    unpatched tok/s of the same round (a slow round slows both); the per-token figure pools every timed step."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bench_e2e_hf as bench

    def rec(variant, rnd, tok_s, steps):
        return dict(mode="eager", batch=1, variant=variant, round=rnd, decode_tok_s=tok_s, e2e_tok_s=tok_s,
                    step_ms=steps)

    records = [rec("unpatched", 1, 30.0, [33.0, 34.0]), rec("route", 1, 31.5, [32.0, 32.5]),   # 1.05
               rec("unpatched", 2, 20.0, [50.0, 51.0]), rec("route", 2, 20.4, [49.0, 60.0]),   # 1.02 (slow round)
               rec("unpatched", 3, 30.0, [33.0, 33.5]), rec("route", 3, 33.0, [30.0, 31.0])]   # 1.10
    got = {s["variant"]: s for s in bench.summarize(records)}
    assert abs(got["route"]["paired_vs_unpatched"] - 1.05) < 1e-9
    assert abs(got["route"]["vs_unpatched"] - 31.5 / 30.0) < 1e-9  # medians of each variant's rounds
    assert got["route"]["steps_timed"] == 6 and got["route"]["step_ms_median"] == (32.0 + 32.5) / 2
    assert got["unpatched"]["step_ms_median"] == (33.5 + 34.0) / 2
    assert abs(got["route"]["step_vs_unpatched"] - 33.75 / 32.25) < 1e-9
    assert got["unpatched"]["paired_vs_unpatched"] == 1.0


def test_bench_e2e_gate_wrappers_count_and_restore():
    """The benchmark's gate wrappers (host timing, profiler ranges) see every gate call and put each gate's forward
    back as it was: the class's for an unpatched gate, the instance's for a patched one."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bench_e2e_hf as bench

    cfg_cls, model_cls, _, _, _ = family_parts("gpt_oss")
    values = dict(bench.TINY, layer_types=["sliding_attention", "full_attention"])
    torch.manual_seed(0)
    model = model_cls._from_config(cfg_cls(**values), dtype=torch.bfloat16).eval()
    gates = [m for m in model.modules() if type(m).__name__ == bench.GATE_CLASS]
    bench.set_variant(model, "route", len(gates))
    gates[1].__dict__.pop("forward")  # one patched (an instance forward), one as the class has it
    before = [(("forward" in g.__dict__), g.forward) for g in gates]
    ids = torch.randint(0, values["vocab_size"], (1, 5))
    with torch.no_grad():
        with bench.host_timed_gates(model) as acc:
            model(input_ids=ids)
    assert acc["calls"] == len(gates) and acc["seconds"] > 0
    assert [(("forward" in g.__dict__), g.forward) for g in gates] == before
    bench.set_variant(model, "unpatched", len(gates))
