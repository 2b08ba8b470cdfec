"""cutlass-router: the MoE router GEMM (logits = x @ W.T + b) from kernels emitted by the CUTLASS Python interface.

    y = cutlass_router.router_gemm(x, weight, bias)            # == F.linear(x, weight, bias)
    y = torch.ops.cutlass_router.router_gemm(x, weight, bias)  # the same op, visible to torch.compile
    gate = cutlass_router.RouterLinear(2880, 128, bias=True)
"""
from .module import RouterLinear
from .ops import router_gemm, router_gemm_op

__all__ = ["RouterLinear", "router_gemm", "router_gemm_op"]
__version__ = "0.1.0"
