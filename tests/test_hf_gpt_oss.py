"""A small random gpt-oss (transformers) with its routers swapped: same logits and experts as unpatched."""
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import GptOssConfig, GptOssForCausalLM  # noqa: E402

from cutlass_router.hf_gpt_oss import patch_gpt_oss_routers  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


def small_model(device):
    cfg = GptOssConfig(num_hidden_layers=2, num_local_experts=32, num_experts_per_tok=4, hidden_size=128,
                       intermediate_size=64, head_dim=32, num_attention_heads=4, num_key_value_heads=2,
                       vocab_size=256, sliding_window=8, max_position_embeddings=512,
                       layer_types=["sliding_attention", "full_attention"])
    torch.manual_seed(0)
    model = GptOssForCausalLM(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():  # random weights everywhere, routers included
            p.normal_(0.0, 0.5 if ".router." in name else 0.05)
    return model.to(device=device, dtype=torch.bfloat16).eval()


def run(model, ids):
    """Model logits, plus (router input, chosen experts) of every router call."""
    calls, handles = [], []
    for m in model.modules():
        if type(m).__name__ == "GptOssTopKRouter":
            handles.append(m.register_forward_hook(
                lambda mod, args, out: calls.append((args[0].detach().clone(), mod, out[-1].detach().clone()))))
    with torch.no_grad():
        logits = model(ids).logits.float()
    for h in handles:
        h.remove()
    return logits, calls


@pytest.mark.parametrize("device", DEVICES)
def test_patched_routers_match_unpatched_model(device):
    model = small_model(device)
    ids = torch.randint(0, 256, (2, 24), device=device)
    ref_logits, ref_calls = run(model, ids)
    assert patch_gpt_oss_routers(model) == 2
    assert patch_gpt_oss_routers(model) == 0  # idempotent
    logits, calls = run(model, ids)
    assert len(calls) == len(ref_calls) == 2
    for (h, mod, idx), (_, _, ref_idx) in zip(calls, ref_calls):
        exact = h.double() @ mod.weight.double().T + mod.bias.double()
        top = exact.topk(5, dim=-1).values
        clear = (top[:, 3] - top[:, 4]) > 0.02 * top[:, 3].abs().clamp_min(1.0)  # no near-tie at the 4th place
        same = (idx.sort(-1).values == ref_idx.sort(-1).values).all(-1)
        assert same[clear].all(), "a router picked other experts where the choice is clear"
        assert same.float().mean() >= 0.9
    assert ((logits - ref_logits).norm() / ref_logits.norm()).item() < 3e-2


def test_patch_refuses_fp32_routers():
    model = small_model("cpu").float()
    with pytest.raises(TypeError, match="torch_dtype=torch.bfloat16"):
        patch_gpt_oss_routers(model)
