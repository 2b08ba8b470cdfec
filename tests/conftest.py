import os
import tempfile

import pytest
import torch

# Tests never touch the user's kernel cache: one temporary cache for the whole session, unless CI gives one.
os.environ.setdefault("CUTLASS_ROUTER_CACHE_DIR", tempfile.mkdtemp(prefix="cutlass_router_test_cache_"))


def _has_sm90() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability(0) == (9, 0)


def _has_nvcc() -> bool:
    from cutlass_router import build

    try:
        build.find_toolchain()
        return True
    except build.BuildError:
        return False


def pytest_collection_modifyitems(config, items):
    gpu_skip = None if _has_sm90() else pytest.mark.skip(reason="needs an sm90 (Hopper) GPU")
    nvcc_skip = None if _has_nvcc() else pytest.mark.skip(reason="needs nvcc (CUDA toolkit)")
    for item in items:
        if gpu_skip and "gpu" in item.keywords:
            item.add_marker(gpu_skip)
        if nvcc_skip and ("nvcc" in item.keywords or "build" in item.keywords):  # GPU tests use shipped kernels
            item.add_marker(nvcc_skip)


@pytest.fixture
def hide_nvcc(monkeypatch):
    """Call it to continue as on a machine without a CUDA toolkit (undone after the test)."""
    from cutlass_router import build

    def missing():
        raise build.ToolkitNotFound("nvcc not found: install the CUDA toolkit (12.4+) or set CUDA_HOME")

    return lambda: monkeypatch.setattr(build, "find_toolchain", missing)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in fp64; NaN anywhere gives inf."""
    out = out.double().cpu()
    ref = ref.double().cpu()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def fp64_ref(x, w, b):
    y = x.double() @ w.double().T
    return y if b is None else y + b.double()


EARLY_TRIGGER_SOURCE = r"""
#include "splitk_mma.cuh"
// A producer that lets its dependents launch at once (as a Triton kernel with gdc_launch_dependents, or
// tinygemm2, does), spins p.K nanoseconds, then copies p.M 16-byte words from p.x to p.out.
extern "C" __global__ void crt_test_early_trigger_copy(const __grid_constant__ cutlass_router::SplitKParams p) {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  long long t0, t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do { asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); } while (t - t0 < p.K);
  const uint4* src = reinterpret_cast<const uint4*>(p.x);
  uint4* dst = reinterpret_cast<uint4*>(p.out);
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < p.M; i += (long long)gridDim.x * blockDim.x)
    dst[i] = src[i];
}
"""


def early_trigger_copy():
    """copy(src, dst, spin_ns): poisons nothing itself; launched on the current stream without PDL, it triggers its
    dependents at once and writes dst only after spin_ns. A dependent launched with PDL that read dst before its
    griddepcontrol.wait would see dst's old contents."""
    import torch

    from cutlass_router import launch, manifest, plan
    from cutlass_router.families import splitk_mma

    from cutlass_router.build import ToolkitNotFound

    entry = manifest.KernelEntry("crt_test_early_trigger_copy", "splitk_mma", "", "", "", "bf16", {},
                                 {"block_threads": 256, "cluster": 1, "tile_tokens": 1, "tile_experts": 1})
    try:
        k = launch.load_entry(entry, EARLY_TRIGGER_SOURCE)
    except ToolkitNotFound as e:  # the producer is a test kernel: it ships nowhere, so it needs nvcc
        import pytest

        pytest.skip(f"the early-triggering producer is compiled for the test: {e}")

    def copy(src, dst, spin_ns=20000):
        assert src.is_contiguous() and dst.is_contiguous() and src.nbytes == dst.nbytes and src.nbytes % 16 == 0
        buf = launch.params_buffer()[0]
        splitk_mma.PARAMS.pack_into(buf, 0, src.data_ptr(), 0, 0, dst.data_ptr(), 0, 0, 0, src.nbytes // 16, 0,
                                    spin_ns, 0)
        dev = src.get_device()
        launch.launch(k, dev, plan.raw_stream(dev), False, (64, 1, 1))

    return copy


def replay_under_memory_traffic(step, feed, wrong, rounds=2000) -> int:
    """How a production graph fails: step() is warmed up outside capture (as a caller's first call is), captured in a
    CUDA graph and replayed `rounds` times while another stream copies 512 MB every 50 replays. feed(i) runs on
    the current stream before replay i; wrong(i, captured) returns a device count of that replay's wrong elements
    (captured: what step returned during capture). Returns the total, read once at the end."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    noise = torch.cuda.Stream()
    big_a = torch.empty(256 << 20, device="cuda", dtype=torch.uint8)
    big_b = torch.empty_like(big_a)
    bad = torch.zeros((), device="cuda", dtype=torch.int64)
    for i in range(rounds):
        if i % 50 == 0:
            with torch.cuda.stream(noise):
                for _ in range(4):
                    big_b.copy_(big_a)
        feed(i)
        graph.replay()
        bad += wrong(i, captured)
    torch.cuda.synchronize()
    return int(bad.item())
