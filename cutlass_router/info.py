"""What `python -m cutlass_router info` prints: the environment and which kernel each model size takes."""
from __future__ import annotations

import platform


def report() -> str:
    import torch

    from . import build, cache, dispatch, env, manifest, models, resolve, target
    from .families.route import BLOCK_MAX_M, select_symbol

    lines = [f"python {platform.python_version()}, torch {torch.__version__}"]
    try:
        from cuda import bindings

        lines.append(f"cuda-python (cuda.bindings) {bindings.__version__}")
    except ImportError:
        lines.append("cuda-python: not installed (the torch path will be used)")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            cc = torch.cuda.get_device_capability(i)
            why = target.device_blocker(i, cc)
            lines.append(f"GPU {i}: {torch.cuda.get_device_name(i)} (sm_{cc[0]}{cc[1]})"
                         + (f" - {why}: the ops run the torch path" if why else ""))
    else:
        lines.append(f"GPU: none visible (the ops run the torch path; the kernels need an {target.ARCH} GPU)")
    lines.append(f"driver: {_driver_version()}; torch's CUDA runtime: {torch.version.cuda or 'none (CPU build)'}")
    try:
        tc = build.find_toolchain()
        lines.append(f"nvcc {tc.version} at {tc.nvcc}; CUTLASS headers at {tc.cutlass_root}")
    except build.BuildError as e:
        lines.append(f"toolkit: {e}")
    flags = env.in_force()
    lines.append("environment: " + (", ".join(f"{k}={v}" for k, v in flags.items()) if flags else "no "
                                    "CUTLASS_ROUTER_* switch set")
                 + f" (in effect: PDL {'on' if env.flag(env.PDL) else 'off'}, batch invariance "
                 f"{'on' if env.flag(env.BATCH_INVARIANT) else 'off'}, kernels "
                 f"{'disabled' if env.flag(env.DISABLE) else 'enabled'})")
    entries = manifest.entries()
    origins = {s: resolve.origin(e) for s, e in entries.items()}
    shipped = sum(o == resolve.SHIPPED for o in origins.values())
    lines.append(f"kernels: {len(entries)} emitted, {shipped} shipped in the package (what dispatch can reach, "
                 f"{len(dispatch.reachable())}), {sum(o == resolve.CACHED for o in origins.values())} cached")
    d = cache.cache_dir()
    why = cache.unwritable_reason()
    lines.append(f"cache: {d}" + (f" - NOT WRITABLE ({why}); builds go to a per-user temporary directory"
                                  if why else ""))
    for name, model in models.MODELS.items():
        N, K = model.shape
        tuned = (N, K) in dispatch.tuned_table()
        lines.append(f"{name} (N={N}, K={K}): {'tuned' if tuned else 'default'} dispatch")
        low = 0
        for r in dispatch.ladder(N, K):
            span = f"> {low}" if r.max_m >= 1 << 62 else f"{low + 1}..{r.max_m}"
            where = {origins[r.bf16], origins[r.f32]}
            lines.append(f"  M {span}: {r.bf16} (fp32 out: {r.f32}) - {_say(where)}")
            low = r.max_m
        low = 0
        for r in dispatch.invariant_ladder(N, K):  # every rung of one order: the same bits at every M
            span = f"> {low}" if r.max_m >= 1 << 62 else f"{low + 1}..{r.max_m}"
            lines.append(f"  batch_invariant, M {span}: {r.bf16} (fp32 out: {r.f32}) - "
                         f"{_say({origins[r.bf16], origins[r.f32]})}")
            low = r.max_m
        low = 0
        for r in dispatch.route_ladder(N, K):
            span = f"> {low}" if r.max_m >= 1 << 62 else f"{low + 1}..{r.max_m}"
            if r.kernel == dispatch.GEMM_THEN_SELECT:
                choice = (model.route.get("scoring", "topk_softmax"), model.route.get("n_group", 1))
                sizes = (model.route.get("topk_group", 1), model.top_k)
                first, last = select_symbol(N, *choice, low + 1, *sizes), select_symbol(N, *choice, r.max_m, *sizes)
                what = f"the GEMM above, then {first} - {_say({origins[first]})}"
                if last != first:  # the select kernel changes inside the rung (families/route.py: select_symbol)
                    what += f"; from M = {BLOCK_MAX_M + 1}: {last} - {_say({origins[last]})}"
            else:
                what = f"{r.kernel} - {_say({origins[r.kernel]})}"
            lines.append(f"  route, M {span}: {what}" + (" (PDL by default)" if r.pdl else ""))
            low = r.max_m
    return "\n".join(lines)


def _say(origins: set[str]) -> str:
    from . import resolve

    if origins == {resolve.SHIPPED}:
        return "shipped"
    if "unavailable" in origins:
        return "not shipped and no nvcc: falls back"
    return "cached" if origins <= {resolve.SHIPPED, resolve.CACHED} else "built with nvcc on first use"


def _driver_version() -> str:
    try:
        from cuda.bindings import driver

        err, v = driver.cuDriverGetVersion()
        return f"CUDA {v // 1000}.{v % 1000 // 10}" if not err else "none (no NVIDIA driver found)"
    except Exception:  # no libcuda: say so rather than fail the report
        return "none (no NVIDIA driver library on this machine)"
