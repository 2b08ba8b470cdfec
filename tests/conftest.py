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
