"""router_gemm's default kernel under ncu: python notes/invariant/ncu_default.py M N K"""
import sys

import torch

import cutlass_router

M, N, K = map(int, sys.argv[1:4])
x = torch.randn(M, K, device="cuda", dtype=torch.bfloat16)
w = torch.randn(N, K, device="cuda", dtype=torch.bfloat16)
b = torch.randn(N, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    cutlass_router.router_gemm(x, w, b, pdl=False)
torch.cuda.synchronize()
