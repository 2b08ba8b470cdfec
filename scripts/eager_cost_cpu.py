"""The Python host cost of an eager call without a GPU: a CPU stand-in for scripts/eager_cost.py.

CPU tensors take the kernel path with a fake LoadedKernel (the real manifest entry, no cubin), and the launch is a
ctypes PyDLL call into a no-op C function with cuLaunchKernelEx's signature (compiled here with cc). Everything else
(argument checks, the plan cache, packing, the launch configurations, allocation) runs as on the GPU; only
device-dependent lookups are stubbed (the device is -1, the stream 0). Per call, best of 7 repeats of N calls.
Run: python scripts/eager_cost_cpu.py  (ONLY=name,name to select rows; N=calls per repeat)
"""
import ctypes, functools, gc, inspect, os, subprocess, sys, tempfile, timeit
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import cutlass_router as cr  # noqa: E402
from cutlass_router import plan, launch, ops, manifest, families  # noqa: E402

print(f"cutlass_router from {cr.__file__}")

def fake(symbol):
    e = manifest.entry(symbol); fam = families.of(e.family)
    block, cluster, smem = fam.geometry(e, None)
    k = launch.LoadedKernel(e, fam, None, 0x1234, block, cluster, smem, "fake")
    k.devices.add(-1)
    return k
_kern = {}
launch.load = lambda s: _kern.setdefault(s, fake(s))
plan.device_blocker = lambda i: None
for name in ("_make", "_make_route"):
    src = inspect.getsource(getattr(plan, name)).replace("if not x.is_cuda:", "if False:")
    exec(compile(src, plan.__file__, "exec"), plan.__dict__)
# route's eager choice as for a CUDA tensor outside graph capture (one launch at decode sizes)
exec(compile(inspect.getsource(ops._one_launch).replace("x.is_cuda and ", ""), ops.__file__, "exec"), ops.__dict__)
ops._capturing = lambda: False
plan._current_device = (-1).__index__
plan._raw_stream_of = (0).__mul__
plan.sm_count = functools.lru_cache(None)(lambda i: 132)
_tmp = tempfile.mkdtemp()
subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", f"{_tmp}/libnoop.so", "-x", "c", "-"], check=True,
               input=b"int cuLaunchKernelEx(void *a, void *b, void *c, void *d) { return 0; }\n")
noop = ctypes.PyDLL(f"{_tmp}/libnoop.so").cuLaunchKernelEx
noop.restype = ctypes.c_int
noop.argtypes = [ctypes.c_void_p] * 4
launch._libcuda_launch = functools.lru_cache(None)(lambda: noop)

torch.manual_seed(0)
N, K = 128, 2880
x = torch.randn(1, K).bfloat16()
w = (torch.randn(N, K) * K ** -0.5).bfloat16()
b = torch.randn(N).bfloat16()
out = torch.empty(1, N, dtype=torch.bfloat16)
route_out = (torch.empty(1, 4), torch.empty(1, 4, dtype=torch.int32))
pw, pb = torch.nn.Parameter(w.clone()), torch.nn.Parameter(b.clone())
p_ = plan.gemm(x, w, b, None, None, False)
k = p_.kernel
assert k is not None and k.origin == "fake"
rp = plan.route(x, w, b, None, ops._args(4, "topk_softmax", False, 1, 1, 1.0, "bf16", None, torch.float32, torch.int32), False,
                one_launch=True)
assert rp.kernel is not None, rp

@torch.no_grad()
def gate_route(x, weight, bias):
    return cr.route(x, weight, bias, 4)

parts = {
    "router_gemm(x,w,b)": lambda: cr.router_gemm(x, w, b),
    "router_gemm(out=)": lambda: cr.router_gemm(x, w, b, out=out),
    "torch.ops...router_gemm(x,w,b)": lambda: torch.ops.cutlass_router.router_gemm(x, w, b),
    "route(x,w,b,4)": lambda: cr.route(x, w, b, 4),
    "route(out=)": lambda: cr.route(x, w, b, 4, out=route_out),
    "route, Parameters, no_grad": lambda: gate_route(x, pw, pb),
    "  plan.gemm (cached)": lambda: plan.gemm(x, w, b, None, None, False),
    "  plan.run_gemm (alloc+pack+launch)": lambda: plan.run_gemm(p_, x, w, b, None, False),
    "  plan.launch_gemm (pack+launch)": lambda: plan.launch_gemm(k, x, w, b, out, True),
    "  launch.launch (config+call)": lambda: launch.launch(k, -1, 0, True, (8, 1, 1)),
    "  ctypes no-op call": lambda: noop(1, 2, 3, None),
    "  x.new_empty": lambda: x.new_empty((1, N), dtype=torch.bfloat16),
    "  needs_dispatcher": lambda: ops.needs_dispatcher(x, w, b, None),
    "  env.flag": lambda: cr.env.flag(cr.env.PDL),
    "  ops._args (route's scalars)": lambda: ops._args(4, "topk_softmax", False, 1, 1, 1.0, "bf16", None, torch.float32, torch.int32),
    "  plan.route (cached)": lambda: plan.route(x, w, b, None, rp.args, False),
    "  plan.run_route (alloc+pack+launch)": lambda: plan.run_route(rp, x, w, b, None, None, False),
}
only = os.environ.get("ONLY")
if only:
    parts = {k: v for k, v in parts.items() if any(o in k for o in only.split(","))}
n = int(os.environ.get("N", 20000))
gc.disable()
for name, fn in parts.items():
    for _ in range(500): fn()
    best = min(timeit.repeat(fn, number=n, repeat=int(os.environ.get("R", 7)))) / n * 1e6
    print(f"{name:<40} {best:6.2f} us/call", flush=True)
