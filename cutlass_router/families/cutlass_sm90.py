"""CUTLASS 3.x sm_90a GEMM family: TMA warp-specialized mainloop + EVT epilogue (accumulator + broadcast bias).

cutlass_cppgen (pip nvidia-cutlass) writes the CUTLASS type definitions; this module pins every choice it
would otherwise default (tile, cluster, schedules, stages, tile scheduler), then appends its own kernel entry
and C-linkage host functions. Nothing here asks a GPU or compiles: the emitted text is a pure function of the
spec, and the library compiles and launches it itself.

Launch: CUTLASS's Params hold TMA descriptors, so a host library built from the same source packs them
(HOST_LIB): block, cluster, shared memory and grid come from it too. The output's rows must be 16-byte
multiples for the TMA store (N a multiple of 8 for bf16, 4 for fp32).

Problem: out[M, N] = x[M, K] @ W[N, K]^T + bias[N], x/W bf16 K-contiguous, fp32 accumulation.
  swap_ab=False: GEMM (M, N, K) with A = x, B = W; D = out row-major; bias is a row vector of D.
  swap_ab=True:  GEMM (N, M, K) with A = W, B = x; D = out^T, i.e. out read column-major with leading
                 dimension ldo; bias is a column vector of D. Experts then fill the MMA's M side, which
                 suits few tokens.
"""
from __future__ import annotations

import ast
import ctypes
import functools
import re
import sqlite3
from dataclasses import asdict, dataclass

from ..target import CAPABILITY

FAMILY = "cutlass_sm90"
HOST_LIB = True  # CUTLASS packs the Params (TMA descriptors) in host code built from the same source
_CC = 10 * CAPABILITY[0] + CAPABILITY[1]  # cutlass_cppgen's compute capability (90)

_OUT_DTYPES = ("bf16", "f32")
# Only the TMA warp-specialized schedules; the value is the short name used in symbols.
_KERNEL_SCHEDULES = {
    "TmaWarpSpecialized": "ws",
    "TmaWarpSpecializedPingpong": "pp",
    "TmaWarpSpecializedCooperative": "coop",
}
# Sm90 EVT epilogues need a TMA epilogue; the cooperative kernel pairs with the cooperative one.
_EPILOGUE_SCHEDULES = {"TmaWarpSpecialized": "ews", "TmaWarpSpecializedCooperative": "ecoop"}
_NATURAL_EPILOGUE = {
    "TmaWarpSpecialized": "TmaWarpSpecialized",
    "TmaWarpSpecializedPingpong": "TmaWarpSpecialized",
    "TmaWarpSpecializedCooperative": "TmaWarpSpecializedCooperative",
}

# The epilogue as the EVT frontend parses it. Kept as source text so tracing needs no inspect.getsource.
_EPILOGUE_SOURCE = "def router_epilogue(accum, bias):\n    D = accum + bias\n    return D\n"


@dataclass(frozen=True)
class Sm90GemmSpec:
    out_dtype: str            # "bf16" or "f32"
    swap_ab: bool             # False: A=x (MxK), B=W ; True: A=W (NxK), B=x, computes out^T
    tile_m: int               # CTA tile along the GEMM's M (experts when swap_ab)
    tile_n: int               # CTA tile along the GEMM's N (tokens when swap_ab)
    tile_k: int
    cluster_m: int = 1
    cluster_n: int = 1
    kernel_schedule: str = "TmaWarpSpecializedCooperative"    # a cutlass_library.KernelScheduleType name
    epilogue_schedule: str = "TmaWarpSpecializedCooperative"  # a cutlass_library.EpilogueScheduleType name
    stages: int | None = None  # None = StageCountAutoCarveout (as many as fit beside the epilogue)

    def __post_init__(self):
        if self.out_dtype not in _OUT_DTYPES:
            raise ValueError(f"out_dtype must be one of {_OUT_DTYPES}, got {self.out_dtype!r}")
        if self.kernel_schedule not in _KERNEL_SCHEDULES:
            raise ValueError(f"kernel_schedule must be one of {sorted(_KERNEL_SCHEDULES)}, "
                             f"got {self.kernel_schedule!r}")
        if self.epilogue_schedule not in _EPILOGUE_SCHEDULES:
            raise ValueError(f"epilogue_schedule must be one of {sorted(_EPILOGUE_SCHEDULES)}, "
                             f"got {self.epilogue_schedule!r}")
        for name in ("tile_m", "tile_n", "tile_k", "cluster_m", "cluster_n"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.cluster_m * self.cluster_n > 16:
            raise ValueError("a cluster holds at most 16 CTAs")
        if self.stages is not None and (not isinstance(self.stages, int) or self.stages < 1):
            raise ValueError(f"stages must be None or a positive int, got {self.stages!r}")

    @property
    def family(self) -> str:
        return FAMILY

    @property
    def symbol(self) -> str:
        return symbol_of(self)

    def config(self) -> dict:
        return asdict(self)

    def launch(self) -> dict:
        # Block, cluster and shared memory come from the host library at load time; the output's rows must be
        # 16-byte multiples for the TMA store, so N must be a multiple of n_multiple.
        return {"n_multiple": 8 if self.out_dtype == "bf16" else 4,
                "tile_tokens": self.tile_n if self.swap_ab else self.tile_m,
                "tile_experts": self.tile_m if self.swap_ab else self.tile_n}

    def emit(self) -> str:
        return emit_source(self)


def symbol_of(spec: Sm90GemmSpec) -> str:
    """C identifier naming every field of the spec, e.g. crt_sm90_bf16_swap_128x16x128_c1x1_coop."""
    name = (f"crt_sm90_{spec.out_dtype}_{'swap' if spec.swap_ab else 'noswap'}"
            f"_{spec.tile_m}x{spec.tile_n}x{spec.tile_k}_c{spec.cluster_m}x{spec.cluster_n}"
            f"_{_KERNEL_SCHEDULES[spec.kernel_schedule]}")
    if spec.epilogue_schedule != _NATURAL_EPILOGUE[spec.kernel_schedule]:
        name += f"_{_EPILOGUE_SCHEDULES[spec.epilogue_schedule]}"
    if spec.stages is not None:
        name += f"_s{spec.stages}"
    return name


@functools.lru_cache(maxsize=None)
def _cppgen():
    """Import cutlass_cppgen without its side effect on the caller's directory.

    Its import creates ./compiled_cache.db (the cache of its own compile path, which we never use) in whatever
    directory the process runs from; that one connection is pointed at memory instead. cutlass_cppgen's own
    compile path, if someone else uses it in this process, then behaves as if imported from another directory.
    """
    real_connect = sqlite3.connect
    sqlite3.connect = lambda *args, **kwargs: real_connect(":memory:")
    try:
        import cutlass_cppgen
    finally:
        sqlite3.connect = real_connect
    return cutlass_cppgen


def _cutlass_types(spec: Sm90GemmSpec) -> tuple[str, str]:
    """(C++ type definitions from cutlass_cppgen, name of the GemmUniversal kernel type they define)."""
    _cppgen()
    # Everything below is the backend layer: op.Gemm would consult the device-queried option registry and
    # pick defaults, and the backend lets every choice be stated.
    from cutlass_library import (DataType, DataTypeSize, EpilogueScheduleType, KernelScheduleType, LayoutType,
                                 MathOperation, OpcodeClass, TileSchedulerType)
    from cutlass_cppgen.backend.evt import EpilogueFunctorVisitor
    from cutlass_cppgen.backend.evt.frontend import PythonASTFrontend
    from cutlass_cppgen.backend.evt.ir.tensor import Tensor
    from cutlass_cppgen.backend.gemm_operation import GemmOperationUniversal
    from cutlass_cppgen.backend.library import MathInstruction, TensorDescription, TileDescription

    class RouterEpilogue(PythonASTFrontend):
        def parse(self, example_inputs):
            self.example_inputs = example_inputs
            self.ast = ast.parse(_EPILOGUE_SOURCE)
            self.visit(self.ast)

    out = {"bf16": DataType.bf16, "f32": DataType.f32}[spec.out_dtype]
    d_layout = LayoutType.ColumnMajor if spec.swap_ab else LayoutType.RowMajor
    # Only shapes' ranks and which modes are 1 matter to the tracer: they make bias a column vector of D
    # (ColBroadcast) when swapped and a row vector (RowBroadcast) otherwise.
    rows, cols = 1024, 2048
    bias_shape = (rows, 1) if spec.swap_ab else (1, cols)
    visitor = RouterEpilogue(_CC)
    visitor.trace({
        "accum": Tensor(element=DataType.f32, shape=(rows, cols), layout_tag=LayoutType.RowMajor),
        "bias": Tensor(element=DataType.bf16, shape=bias_shape, layout_tag=LayoutType.RowMajor),
        "D": Tensor(element=out, shape=(rows, cols), layout_tag=d_layout),
    })

    cta_tile = [spec.tile_m, spec.tile_n, spec.tile_k]
    # The instruction shape only names the kernel type; CUTLASS's collective builder picks the wgmma.
    math = MathInstruction([64, spec.tile_n, 16], DataType.bf16, DataType.bf16, DataType.f32,
                           OpcodeClass.TensorOp, MathOperation.multiply_add)
    tile = TileDescription(cta_tile, spec.stages, None, math, [spec.cluster_m, spec.cluster_n, 1],
                           KernelScheduleType[spec.kernel_schedule],
                           EpilogueScheduleType[spec.epilogue_schedule], TileSchedulerType.Default)
    # TileDescription divides its shape by the cluster (library tiles are per cluster), but the EVT emitter
    # reads the undivided shape for the epilogue's CTA tile: give both the CTA tile so they agree.
    tile.blackwell_threadblock_shape = list(cta_tile)

    # A and B are both K-contiguous: A (M x K) row-major, B (K x N) column-major. C is absent (void).
    op = GemmOperationUniversal(
        _CC, tile,
        TensorDescription(DataType.bf16, LayoutType.RowMajor, 8),
        TensorDescription(DataType.bf16, LayoutType.ColumnMajor, 8),
        TensorDescription(DataType.void, d_layout, 128 // DataTypeSize[out]),
        EpilogueFunctorVisitor(_CC, visitor))
    text = op.rt_module.emit()

    # The host code below fills the fusion arguments positionally: {accum, bias, compute}.
    if not re.search(r"Sm90EVT<\s*Compute0,\s*Accum,\s*Bias>", text):
        raise RuntimeError("cutlass_cppgen emitted an unexpected EVT tree:\n" + text)
    broadcast = "Sm90ColBroadcast" if spec.swap_ab else "Sm90RowBroadcast"
    if f"fusion::{broadcast}<" not in text:
        raise RuntimeError(f"expected a {broadcast} bias in the emitted EVT:\n" + text)
    return text.strip("\n"), op.procedural_name() + op.rt_module.emitter.operation_suffix


# GDC on: the kernels wait on griddepcontrol before their first load and store, so a PDL launch is safe.
_INCLUDES = """\
#define CUTLASS_ENABLE_GDC_FOR_SM90 1
#include <cstdint>
#include <cstring>

#include "cutlass/cutlass.h"
#include "cute/tensor.hpp"
#include "cute/atom/mma_atom.hpp"
#include "cutlass/numeric_types.h"
#include "cutlass/kernel_hardware_info.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/kernel/sm90_tile_scheduler.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
"""

# Host side. Strides are set mode by mode so the static unit/zero modes CUTLASS chose keep their types.
# TMA (cuTensorMapEncodeTiled) only prints on a bad address or stride and leaves a zero descriptor, so those
# are checked here before CUTLASS sees them.
_HOST = """\
#if !defined(__CUDA_ARCH__)
namespace {ns} {{

inline bool aligned16(const void* p) {{ return (reinterpret_cast<std::uintptr_t>(p) & 15) == 0; }}

extern "C" int {sym}_params_size() {{ return int(sizeof(Operator::Params)); }}
extern "C" int {sym}_smem_size() {{ return int(Operator::SharedStorageSize); }}
extern "C" int {sym}_block_threads() {{ return int(Operator::MaxThreadsPerBlock); }}
extern "C" void {sym}_cluster_shape(int* xyz) {{
  xyz[0] = int(cute::size<0>(Operator::ClusterShape{{}}));
  xyz[1] = int(cute::size<1>(Operator::ClusterShape{{}}));
  xyz[2] = int(cute::size<2>(Operator::ClusterShape{{}}));
}}

// Returns 0 and fills params/grid, or 1 (problem not implementable), 2 (would need a workspace), 3 (cap too
// small), 4 (no CUDA driver to encode the TMA descriptors).
extern "C" int {sym}_pack(void* params_out, int cap, int* grid_out,
                          const void* x, const void* w, const void* bias, void* out,
                          int M, int N, int K, long long ldx, long long ldw, long long ldo, int sm_count) {{
  using Gemm = Operator;
  using ElementA = Gemm::ElementA;
  using ElementB = Gemm::ElementB;
  using ElementD = Gemm::ElementD;
  using ElementBias = cutlass::bfloat16_t;
  constexpr long long in_align = 16 / sizeof(cutlass::bfloat16_t);
  constexpr long long out_align = 16 / sizeof(ElementD);

  // sm_count <= 0 would make CUTLASS query the device through the runtime.
  if (M <= 0 || N <= 0 || K <= 0 || ldx < K || ldw < K || ldo < N || sm_count <= 0) return 1;
  if (ldx % in_align || ldw % in_align || ldo % out_align) return 1;
  if (!aligned16(x) || !aligned16(w) || !aligned16(out)) return 1;
  // The bias is read one element at a time (the wgmma accumulator holds no two adjacent rows).
  if (reinterpret_cast<std::uintptr_t>(bias) % sizeof(ElementBias)) return 1;

{operands}
  Gemm::StrideC dC = dD;

  cutlass::KernelHardwareInfo hw_info;
  hw_info.device_id = 0;
  hw_info.sm_count = sm_count;

  Gemm::Arguments args{{
      cutlass::gemm::GemmUniversalMode::kGemm,
      problem,
      {{ptr_A, dA, ptr_B, dB}},
      {{{{{{}}, {{static_cast<const ElementBias*>(bias), ElementBias(0), {{}}}}, {{}}}},
       nullptr, dC, static_cast<ElementD*>(out), dD}},
      hw_info}};

  if (!Gemm::can_implement(args)) return 1;
  if (Gemm::get_workspace_size(args) != 0) return 2;
  if (cap < int(sizeof(Gemm::Params))) return 3;
  // CUTLASS fetches the TMA encoder through the runtime, and a failed encode only prints; find it first.
  void* encode = nullptr;
  cudaDriverEntryPointQueryResult found;
  if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &encode, 12000, cudaEnableDefault, &found)
          != cudaSuccess || encode == nullptr || found != cudaDriverEntryPointSuccess) return 4;
  Gemm::Params params = Gemm::to_underlying_arguments(args, nullptr);
  std::memcpy(params_out, &params, sizeof(params));
  dim3 grid = Gemm::get_grid_shape(params);
  grid_out[0] = int(grid.x);
  grid_out[1] = int(grid.y);
  grid_out[2] = int(grid.z);
  return 0;
}}

}}  // namespace {ns}
#endif  // !defined(__CUDA_ARCH__)
"""

# Operand binding. Batch strides of A/B are never used (L = 1) but are set to the packed value, which keeps
# every TMA stride a valid, increasing multiple of 16 bytes.
_OPERANDS = {
    False: """\
  Gemm::ProblemShape problem{M, N, K, 1};
  const ElementA* ptr_A = static_cast<const ElementA*>(x);
  const ElementB* ptr_B = static_cast<const ElementB*>(w);
  Gemm::StrideA dA{};
  cute::get<0>(dA) = ldx;
  cute::get<2>(dA) = ldx * M;
  Gemm::StrideB dB{};
  cute::get<0>(dB) = ldw;
  cute::get<2>(dB) = ldw * N;
  Gemm::StrideD dD{};  // out[M, N] row-major
  cute::get<0>(dD) = ldo;""",
    True: """\
  Gemm::ProblemShape problem{N, M, K, 1};
  const ElementA* ptr_A = static_cast<const ElementA*>(w);
  const ElementB* ptr_B = static_cast<const ElementB*>(x);
  Gemm::StrideA dA{};
  cute::get<0>(dA) = ldw;
  cute::get<2>(dA) = ldw * N;
  Gemm::StrideB dB{};
  cute::get<0>(dB) = ldx;
  cute::get<2>(dB) = ldx * M;
  Gemm::StrideD dD{};  // out^T[N, M] column-major: the same bytes as out[M, N] row-major
  cute::get<1>(dD) = ldo;""",
}


def emit_source(spec: Sm90GemmSpec) -> str:
    """Whole .cu source for one kernel: CUTLASS types, a device entry `<symbol>`, host `<symbol>_*` functions.

    Define CUTLASS_ROUTER_HOST_ONLY to build only the host functions (a small shared library that fills
    Params); build without it, for sm_90a, for the kernel. Launch: grid from <symbol>_pack, block
    (<symbol>_block_threads, 1, 1), <symbol>_smem_size bytes of dynamic shared memory (above 48 KB, so the
    function's limit must be raised first), cluster <symbol>_cluster_shape, and the packed Params as the one
    kernel parameter.
    """
    sym = symbol_of(spec)
    ns = f"{sym}_ns"
    types, kernel_type = _cutlass_types(spec)
    fields = ", ".join(f"{k}={getattr(spec, k)!r}" for k in Sm90GemmSpec.__dataclass_fields__)
    return (
        f"// Generated by cutlass_router ({FAMILY}) with cutlass_cppgen {_cppgen().__version__}.\n"
        f"// spec: Sm90GemmSpec({fields})\n"
        f"{_INCLUDES}\n"
        f"namespace {ns} {{\n\n"
        f"{types}\n\n"
        f"using Operator = {kernel_type};\n\n"
        f"#if !defined(CUTLASS_ROUTER_HOST_ONLY)\n"
        f"extern \"C\" __global__ void __launch_bounds__(Operator::MaxThreadsPerBlock, "
        f"Operator::MinBlocksPerMultiprocessor)\n"
        f"{sym}(const __grid_constant__ typename Operator::Params params) {{\n"
        f"  extern __shared__ char smem[];\n"
        f"  Operator op;\n"
        f"  op(params, smem);\n"
        f"}}\n"
        f"#endif  // !defined(CUTLASS_ROUTER_HOST_ONLY)\n\n"
        f"}}  // namespace {ns}\n\n"
        + _HOST.format(sym=sym, ns=ns, operands=_OPERANDS[spec.swap_ab])
    )


# ---- launching: everything below asks the host library --------------------------------------------------------

def bind_host(lib: ctypes.CDLL, symbol: str) -> ctypes.CDLL:
    """Declare the C signatures of one kernel's host functions in `lib`; returns lib."""
    pack = getattr(lib, f"{symbol}_pack")
    pack.restype = ctypes.c_int
    pack.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p] + [ctypes.c_void_p] * 4 \
        + [ctypes.c_int] * 3 + [ctypes.c_longlong] * 3 + [ctypes.c_int]
    for name in ("params_size", "smem_size", "block_threads"):
        getattr(lib, f"{symbol}_{name}").restype = ctypes.c_int
    return lib


def open_host(entry) -> ctypes.CDLL:
    """The host library holding this kernel's host functions: the shipped one, or (where the system refuses it, e.g.
    glibc < 2.34) one from the cache or nvcc."""
    from .. import resolve
    from ..build import ToolkitNotFound
    from ..launch import LaunchError

    source = entry.source()
    art = resolve.host_library(source, entry.symbol)
    try:
        return bind_host(ctypes.CDLL(str(art.path)), entry.symbol)
    except OSError as e:
        if art.origin != "shipped":
            raise
        try:
            return bind_host(ctypes.CDLL(str(resolve.host_library(source, entry.symbol, shipped=False).path)),
                             entry.symbol)
        except ToolkitNotFound as missing:
            raise LaunchError(f"the shipped host library does not load on this system ({e}) and {missing}") from e


def geometry(entry, host) -> tuple[int, tuple[int, int, int], int]:
    """(block threads, cluster shape, dynamic shared memory bytes), as CUTLASS's kernel type defines them."""
    sym = entry.symbol
    cluster = (ctypes.c_int * 3)()
    getattr(host, f"{sym}_cluster_shape")(cluster)
    return getattr(host, f"{sym}_block_threads")(), tuple(cluster), getattr(host, f"{sym}_smem_size")()


def params_size(entry, host) -> int:
    return getattr(host, f"{entry.symbol}_params_size")()


def blocker(entry, M: int, N: int) -> str | None:
    """Why this kernel cannot take an (M, N) problem, or None."""
    n_multiple = entry.launch["n_multiple"]
    if N % n_multiple:
        return f"kernel {entry.symbol} needs N a multiple of {n_multiple} (TMA stores 16-byte rows), got {N}"
    return None


def pack_gemm(k, buf, cap: int, grid_buf, x: int, w: int, bias: int, out: int, M: int, N: int, K: int,
              ldx: int, ldw: int, ldo: int, sm_count: int) -> tuple[int, int, int]:
    """Fill CUTLASS's Params in buf through the host library; return the grid it computes."""
    from ..launch import LaunchError

    rc = k.pack(buf, cap, grid_buf, x, w, bias or None, out, M, N, K, ldx, ldw, ldo, sm_count)
    if rc != 0:
        raise LaunchError(f"{k.entry.symbol}: CUTLASS cannot run M={M} N={N} K={K} (code {rc})")
    return grid_buf[0], grid_buf[1], grid_buf[2]
