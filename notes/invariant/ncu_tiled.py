"""One tiled kernel (and its split twin) under ncu: python notes/invariant/ncu_tiled.py SYMBOL M N K"""
import sys

import torch

from cutlass_router import ops

sym, M, N, K = sys.argv[1], *map(int, sys.argv[2:5])
x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
b = torch.randn(N, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    ops.run_kernel(sym, x, w, b, torch.bfloat16, pdl=False)
torch.cuda.synchronize()
