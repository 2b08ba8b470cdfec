"""What `python -m cutlass_router info` prints: the environment and which path each model size takes."""
from __future__ import annotations

import platform


def report() -> str:
    import torch

    from . import build, cache, dispatch, manifest, models, prebuilt

    lines = [f"python {platform.python_version()}, torch {torch.__version__}"]
    try:
        from cuda import bindings

        lines.append(f"cuda-python (cuda.bindings) {bindings.__version__}")
    except ImportError:
        lines.append("cuda-python: not installed (the fallback path will be used)")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            cc = torch.cuda.get_device_capability(i)
            lines.append(f"GPU {i}: {torch.cuda.get_device_name(i)} (sm_{cc[0]}{cc[1]})"
                         + ("" if cc == (9, 0) else " - not Hopper: router_gemm falls back to torch"))
        lines.append(f"driver: {_driver_version()}; torch's CUDA runtime: {torch.version.cuda}")
    else:
        lines.append("GPU: none visible (router_gemm runs the CPU/torch path)")
    try:
        tc = build.find_toolchain()
        lines.append(f"nvcc {tc.version} at {tc.nvcc}; CUTLASS headers at {tc.cutlass_root}")
    except build.BuildError as e:
        tc = None
        lines.append(f"toolkit: {e}")
    shipped = [s for s in manifest.entries() if _shipped(s)]
    lines.append(f"shipped in the package: {len(shipped)} of {len(manifest.entries())} kernels "
                 f"(platform {prebuilt.platform_tag()})")
    d = cache.cache_dir()
    built = sorted(p.name for p in d.glob("*.cubin")) if d.is_dir() else []
    lines.append(f"cache: {d} ({len(built)} cubins)")
    lines.append(f"kernels in manifest: {len(manifest.entries())}")
    for name, (N, K) in models.MODELS.items():
        tuned = (N, K) in dispatch.tuned_table("sm_90a")
        lines.append(f"{name} (N={N}, K={K}): {'tuned' if tuned else 'default'} dispatch")
        low = 0
        for r in dispatch.ladder(N, K):
            span = f"> {low}" if r.max_m >= 1 << 62 else f"{low + 1}..{r.max_m}"
            lines.append(f"  M {span}: {r.bf16} (fp32 out: {r.f32}) - {_source(r.bf16, r.f32, tc)}")
            low = r.max_m
    return "\n".join(lines)


def _driver_version() -> str:
    try:
        from cuda.bindings import driver

        err, v = driver.cuDriverGetVersion()
        return f"CUDA {v // 1000}.{v % 1000 // 10}" if not err else f"unknown ({err})"
    except Exception as e:  # no libcuda: say so rather than fail the report
        return f"unknown ({e})"


def _shipped(symbol: str) -> bool:
    from . import manifest, prebuilt

    e = manifest.entry(symbol)
    source = e.source()
    if prebuilt.lookup(symbol, source, "sm_90a") is None:
        return False
    return e.launch["params"] != "host_lib" or prebuilt.lookup_host(symbol, source, "sm_90a") is not None


def _source(bf16: str, f32: str, toolchain) -> str:
    """Where this rung's kernels come from, and what happens without them."""
    if _shipped(bf16) and _shipped(f32):
        return "shipped"
    return "built with nvcc on first use" if toolchain else "not shipped and no nvcc: falls back"
