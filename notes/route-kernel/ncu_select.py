"""The workload of the fifth session's ncu run on the DeepSeek select kernel (notes/PERF.md), on the device:

    ncu --cache-control none --warp-sampling-interval 0 --section WarpStateStats --section SourceCounters \
        -k regex:"select|sigmoid" --launch-skip 4 --launch-count 2 -o sel python3 notes/route-kernel/ncu_select.py

route() at M=1 (router_gemm, then crt_route_select_sigmoid_p8) and the Triton stand-in, three times each.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import triton_peers  # noqa: E402
from cutlass_router import route  # noqa: E402

N, K = 256, 7168
g = torch.Generator(device="cuda").manual_seed(0)
x = torch.randn(1, K, device="cuda", dtype=torch.bfloat16, generator=g)
w = (torch.randn(N, K, device="cuda", generator=g) * K ** -0.5).to(torch.bfloat16)
cb = torch.randn(N, device="cuda", generator=g) * 0.1
kw = dict(scoring="sigmoid", n_group=8, topk_group=4, correction_bias=cb, renormalize=True,
          routed_scaling_factor=2.5, logit_precision="fp32")
logits = torch.randn(1, N, device="cuda")
for _ in range(3):
    route(x, w, None, 8, **kw)
    triton_peers.sigmoid_grouped_topk(logits, 8, 8, 4, cb, 2.5)
torch.cuda.synchronize()
