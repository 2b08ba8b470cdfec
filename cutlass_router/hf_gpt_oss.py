"""Hugging Face transformers integration: route gpt-oss's GptOssTopKRouter logits through router_gemm.

    from cutlass_router.hf_gpt_oss import patch_gpt_oss_routers
    model = AutoModelForCausalLM.from_pretrained(..., torch_dtype=torch.bfloat16)
    patch_gpt_oss_routers(model)

Only the logits GEMM changes; top-k, softmax and what the router returns stay as transformers writes them
(4.x returns scattered scores and indices, 5.x logits, scores and indices).
"""
from __future__ import annotations

import types

import torch

from .ops import router_gemm


def _forward_v5(self, hidden_states):
    router_logits = router_gemm(hidden_states, self.weight, self.bias)
    router_top_value, router_indices = torch.topk(router_logits, self.top_k, dim=-1)
    router_scores = torch.nn.functional.softmax(router_top_value, dim=1, dtype=router_top_value.dtype)
    return router_logits, router_scores, router_indices


def _forward_v4(self, hidden_states):
    hidden_states = hidden_states.reshape(-1, self.hidden_dim)
    router_logits = router_gemm(hidden_states, self.weight, self.bias)
    router_top_value, router_indices = torch.topk(router_logits, self.top_k, dim=-1)
    router_top_value = torch.nn.functional.softmax(router_top_value, dim=1, dtype=router_top_value.dtype)
    router_scores = torch.zeros_like(router_logits).scatter_(1, router_indices, router_top_value)
    return router_scores, router_indices


def patch_gpt_oss_routers(model: torch.nn.Module) -> int:
    """Swap the router GEMM of every GptOssTopKRouter in `model`; returns how many routers were patched."""
    import transformers

    forward = _forward_v5 if int(transformers.__version__.split(".")[0]) >= 5 else _forward_v4
    patched = 0
    for name, module in model.named_modules():
        if type(module).__name__ != "GptOssTopKRouter" or getattr(module, "_cutlass_router_patched", False):
            continue
        if module.weight.dtype != torch.bfloat16:
            raise TypeError(f"{name}.weight is {module.weight.dtype}; router_gemm takes bf16 routers: "
                            "load or cast the model with torch_dtype=torch.bfloat16 first")
        module.forward = types.MethodType(forward, module)
        module._cutlass_router_patched = True
        patched += 1
    return patched
