"""What `python -m cutlass_router info` prints: the environment and which path each model size takes."""
from __future__ import annotations

import platform


def report() -> str:
    import torch

    from . import build, cache, dispatch, manifest, models

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
        lines.append(f"driver/runtime: CUDA {torch.version.cuda}")
    else:
        lines.append("GPU: none visible (router_gemm runs the CPU/torch path)")
    try:
        tc = build.find_toolchain()
        lines.append(f"nvcc {tc.version} at {tc.nvcc}; CUTLASS headers at {tc.cutlass_root}")
    except build.BuildError as e:
        lines.append(f"toolkit: {e}")
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
            lines.append(f"  M {span}: {r.bf16} (fp32 out: {r.f32})")
            low = r.max_m
    return "\n".join(lines)
