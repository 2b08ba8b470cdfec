"""Device check: every manifest kernel against fp64 at odd sizes, tune, timings vs F.linear, eager cost."""
import os, sys, time
import torch, torch.nn.functional as F
import triton.testing
from cutlass_router import manifest, ops, launch, validate, tune

torch.manual_seed(0)
dev = "cuda"
print(torch.cuda.get_device_name(), torch.__version__, flush=True)
bad = 0
for sym, e in manifest.entries().items():
    odt = torch.bfloat16 if e.out_dtype == "bf16" else torch.float32
    worst = 0.0
    for N in (32, 128, 60):
        for K in (2880, 1000):
            for M in (1, 3, 13, 64, 257):
                x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
                w = torch.randn(N, K, device=dev, dtype=torch.bfloat16) * 0.05
                b = torch.randn(N, device=dev, dtype=torch.bfloat16)
                for bias in (b, None):
                    out = torch.full((M, N), float("nan"), device=dev, dtype=odt)
                    ops.run_kernel(sym, x, w, bias, odt, out=out)
                    ref = x.double() @ w.double().T + (0 if bias is None else bias.double())
                    err = ((out.double() - ref).norm() / ref.norm()).item()
                    if not err < (1e-2 if odt == torch.bfloat16 else 1e-4):
                        bad += 1
                        if bad < 10:
                            print("BAD", sym, M, N, K, bias is not None, err, flush=True)
                    worst = max(worst, err) if err == err else float("inf")
    torch.cuda.synchronize()
    print(f"{sym}: worst rel err {worst:.2e}", flush=True)
print("bad cases:", bad, flush=True)

out_dir = os.environ.get("OUT", "/tmp")
for model, (N, K) in (("gpt-oss-120b", (128, 2880)), ("gpt-oss-20b", (32, 2880))):
    table = tune.measure(N, K)
    tune.write_table(tune.default_path(), N, K, table, f"python -m cutlass_router tune --model {model}")
os.system(f"cp {tune.default_path()} {out_dir}/sm_90a.json")

def bench(fn):
    return triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median") * 1000

print(f"{'N':>4} {'M':>5} {'F.linear':>9} {'ours':>7} {'ours nopdl':>10} {'f32':>7}")
for N in (32, 128):
    K = 2880
    w = torch.randn(N, K, device=dev, dtype=torch.bfloat16)
    b = torch.randn(N, device=dev, dtype=torch.bfloat16)
    for M in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192):
        x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
        t_ref = bench(lambda: F.linear(x, w, b))
        t_us = bench(lambda: ops.router_gemm(x, w, b))
        t_np = bench(lambda: ops.router_gemm(x, w, b, pdl=False))
        t_32 = bench(lambda: ops.router_gemm(x, w, b, out_dtype=torch.float32))
        print(f"{N:>4} {M:>5} {t_ref:9.2f} {t_us:7.2f} {t_np:10.2f} {t_32:7.2f}", flush=True)

x = torch.randn(1, 2880, device=dev, dtype=torch.bfloat16)
w = torch.randn(128, 2880, device=dev, dtype=torch.bfloat16); b = torch.randn(128, device=dev, dtype=torch.bfloat16)
out = torch.empty(1, 128, device=dev, dtype=torch.bfloat16)
k, _ = ops._plan(0, 128, 2880, 1, "bf16")
s = ops._raw_stream(0)
args = (k, 0, s, True, 132, x.data_ptr(), w.data_ptr(), b.data_ptr(), out.data_ptr(), 1, 128, 2880, 2880, 2880, 128)
cfg = launch._config(k, launch.grid_for(k, 1, 128), True)
buf, argv, _ = launch._params_buffer()
import ctypes
from cuda.bindings import driver
parts = {
    "F.linear": lambda: F.linear(x, w, b),
    "router_gemm": lambda: ops.router_gemm(x, w, b),
    "torch.ops": lambda: torch.ops.cutlass_router.router_gemm(x, w, b),
    "launch.launch": lambda: launch.launch(*args),
    "cuLaunchKernelEx": lambda: driver.cuLaunchKernelEx(cfg, k.kernel, ctypes.addressof(argv), 0),
    "torch.empty": lambda: torch.empty((1, 128), dtype=torch.bfloat16, device=x.device),
    "check_args": lambda: validate.check_args(x, w, b, None),
    "kernel_blocker": lambda: validate.kernel_blocker(x, w, b),
    "_raw_stream": lambda: ops._raw_stream(0),
    "current_device": lambda: torch.cuda.current_device(),
}
for name, fn in parts.items():
    for _ in range(200): fn()
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(5000): fn()
    torch.cuda.synchronize(); print(f"eager {name}: {(time.perf_counter()-t)/5000*1e6:.2f} us/call", flush=True)
