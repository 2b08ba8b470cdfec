"""cutlass-router: the MoE router GEMM (logits = x @ W.T + b) and the expert choice after it, as emitted kernels.

Decode-sized M runs the project's own CuTe template (templates/, split-K mma.sync over a thread block cluster);
large M runs TMA + wgmma GEMMs emitted by the CUTLASS Python interface (cutlass_cppgen). Every kernel's source
is committed in emitted/ and ships prebuilt.

    y = cutlass_router.router_gemm(x, weight, bias)            # == F.linear(x, weight, bias)
    w, ids, _ = cutlass_router.route(x, weight, bias, top_k=4)  # gpt-oss's choice: top-4, softmax over them
    y = torch.ops.cutlass_router.router_gemm(x, weight, bias)  # the same op, visible to torch.compile
    gate = cutlass_router.RouterLinear(2880, 128, bias=True)
    xn = cutlass_router.rms_norm(h, norm_weight, eps)           # == F.rms_norm; lets the router start early:
    w, ids, _ = cutlass_router.route(xn, weight, bias, 4, pdl=True)  # ... route with PDL overlaps it
"""
from .module import RouterLinear
from .norm import rms_norm
from .ops import RouteResult, route, route_op, router_gemm, router_gemm_op

__all__ = ["RouteResult", "RouterLinear", "rms_norm", "route", "route_op", "router_gemm", "router_gemm_op"]
__version__ = "0.1.0"
