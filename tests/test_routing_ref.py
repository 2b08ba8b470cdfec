"""route_reference against transformers' own router code, and the selection rule itself. CPU only."""
import math

import pytest
import torch

from cutlass_router.routing_ref import route_reference

# Two keys whose fp32 values are this far apart (relative) stay distinct and in order through bf16 rounding
# (bf16 spacing is at most 2^-7 relative), so rows passing this check have one right answer whatever small
# rounding differences there are between transformers' F.linear and ours.
REL_GAP = 2.0**-5


def separated(keys: torch.Tensor, k: int, rel_gap: float = REL_GAP) -> torch.Tensor:
    """Per row: the top-(k+1) sorted keys are strictly separated by more than rel_gap * |largest|."""
    top = keys.sort(dim=-1, descending=True).values[:, : k + 1]
    gaps = top[:, :-1] - top[:, 1:]
    tol = rel_gap * top.abs().amax(dim=-1, keepdim=True)
    return torch.isfinite(top).all(-1) & (gaps > tol).all(-1)


def draw(m, k_dim, n, seed, keys_fn, top_k, bias=False, rel_gap=REL_GAP):
    """Random bf16 x [m, K], W [N, K] (b [N]); rows of x are redrawn until keys_fn(x) is tie-free for top_k."""
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(n, k_dim, generator=g) / math.sqrt(k_dim)).bfloat16()
    b = (0.5 * torch.randn(n, generator=g)).bfloat16() if bias else None
    rows = []
    for _ in range(100):
        x = torch.randn(4 * m, k_dim, generator=g).bfloat16()
        rows += list(x[separated(keys_fn(x, w, b), top_k, rel_gap)])
        if len(rows) >= m:
            return torch.stack(rows[:m]), w, b
    raise AssertionError("could not draw tie-free rows")


def fp32_logits(x, w, b):
    y = x.float() @ w.float().T
    return y if b is None else y + b.float()


def as_sets(ids):
    return ids.sort(dim=-1).values


# ---------------------------------------------------------------- transformers families

def test_gpt_oss_matches_transformers():
    mod = pytest.importorskip("transformers.models.gpt_oss.modeling_gpt_oss")
    from transformers import GptOssConfig

    m, k_dim, n, top_k = 64, 96, 32, 4
    cfg = GptOssConfig(hidden_size=k_dim, num_local_experts=n, num_experts_per_tok=top_k)
    x, w, b = draw(m, k_dim, n, 0, fp32_logits, top_k, bias=True)
    router = mod.GptOssTopKRouter(cfg).to(torch.bfloat16)
    with torch.no_grad():
        router.weight.copy_(w)
        router.bias.copy_(b)
        hf_logits, hf_scores, hf_ids = router(x)
    # HF: F.linear in bf16 -> bf16 logits; torch.topk on them; softmax(dtype=bf16) -> bf16 scores; int64 ids.
    assert (hf_logits.dtype, hf_scores.dtype, hf_ids.dtype) == (torch.bfloat16, torch.bfloat16, torch.int64)

    weights, ids, logits = route_reference(x, w, b, top_k, scoring="topk_softmax")
    assert (weights.dtype, ids.dtype, logits.dtype) == (torch.float32, torch.int64, torch.float32)
    assert torch.equal(ids, hf_ids)  # same order (both descending by logit), hence same sets
    assert torch.equal(as_sets(ids), as_sets(hf_ids))
    torch.testing.assert_close(weights, hf_scores.float(), atol=1e-2, rtol=0)  # HF's softmax runs in bf16
    torch.testing.assert_close(logits.bfloat16().float(), hf_logits.float(), atol=1e-3, rtol=2.0**-7)


@pytest.mark.parametrize("family,norm", [("qwen3_moe", True), ("qwen3_moe", False), ("mixtral", None)])
def test_softmax_topk_matches_transformers(family, norm):
    m, k_dim, n, top_k = 64, 96, 32, 4
    if family == "mixtral":
        mod = pytest.importorskip("transformers.models.mixtral.modeling_mixtral")
        from transformers import MixtralConfig

        cfg = MixtralConfig(hidden_size=k_dim, num_local_experts=n, num_experts_per_tok=top_k)
        router_cls = getattr(mod, "MixtralTopKRouter", None)
        renormalize = True  # MixtralTopKRouter always divides by the sum of the top-k (no config switch)
    else:
        mod = pytest.importorskip("transformers.models.qwen3_moe.modeling_qwen3_moe")
        from transformers import Qwen3MoeConfig

        cfg = Qwen3MoeConfig(hidden_size=k_dim, num_experts=n, num_experts_per_tok=top_k, norm_topk_prob=norm)
        router_cls = getattr(mod, "Qwen3MoeTopKRouter", None)
        renormalize = norm
    if router_cls is None:
        pytest.skip(f"{family}: no *TopKRouter class in this transformers version")

    x, w, _ = draw(m, k_dim, n, 1, fp32_logits, top_k)
    router = router_cls(cfg).to(torch.bfloat16)
    with torch.no_grad():
        router.weight.copy_(w)
        hf_logits, hf_weights, hf_ids = router(x)
    # HF: bf16 logits; softmax in fp32 over all N; topk of the probabilities; Mixtral keeps fp32 weights,
    # Qwen3-MoE casts them back to the logits' dtype (bf16).
    hf_w_dtype = torch.float32 if family == "mixtral" else torch.bfloat16
    assert (hf_logits.dtype, hf_weights.dtype, hf_ids.dtype) == (torch.bfloat16, hf_w_dtype, torch.int64)

    weights, ids, logits = route_reference(x, w, None, top_k, scoring="softmax_topk", renormalize=renormalize)
    assert torch.equal(ids, hf_ids)
    assert torch.equal(as_sets(ids), as_sets(hf_ids))
    tol = 1e-5 if family == "mixtral" else 2.0**-8  # Qwen3-MoE's weights are bf16-rounded
    torch.testing.assert_close(weights, hf_weights.float(), atol=tol, rtol=tol)
    if renormalize:
        torch.testing.assert_close(weights.sum(-1), torch.ones(m), atol=1e-5, rtol=0)
    else:
        assert (weights.sum(-1) < 1).all()


def test_deepseek_v3_matches_transformers():
    mod = pytest.importorskip("transformers.models.deepseek_v3.modeling_deepseek_v3")
    if not hasattr(mod, "DeepseekV3TopkRouter"):
        pytest.skip("no DeepseekV3TopkRouter in this transformers version")
    from transformers import DeepseekV3Config

    m, k_dim, n, n_group, topk_group, top_k, scale = 64, 96, 64, 8, 4, 6, 2.5
    cfg = DeepseekV3Config(hidden_size=k_dim, n_routed_experts=n, n_group=n_group, topk_group=topk_group,
                           num_experts_per_tok=top_k, routed_scaling_factor=scale, norm_topk_prob=True)
    g = torch.Generator().manual_seed(2)
    corr = 0.1 * torch.randn(n, generator=g)

    def keys(x, w, b):
        # Tie-free means: group scores separated for the group pick, and masked choice values for the expert pick.
        choice = fp32_logits(x, w, b).sigmoid() + corr
        groups = choice.view(-1, n_group, n // n_group).topk(2, dim=-1).values.sum(-1)
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(1, groups.topk(topk_group).indices, True)
        masked = choice.masked_fill(~keep.repeat_interleave(n // n_group, 1), float("-inf"))
        return torch.where(separated(groups, topk_group, 1e-5)[:, None], masked, torch.nan)

    x, w, _ = draw(m, k_dim, n, 3, keys, top_k, rel_gap=1e-5)  # both sides compute on the same fp32 numbers
    router = mod.DeepseekV3TopkRouter(cfg)  # fp32 weight; computes in fp32
    with torch.no_grad():
        router.weight.copy_(w.float())  # the same bf16-representable numbers both sides
        router.e_score_correction_bias.copy_(corr)
        hf_logits, hf_weights, hf_ids = router(x)
    assert (hf_logits.dtype, hf_weights.dtype, hf_ids.dtype) == (torch.float32, torch.float32, torch.int64)

    weights, ids, logits = route_reference(x, w, None, top_k, scoring="sigmoid", renormalize=True,
                                           n_group=n_group, topk_group=topk_group, correction_bias=corr,
                                           routed_scaling_factor=scale, logit_precision="fp32")
    torch.testing.assert_close(logits, hf_logits, atol=1e-5, rtol=1e-5)
    # HF uses topk(sorted=False): its id order is unspecified, so compare as sets and weights per expert.
    assert torch.equal(as_sets(ids), as_sets(hf_ids))
    order_hf, order_ref = hf_ids.argsort(-1), ids.argsort(-1)
    torch.testing.assert_close(weights.gather(1, order_ref), hf_weights.gather(1, order_hf), atol=1e-6, rtol=1e-5)
    # Ours is descending by choice value.
    choice = logits.sigmoid() + corr
    assert (choice.gather(1, ids).diff(dim=-1) < 0).all()
    # Only experts of the topk_group best groups are picked.
    assert all(len(set(r)) <= topk_group for r in (ids // (n // n_group)).tolist())
    torch.testing.assert_close(weights.sum(-1), torch.full((m,), scale), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- the selection rule

SCORINGS = [
    dict(scoring="topk_softmax"),
    dict(scoring="softmax_topk", renormalize=True),
    dict(scoring="sigmoid", renormalize=True, routed_scaling_factor=2.5),
    dict(scoring="sigmoid", n_group=4, topk_group=2, correction_bias=torch.zeros(16)),
]


def rule_ids(key_row, k):
    """The documented rule, spelled out: NaN first, then descending; ties (and NaNs) by lower id."""
    vals = key_row.tolist()
    return sorted(range(len(vals)), key=lambda i: (0, 0.0, i) if math.isnan(vals[i]) else (1, -vals[i], i))[:k]


def logits_row(values):
    """x [1, 1] = 1 and W [N, 1] = values, so the logits are exactly `values` (inf and NaN included)."""
    return torch.ones(1, 1, dtype=torch.bfloat16), torch.tensor(values, dtype=torch.bfloat16)[:, None]


@pytest.mark.parametrize("kw", SCORINGS)
def test_all_equal_logits_pick_lowest_ids(kw):
    x, w = torch.randn(3, 8).bfloat16(), torch.zeros(16, 8, dtype=torch.bfloat16)
    weights, ids, logits = route_reference(x, w, None, 6, **kw)
    assert ids.tolist() == [list(range(6))] * 3
    assert torch.isfinite(weights).all()


@pytest.mark.parametrize("kw", SCORINGS[:3])
def test_nan_then_inf_then_descending(kw):
    x, w = logits_row([1.0, float("nan"), 3.0, float("inf"), float("nan"), 3.0, -float("inf"), 2.0])
    _, ids, logits = route_reference(x, w, None, 6, **kw)
    assert ids[0].tolist() == [1, 4, 3, 2, 5, 7]  # NaNs (lower id first), +inf, ties at 3.0 by id, then 2.0
    assert torch.isnan(logits[0, 1]) and logits[0, 3] == float("inf")


def test_torch_sort_follows_the_rule():
    # The implementation relies on torch's stable descending sort ranking NaN as the largest value.
    g = torch.Generator().manual_seed(4)
    keys = torch.randint(-3, 4, (200, 24), generator=g).float()  # many ties
    keys[torch.rand(keys.shape, generator=g) < 0.1] = float("nan")
    keys[torch.rand(keys.shape, generator=g) < 0.05] = float("inf")
    keys[torch.rand(keys.shape, generator=g) < 0.05] = -float("inf")
    for dtype in (torch.float32, torch.bfloat16):
        got = torch.sort(keys.to(dtype), dim=-1, descending=True, stable=True).indices[:, :5]
        assert got.tolist() == [rule_ids(r, 5) for r in keys]
    # And route_reference uses it: the same keys as logits (exactly representable in bf16).
    for row in keys[:20]:
        x, w = logits_row(row.tolist())
        assert route_reference(x, w, None, 5, scoring="topk_softmax")[1][0].tolist() == rule_ids(row, 5)


@pytest.mark.parametrize("kw", SCORINGS)
def test_ids_in_range_and_distinct(kw):
    g = torch.Generator().manual_seed(5)
    x = torch.randint(-2, 3, (50, 8), generator=g).bfloat16()
    w = torch.randint(-1, 2, (16, 8), generator=g).bfloat16()  # small integers: lots of exact ties
    w[3, 0] = float("nan")
    _, ids, _ = route_reference(x, w, None, 6, **kw)
    assert ((ids >= 0) & (ids < 16)).all()
    assert all(len(set(r)) == 6 for r in ids.tolist())


@pytest.mark.parametrize("kw", SCORINGS)
def test_empty_batch(kw):
    x, w = torch.empty(0, 8, dtype=torch.bfloat16), torch.randn(16, 8).bfloat16()
    weights, ids, logits = route_reference(x, w, torch.zeros(16, dtype=torch.bfloat16), 6, **kw)
    assert (weights.shape, ids.shape, logits.shape) == ((0, 6), (0, 6), (0, 16))
    assert (weights.dtype, ids.dtype, logits.dtype) == (torch.float32, torch.int64, torch.float32)


def test_grouped_mask_is_minus_inf_not_zero():
    # With a correction bias of -1 every choice value is < 0. HF masks the other groups with -inf, so their
    # experts are never picked; a 0.0 mask would rank them (0.0) above every kept expert and pick 4, 5, 6.
    x, w = logits_row([5.0, 4.0, 3.0, 2.0, -8.0, -8.0, -8.0, -8.0])
    _, ids, _ = route_reference(x, w, None, 3, scoring="sigmoid", n_group=4, topk_group=2,
                                correction_bias=torch.full((8,), -1.0))
    assert ids[0].tolist() == [0, 1, 2]  # groups {0,1} and {2,3} kept (the two best top-2 sums)

    mod = pytest.importorskip("transformers.models.deepseek_v3.modeling_deepseek_v3")
    if hasattr(mod, "DeepseekV3TopkRouter"):  # and transformers does the same
        from transformers import DeepseekV3Config

        cfg = DeepseekV3Config(hidden_size=1, n_routed_experts=8, n_group=4, topk_group=2, num_experts_per_tok=3,
                               routed_scaling_factor=1.0, norm_topk_prob=False)
        router = mod.DeepseekV3TopkRouter(cfg)
        with torch.no_grad():
            router.weight.copy_(w.float())
            router.e_score_correction_bias.fill_(-1.0)
            assert router(x)[2].sort(-1).values.tolist() == [[0, 1, 2]]


# ---------------------------------------------------------------- logit precision

def test_bf16_logit_rounding_changes_the_selection():
    # fp32 logits 1.0 and 1 + 2^-9: fp32 picks expert 1; rounded to bf16 (spacing 2^-7 at 1.0) both are 1.0,
    # a tie, which goes to the lower id. (Rounding is monotonic, so it can only merge keys, never swap them.)
    x = torch.ones(1, 2, dtype=torch.bfloat16)
    w = torch.tensor([[1.0, 0.0], [1.0, 2.0**-9], [-1.0, 0.0], [-2.0, 0.0]], dtype=torch.bfloat16)
    for kw in SCORINGS[:3]:
        _, ids32, logits = route_reference(x, w, None, 1, logit_precision="fp32", **kw)
        _, ids16, _ = route_reference(x, w, None, 1, logit_precision="bf16", **kw)
        assert ids32.tolist() == [[1]] and ids16.tolist() == [[0]]
        assert logits[0, 1].item() == 1.0 + 2.0**-9  # returned logits are the unrounded fp32 ones
