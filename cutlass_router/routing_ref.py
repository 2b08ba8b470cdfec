"""Pure-torch reference (and CPU path) of ``cutlass_router.route``: router GEMM + expert selection in one op.

Each scoring mode reproduces a transformers 5.x router (see tests/test_routing_ref.py):
  "topk_softmax"  gpt-oss        GptOssTopKRouter: top-k of the logits, softmax over the k picked
  "softmax_topk"  Mixtral, Qwen2/3-MoE  *TopKRouter: softmax over all N, top-k, optional renormalize
  "sigmoid"       DeepSeek-V3, Kimi-K2  DeepseekV3TopkRouter: sigmoid + correction bias, group-limited top-k
Selection rule (the library's, deterministic where torch.topk is not): descending key, ties to the lower
expert id, NaN above +inf, NaNs among themselves by lower id.
"""
import torch


def _stable_topk(key: torch.Tensor, k: int) -> torch.Tensor:
    # A stable descending sort gives the documented rule: equal keys keep id order (lower id first), and
    # torch's sort treats NaN as the largest value, so NaNs come first, lower id first. torch.topk makes no
    # promise about ties, so it is not used.
    return torch.sort(key, dim=-1, descending=True, stable=True).indices[:, :k]


def route_reference(x, weight, bias=None, top_k=4, *, scoring="topk_softmax", renormalize=False,
                    n_group=1, topk_group=1, correction_bias=None, routed_scaling_factor=1.0,
                    logit_precision="bf16") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Returns (weights fp32 [M, top_k], ids int64 [M, top_k], logits fp32 [M, N])."""
    logits = x.float() @ weight.float().T
    if bias is not None:
        logits = logits + bias.float()
    weights, ids = select(logits, top_k, scoring=scoring, renormalize=renormalize, n_group=n_group,
                          topk_group=topk_group, correction_bias=correction_bias,
                          routed_scaling_factor=routed_scaling_factor, logit_precision=logit_precision)
    return weights, ids, logits


def select(logits, top_k, *, scoring="topk_softmax", renormalize=False, n_group=1, topk_group=1,
           correction_bias=None, routed_scaling_factor=1.0, logit_precision="bf16"):
    """The expert choice on given fp32 logits [M, N] (bias included): (weights fp32 [M, top_k], ids int64)."""
    # A bf16 model's F.linear hands its router bf16 logits; selecting on those (not the fp32 ones) is what
    # makes the choice match.
    sel = logits.float().to(torch.bfloat16).float() if logit_precision == "bf16" else logits.float()
    if scoring == "topk_softmax":
        ids = _stable_topk(sel, top_k)
        weights = torch.softmax(sel.gather(1, ids), dim=-1)
    elif scoring == "softmax_topk":
        # softmax is monotonic, so ranking the logits ranks the probabilities; ranking the logits also
        # keeps experts whose probabilities underflow to the same fp32 value apart.
        ids = _stable_topk(sel, top_k)
        weights = torch.softmax(sel, dim=-1).gather(1, ids)
        if renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
    elif scoring == "sigmoid":
        scores = sel.sigmoid()
        choice = scores if correction_bias is None else scores + correction_bias.float()
        if n_group > 1:
            m, n = choice.shape
            # As transformers' DeepseekV3TopkRouter: a group's score is the sum of its top-2 choice values,
            # and experts outside the topk_group best groups are masked with -inf (so they are never picked,
            # even when the correction bias makes kept choice values negative).
            group_scores = choice.view(m, n_group, n // n_group).topk(2, dim=-1).values.sum(dim=-1)
            keep = torch.zeros_like(group_scores, dtype=torch.bool)
            keep.scatter_(1, _stable_topk(group_scores, topk_group), True)
            choice = choice.masked_fill(~keep.repeat_interleave(n // n_group, dim=1), float("-inf"))
        ids = _stable_topk(choice, top_k)
        weights = scores.gather(1, ids)  # the weights are the sigmoid scores, without the correction bias
        if renormalize:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)  # transformers' epsilon
        weights = weights * routed_scaling_factor
    else:
        raise ValueError(f"unknown scoring {scoring!r}")
    return weights.float(), ids
