"""The project's small-M family: split-K over warps and a thread block cluster, mma.sync, PDL.

The kernel body is a CUTLASS/CuTe template (templates/splitk_mma.cuh, using CuTe's mma.sync atom and cluster
primitives); an emitted file instantiates it for one configuration and includes the template, which the build
inlines (manifest.expand), so the hash of what is compiled covers the template.

Launch: grid (N tiles x cluster, M tiles), block 32 x warps, no dynamic shared memory, one SplitKParams by value.
Tiled serial kernels (order_slices > 0, splitk_tiled in the template): no cluster, K not split, W and x staged through
shared memory per CTA tile by TMA, summed in the order of the split kernel whose `order()` they share, so both give a row
the same bits: the batch-invariant mode's kernels at prefill sizes (dispatch.choose_invariant). Their launch adds
dynamic shared memory (launch()["smem_bytes"]) and takes SplitKTiledParams: SplitKParams and the tensor maps of W and x,
encoded per launch (pack_gemm, encode_map).
Takes any N >= 1 and M up to 65535 token tiles; K a multiple of 8 with 16-byte aligned rows (validate.py).
"""
from __future__ import annotations

import ctypes
import struct
from dataclasses import asdict, dataclass
from functools import lru_cache

FAMILY = "splitk_mma"
HOST_LIB = False  # parameters are packed here, in Python
_OUT_CTYPE = {"bf16": "__nv_bfloat16", "f32": "float"}
MAX_GRID_Y = 65535
MAX_SMEM = 227 * 1024  # sm_90's dynamic shared memory per CTA

# Mirrors cutlass_router::SplitKParams (templates/splitk_mma.cuh): 4 pointers, 3 int64 strides, 4 int32.
PARAMS = struct.Struct("<QQQQqqqiiii")
# The tiled kernels' SplitKTiledParams: SplitKParams, then the TMA tensor maps of W and x (CUtensorMap, 128 bytes each,
# 64-byte aligned) at these offsets; 384 bytes in all.
TILED_MAPS = (128, 256)
TILED_PARAMS_SIZE = 384
MAX_BOX_ROWS = 256  # a TMA box's rows


@dataclass(frozen=True)
class SplitKSpec:
    out_dtype: str      # "bf16" or "f32"
    warps: int = 4      # warps per CTA, each a K slice
    cluster: int = 8    # CTAs per cluster, each a K range
    exp_tiles: int = 1  # 16-expert MMA tiles per CTA
    tok_tiles: int = 1  # 8-token MMA tiles per CTA
    unroll: int = 2     # 64-wide K chunks in flight per warp
    order_slices: int = 0  # serial kernel: the split kernel's slices (warps x cluster) it reproduces; 0: split
    order_unroll: int = 0  # serial kernel: that kernel's unroll (which chunk goes to which accumulator set)
    order_acc: int = 0     # serial kernel: that kernel's accumulator sets (1 or 2)
    warps_e: int = 0       # serial kernel: warps along the experts (`warps` are then along the tokens)
    stages: int = 0        # serial kernel: shared-memory stages of one 64-wide K chunk each
    groups: int = 0        # serial kernel: warp groups sharing the K slices (0 or 1: one group)
    acc: int = 0           # split kernel: 1 = one accumulator set at any unroll, unroll 1's bits (splitk_mainloop's
                           # kAccSets); 0 = two sets when E x T <= 2 and unroll >= 2

    def __post_init__(self):
        if self.groups == 1:  # one group is no groups: one spelling, one symbol, one manifest entry
            object.__setattr__(self, "groups", 0)
        if self.out_dtype not in _OUT_CTYPE:
            raise ValueError(f"out_dtype must be one of {sorted(_OUT_CTYPE)}, got {self.out_dtype!r}")
        if not 1 <= self.cluster <= 16:
            raise ValueError(f"cluster must be 1..16 CTAs (Hopper's non-portable limit), got {self.cluster}")
        if self.warps * 32 > 1024 or self.warps < 1:
            raise ValueError(f"warps must be 1..32, got {self.warps}")
        if self.acc not in (0, 1) or (self.acc and self.order_slices):
            raise ValueError(f"acc is 0 (automatic) or 1 (one accumulator set), and for split kernels only: {self}")
        if self.order_slices and not (self.cluster == 1 and self.order_unroll >= 1 and self.order_acc in (1, 2)):
            raise ValueError(f"a serial kernel has no cluster and names its order (slices, unroll, accumulator sets "
                             f"1 or 2), got cluster {self.cluster}, order {self.order()}")
        if bool(self.order_slices) != bool(self.stages) or (self.stages and not (
                self.stages >= 2 and self.warps_e >= 1 and self.warps * self.warps_e * self.n_groups <= 32
                and self.smem_bytes() <= MAX_SMEM and max(self.tile()) <= MAX_BOX_ROWS
                and self.order_slices % self.n_groups == 0)) or (self.groups and not self.stages):
            raise ValueError(f"a serial kernel names its order and has >= 2 stages, >= 1 expert warps, at most 32 "
                             f"warps, {MAX_SMEM} bytes of shared memory, at most {MAX_BOX_ROWS} experts and tokens "
                             f"(a TMA box) and groups that divide the slices; a split kernel none of these: {self}")

    def order(self) -> tuple[int, int, int]:
        """What fixes a row's bits besides K: (K slices, unroll, accumulator sets), with the unroll 1 when there is
        one set (then it does not matter). Kernels with equal orders compute every row identically."""
        if self.order_slices:
            s, u, a = self.order_slices, self.order_unroll, self.order_acc
        else:
            s, u = self.warps * self.cluster, self.unroll
            a = self.acc or (2 if self.exp_tiles * self.tok_tiles <= 2 and self.unroll >= 2 else 1)  # its kAcc
        return s, (u if a > 1 else 1), a

    def tile(self) -> tuple[int, int]:
        """(experts, tokens) of a CTA's output tile."""
        if self.order_slices:
            return 16 * self.exp_tiles * self.warps_e, 8 * self.tok_tiles * self.warps
        return 16 * self.exp_tiles, 8 * self.tok_tiles

    @property
    def n_groups(self) -> int:
        return max(self.groups, 1)

    def smem_bytes(self) -> int:
        """Dynamic shared memory of a serial kernel (splitk_tiled's layout): each group's stages of 64-wide K chunks
        (128 bytes per W or x row), the fp32 partials of the slices of groups 1.. (group 0 adds them in order), and an
        mbarrier per group and stage."""
        experts, tokens = self.tile()
        later = self.order_slices - self.order_slices // self.n_groups  # slices of groups 1..
        parts = later * experts * tokens * 4 if self.groups > 1 else 0
        return self.n_groups * self.stages * ((experts + tokens) * 128 + 8) + parts

    @property
    def family(self) -> str:
        return FAMILY

    @property
    def symbol(self) -> str:
        if self.order_slices:
            s, u, a = self.order()
            return (f"crt_splitk_{self.out_dtype}_tiled_we{self.warps_e}_wt{self.warps}_e{self.exp_tiles}"
                    f"_t{self.tok_tiles}_s{self.stages}{f'_g{self.groups}' if self.groups > 1 else ''}_o{s}x{u}x{a}")
        return (f"crt_splitk_{self.out_dtype}_w{self.warps}_c{self.cluster}"
                f"_e{self.exp_tiles}_t{self.tok_tiles}_u{self.unroll}{f'_a{self.acc}' if self.acc else ''}")

    def config(self) -> dict:
        # The serial kernels' fields only where set: the split kernels' manifest entries (and source hashes) stay.
        return {k: v for k, v in asdict(self).items() if v or k not in ("warps_e", "stages", "groups", "acc")}

    def launch(self) -> dict:
        experts, tokens = self.tile()
        lc = {"block_threads": 32 * self.warps * max(self.warps_e, 1) * self.n_groups, "cluster": self.cluster,
              "tile_tokens": tokens, "tile_experts": experts}
        if self.order_slices:
            lc["smem_bytes"] = self.smem_bytes()
        return lc

    def emit(self) -> str:
        dtype = _OUT_CTYPE[self.out_dtype]
        if self.order_slices:
            s, u, a = self.order()
            call = (f"splitk_tiled<{s}, {u}, {a}, {self.warps_e}, {self.warps}, {self.exp_tiles}, {self.tok_tiles}, "
                    f"{self.stages}, {self.n_groups}, {dtype}>")
            bounds = f"{32 * self.warps * self.warps_e * self.n_groups}, 1"
            params = "SplitKTiledParams"
        else:
            call = (f"splitk_mma<{self.warps}, {self.cluster}, {self.exp_tiles}, {self.tok_tiles}, {self.unroll}, "
                    f"{dtype}{f', {self.acc}' if self.acc else ''}>")
            bounds = f"{32 * self.warps}, 1"
            params = "SplitKParams"
        return (
            f"// Generated by cutlass_router ({FAMILY}); regenerate with `python -m cutlass_router emit`.\n"
            f"// config: {self.config()}\n"
            f'#include "splitk_mma.cuh"\n\n'
            f"extern \"C\" __global__ void __launch_bounds__({bounds})\n"
            f"{self.symbol}(const __grid_constant__ cutlass_router::{params} params) {{\n"
            f"  cutlass_router::{call}(params);\n"
            f"}}\n"
        )


def geometry(entry, host=None) -> tuple[int, tuple[int, int, int], int]:
    """(block threads, cluster shape, dynamic shared memory bytes) of a loaded kernel."""
    lc = entry.launch
    return lc["block_threads"], (lc["cluster"], 1, 1), lc.get("smem_bytes", 0)


def grid(entry, M: int, N: int) -> tuple[int, int, int]:
    """N tiles (times the cluster: each CTA of a cluster is one K range) by M tiles."""
    lc = entry.launch
    return (-(-N // lc["tile_experts"]) * lc["cluster"], -(-M // lc["tile_tokens"]), 1)


def blocker(entry, M: int, N: int) -> str | None:
    """Why this kernel cannot take an (M, N) problem, or None."""
    if grid(entry, M, N)[1] > MAX_GRID_Y:
        return f"M = {M} exceeds the grid limit of {entry.symbol}"
    return None


def pack_gemm(k, buf, cap: int, grid_buf, x: int, w: int, bias: int, out: int, M: int, N: int, K: int,
              ldx: int, ldw: int, ldo: int, sm_count: int) -> tuple[int, int, int]:
    """Write SplitKParams (and a tiled kernel's tensor maps) into buf; return the grid."""
    PARAMS.pack_into(buf, 0, x, w, bias, out, ldx, ldw, ldo, M, N, K, 0)
    lc = k.entry.launch
    if _tiled(k.entry):
        base = ctypes.addressof(buf) if isinstance(buf, ctypes.Array) else \
            ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
        encode_map(base + TILED_MAPS[0], w, N, K, ldw, lc["tile_experts"])
        encode_map(base + TILED_MAPS[1], x, M, K, ldx, lc["tile_tokens"])
    return grid(k.entry, M, N)


def gemm_pack_fixed(entry, M: int, N: int, K: int, ldx: int, ldw: int, ldo: int):
    """For a plan, whose shapes and strides are fixed: (pack_into, tail, grid), where pack_into(buf, 0, x, w, bias,
    out, *tail) writes what pack_gemm writes, so that a call packs its four pointers in one struct call and computes
    no grid. None for a tiled kernel: its tensor maps hold x's and W's addresses, so pack_gemm encodes them on every
    call. A family without this function is packed by pack_gemm on every call."""
    if _tiled(entry):
        return None
    return PARAMS.pack_into, (ldx, ldw, ldo, M, N, K, 0), grid(entry, M, N)


def _tiled(entry) -> bool:
    """A tiled serial kernel's entry: the only ones of the family with dynamic shared memory (SplitKSpec.launch)."""
    return "smem_bytes" in entry.launch


# cuda.h's enum values: CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, _INTERLEAVE_NONE, _SWIZZLE_128B, _L2_PROMOTION_L2_256B,
# _FLOAT_OOB_FILL_NONE (out-of-bounds elements read as zeros).
_BF16, _NO_INTERLEAVE, _SWIZZLE_128B, _L2_256B, _OOB_ZEROS = 9, 0, 3, 3, 0


@lru_cache(maxsize=None)
def _encode_tiled():
    fn = ctypes.PyDLL("libcuda.so.1").cuTensorMapEncodeTiled  # PyDLL: keeps the GIL, as launch.py's launch does
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p] + [ctypes.c_void_p] * 4 + \
        [ctypes.c_int] * 4
    return fn


def encode_map(at: int, ptr: int, rows: int, K: int, ld: int, box_rows: int) -> None:
    """The tensor map of a bf16 [rows, K] matrix with row stride ld (elements) into the 128 bytes at address `at`:
    boxes of 64 K x box_rows rows, 128-byte swizzle (splitk_tiled's stages)."""
    from ..launch import LaunchError  # raised before anything is enqueued: the caller's torch path takes over

    try:
        encode = _encode_tiled()
    except (OSError, AttributeError) as e:
        raise LaunchError(f"cannot encode a TMA tensor map (libcuda's cuTensorMapEncodeTiled: {e})") from None
    dims = (ctypes.c_uint64 * 2)(K, rows)
    strides = (ctypes.c_uint64 * 1)(ld * 2)
    box = (ctypes.c_uint32 * 2)(64, box_rows)
    step = (ctypes.c_uint32 * 2)(1, 1)
    err = encode(at, _BF16, 2, ptr, dims, strides, box, step, _NO_INTERLEAVE, _SWIZZLE_128B, _L2_256B, _OOB_ZEROS)
    if err:
        raise LaunchError(f"cuTensorMapEncodeTiled failed (CUresult {err}) for a [{rows}, {K}] bf16 matrix, row "
                          f"stride {ld}, box 64 x {box_rows}")


def order(entry) -> tuple[int, int, int]:
    """SplitKSpec.order() of a manifest entry."""
    return SplitKSpec(**entry.config).order()
