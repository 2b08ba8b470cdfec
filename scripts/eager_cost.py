"""Host cost of one eager call at M=1 (no graph), next to F.linear, and of the pieces of our path.

Run on the GPU: python scripts/eager_cost.py. Each figure is wall time per call over 5000 calls after warm-up,
with a device sync at both ends; at M=1 the kernels finish long before the host issues the next call.
"""
import ctypes
import time

import torch
import torch.nn.functional as F
from cuda.bindings import driver

from cutlass_router import launch, ops, router_gemm, validate


def per_call_us(fn, n=5000):
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / n * 1e6


def main():
    x = torch.randn(1, 2880, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(128, 2880, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(128, device="cuda", dtype=torch.bfloat16)
    out = torch.empty(1, 128, device="cuda", dtype=torch.bfloat16)
    k, _ = ops._plan(0, 128, 2880, 1, "bf16")
    s = ops._raw_stream(0)
    cfg = launch._config(k, launch.grid_for(k, 1, 128), True, s)
    _, argv, _ = launch._params_buffer()
    dev = x.device
    parts = {
        "F.linear(x, w, b)": lambda: F.linear(x, w, b),
        "cutlass_router.router_gemm": lambda: router_gemm(x, w, b),
        "torch.ops.cutlass_router.router_gemm": lambda: torch.ops.cutlass_router.router_gemm(x, w, b),
        "  launch.launch": lambda: launch.launch(k, 0, s, True, 132, x.data_ptr(), w.data_ptr(), b.data_ptr(),
                                                 out.data_ptr(), 1, 128, 2880, 2880, 2880, 128),
        "  driver.cuLaunchKernelEx": lambda: driver.cuLaunchKernelEx(cfg, k.kernel, argv, 0),
        "  torch.empty(device=x.device)": lambda: torch.empty((1, 128), dtype=torch.bfloat16, device=dev),
        "  torch.empty(device=0)": lambda: torch.empty((1, 128), dtype=torch.bfloat16, device=0),
        "  x.new_empty": lambda: x.new_empty((1, 128)),
        "  validate.check_args": lambda: validate.check_args(x, w, b, None),
        "  validate.kernel_blocker": lambda: validate.kernel_blocker(x, w, b),
    }
    for name, fn in parts.items():
        print(f"{name:<42} {per_call_us(fn):6.2f} us/call", flush=True)


if __name__ == "__main__":
    main()
