"""Kernel families. Each module owns one family: its spec (a frozen dataclass with symbol, config, launch
facts and emit()), how its kernels are launched (geometry, parameter packing, grid), its constraints (blocker),
and whether it needs a host library (HOST_LIB). The rest of the package asks the family, never its name.

A family module provides: FAMILY, HOST_LIB, a spec class, geometry(entry, host) -> (block, cluster, smem),
blocker(entry, M, N) -> reason or None, and a pack function for the op it serves (pack_gemm for the GEMM
families, pack_route for route, pack for rmsnorm); HOST_LIB families also provide open_host(entry). Optionally
gemm_pack_fixed(entry, M, N, K, ldx, ldw, ldo) -> (pack_into, tail, grid), which lets a plan pack a call's pointers
only (plan.PlanLaunch), or None for a kernel whose parameters must be packed in full on every call.
"""
from __future__ import annotations

from types import ModuleType

from . import cutlass_sm90, gemv, rmsnorm, route, splitk_mma

FAMILIES: dict[str, ModuleType] = {m.FAMILY: m for m in (splitk_mma, gemv, cutlass_sm90, route, rmsnorm)}


def of(name: str) -> ModuleType:
    return FAMILIES[name]
