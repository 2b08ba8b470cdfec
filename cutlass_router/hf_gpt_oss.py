"""Hugging Face transformers integration for gpt-oss: a compatibility shim over cutlass_router.hf.

    from cutlass_router.hf_gpt_oss import patch_gpt_oss_routers
    model = AutoModelForCausalLM.from_pretrained(..., dtype=torch.bfloat16)
    patch_gpt_oss_routers(model)              # mode="route": GEMM + top-k + softmax in one op
    patch_gpt_oss_routers(model, mode="gemm") # only the logits GEMM; transformers' top-k and softmax stay

New code: cutlass_router.hf.patch_routers(model), which patches every supported family and returns a report.
What the patched GptOssTopKRouter returns is what transformers' does: 5.x (logits bf16, scores bf16, indices
int64), 4.x (scattered scores bf16 [T, N], indices int64).
"""
from __future__ import annotations

import torch

from .hf import _gpt_oss_gemm_v4 as _forward_v4  # noqa: F401  (the GEMM-only forwards, under their old names)
from .hf import _gpt_oss_gemm_v5 as _forward_v5  # noqa: F401
from .hf import _patch


def patch_gpt_oss_routers(model: torch.nn.Module, mode: str = "route") -> int:
    """Patch every GptOssTopKRouter in `model` (see cutlass_router.hf); returns how many were patched now (0 for
    routers already patched). Raises TypeError for routers that are not bf16."""
    return len(_patch(model, mode, False, ("gpt-oss",)).patched)
