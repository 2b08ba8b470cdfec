"""RouterLinear: a drop-in for the nn.Linear of an MoE gate."""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .ops import router_gemm


class RouterLinear(nn.Module):
    """y = x @ weight.T + bias with bf16 parameters, like nn.Linear(in_features, out_features, bias)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype: torch.dtype = torch.bfloat16, out_dtype: Optional[torch.dtype] = None):
        super().__init__()
        self.in_features, self.out_features, self.out_dtype = in_features, out_features, out_dtype
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's initialisation, so a swapped-in gate starts from the same distribution
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_linear(cls, linear: nn.Linear, out_dtype: Optional[torch.dtype] = None) -> "RouterLinear":
        """A RouterLinear sharing nothing with `linear` but holding its weights, cast to bf16, and keeping their
        requires_grad (a frozen gate stays frozen, and on the eager fast path)."""
        m = cls(linear.in_features, linear.out_features, linear.bias is not None,
                device=linear.weight.device, out_dtype=out_dtype)
        with torch.no_grad():
            m.weight.copy_(linear.weight)
            if linear.bias is not None:
                m.bias.copy_(linear.bias)
        m.weight.requires_grad_(linear.weight.requires_grad)
        if linear.bias is not None:
            m.bias.requires_grad_(linear.bias.requires_grad)
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return router_gemm(x, self.weight, self.bias, out_dtype=self.out_dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, out_dtype={self.out_dtype}")
