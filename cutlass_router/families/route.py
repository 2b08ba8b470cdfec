"""Fused routing: the router GEMM and the expert choice in one launch (decode sizes), and a select-only kernel
that routes logits a GEMM has written (large M). Both instantiate templates/route.cuh, whose main loop is the
split-K family's (templates/splitk_mma.cuh).

Fused launch: one thread block cluster per 8 x tok_tiles tokens, G x splits CTAs where G = ceil(N / (16 x
exp_tiles)) expert groups (G x splits <= 16, so N <= 256 x exp_tiles / splits). Each CTA reduces its warps' K
slices in shared memory and sends its partial logits to the cluster's leader through distributed shared memory;
the leader adds the bias, writes the logits if asked, and selects per token (a warp per token). Nothing goes
through global memory between the GEMM and the choice.
GEMV route launch (N <= 16 rows): one cluster of ceil(N / rows) CTAs per `tokens` tokens, each CTA a GEMV over
`rows` experts and the whole of K, its logits sent to the leader, which chooses as above.
Select launch: a warp per row, 8 rows per 256-thread CTA, or one per 32-thread CTA where the rows are long and few
(select_rows); one kernel per (router, experts a lane holds), chosen by select_symbol: each holds only the code it
runs. The sigmoid router's (DeepSeek-V3, Kimi-K2) where its groups allow: a row per CTA, an expert per thread.
Kernel limits: N <= 384, top_k <= 8 (<= N), K % 8 == 0 with 16-byte aligned rows; grouped selection needs
n_group | N, n_group <= 32 and (N / n_group) a multiple of ceil(N / 32).
"""
from __future__ import annotations

import struct
from dataclasses import asdict, dataclass

FAMILY = "route"
HOST_LIB = False
MAX_N, MAX_TOP_K, MAX_CLUSTER, MAX_GRID_Y = 384, 8, 16, 65535
SELECT_ROWS = 8  # rows per CTA of the select kernel (a warp each), unless select_rows says one
ONE_ROW_MAX_M = 256  # select_rows: one row per CTA for long rows (sigmoid, or more than 64 experts) up to this M
ONE_ROW_MIN_N = 65   # ... where a softmax router's row is long enough to gain from it
SLOTS = (1, 2, 4, 8, 12)  # experts per lane the select kernels are instantiated for (route.cuh's with_slots)
BLOCK_SLOTS = 12  # the sigmoid router's row-per-CTA select kernel: 12 warps, an expert per thread, N <= 384
BLOCK_MAX_M = 8  # ... taken up to this M (select_symbol)

MODES = {"topk_softmax": 0, "softmax_topk": 1, "sigmoid": 2}
RENORMALIZE, SELECT_BF16, LOGITS_F32, WEIGHTS_BF16, IDS_INT64, INPUT_F32 = 1, 2, 4, 8, 16, 32

# Mirrors cutlass_router::RouteParams (templates/route.cuh): 8 pointers, 5 int64 strides, 8 int32, a float, an int.
PARAMS = struct.Struct("<8Q5q8ifi")


@dataclass(frozen=True)
class RouteSpec:
    warps: int = 16     # warps per CTA, each a K slice
    splits: int = 1     # CTAs splitting K within an expert group (the cluster is groups x splits)
    exp_tiles: int = 1  # 16-expert MMA tiles per CTA
    tok_tiles: int = 1  # 8-token MMA tiles per cluster
    unroll: int = 3     # 64-wide K chunks in flight per warp
    select_only: bool = False  # the select kernel (no GEMM); the fields above do not apply to it
    mode: str = ""      # select kernel: its router (a MODES key)
    slots: int = 0      # select kernel: experts per lane it holds (N <= 32 slots), one of SLOTS
    block: bool = False  # select kernel, sigmoid router: a row per CTA, an expert per thread (route_select_block)

    def __post_init__(self):
        if not self.select_only and not (1 <= self.splits <= MAX_CLUSTER and 1 <= self.warps <= 32):
            raise ValueError(f"splits must be 1..{MAX_CLUSTER} and warps 1..32, got {self.splits}, {self.warps}")
        if (self.select_only or self.mode or self.slots) and not (self.select_only and self.mode in MODES
                                                                  and self.slots in SLOTS):
            raise ValueError(f"a select kernel's mode must be one of {sorted(MODES)} and slots one of {SLOTS}, "
                             f"got {self.mode!r}, {self.slots}")
        if self.block and not (self.select_only and self.mode == "sigmoid" and self.slots == BLOCK_SLOTS):
            raise ValueError(f"the row-per-CTA select kernel is the sigmoid router's, with slots = {BLOCK_SLOTS}")

    @property
    def family(self) -> str:
        return FAMILY

    @property
    def out_dtype(self) -> str:
        return "any"  # weights, ids and logits dtypes are chosen per call

    @property
    def symbol(self) -> str:
        if self.block:
            return f"crt_route_select_{self.mode}_block"
        if self.select_only:
            return f"crt_route_select_{self.mode}_p{self.slots}"
        return f"crt_route_w{self.warps}_s{self.splits}_e{self.exp_tiles}_t{self.tok_tiles}_u{self.unroll}"

    def config(self) -> dict:
        return asdict(self)

    def launch(self) -> dict:
        if self.block:  # block_threads: the most; a launch takes 32 ceil(N / 32) (route_consts)
            return {"block_threads": 32 * BLOCK_SLOTS, "tile_tokens": 1, "max_experts": 32 * BLOCK_SLOTS}
        if self.select_only:
            return {"block_threads": 32 * SELECT_ROWS, "tile_tokens": SELECT_ROWS, "max_experts": 32 * self.slots}
        return {"block_threads": 32 * self.warps, "tile_tokens": 8 * self.tok_tiles,
                "tile_experts": 16 * self.exp_tiles, "splits": self.splits,
                "max_experts": 16 * self.exp_tiles * (MAX_CLUSTER // self.splits)}

    def emit(self) -> str:
        head = (f"// Generated by cutlass_router ({FAMILY}); regenerate with `python -m cutlass_router emit`.\n"
                f"// config: {self.config()}\n"
                f'#include "route.cuh"\n\n')
        if self.block:
            return head + (f"extern \"C\" __global__ void __launch_bounds__({32 * BLOCK_SLOTS})\n"
                           f"{self.symbol}(const __grid_constant__ cutlass_router::RouteParams params) {{\n"
                           f"  cutlass_router::route_select_block(params);\n}}\n")
        if self.select_only:
            call = f"route_select_mode<{MODES[self.mode]}, {self.slots}>"
            return head + (f"extern \"C\" __global__ void __launch_bounds__({32 * SELECT_ROWS})\n"
                           f"{self.symbol}(const __grid_constant__ cutlass_router::RouteParams params) {{\n"
                           f"  cutlass_router::{call}(params);\n}}\n")
        return head + (f"extern \"C\" __global__ void __launch_bounds__({32 * self.warps}, 1)\n"
                       f"{self.symbol}(const __grid_constant__ cutlass_router::RouteParams params) {{\n"
                       f"  cutlass_router::route_fused<{self.warps}, {self.splits}, {self.exp_tiles}, "
                       f"{self.tok_tiles}, {self.unroll}>(params);\n}}\n")


@dataclass(frozen=True)
class RouteGemvSpec:
    """A fused route kernel whose CTAs are GEMVs (route.cuh's route_gemv): `rows` experts a CTA over the whole of K,
    one cluster of ceil(N / rows) <= 16 CTAs per `tokens` tokens. Launched like RouteSpec's fused kernels (its
    launch() gives them the same keys: tile_experts = rows, splits = 1)."""
    rows: int = 2       # experts per CTA: N <= 16 rows
    tokens: int = 1     # tokens per cluster
    vecs: int = 1       # 16-byte K vectors per thread and row per pass: one pass for K <= 8 vecs threads
    threads: int = 384  # threads per CTA

    def __post_init__(self):
        if not (1 <= self.rows and 16 * self.rows <= MAX_N and self.threads % 32 == 0 and 32 <= self.threads <= 1024
                and self.rows * self.tokens <= self.threads and self.vecs >= 1):
            raise ValueError(f"a GEMV route kernel needs 16 rows <= {MAX_N}, whole warps up to 1024 threads and a "
                             f"thread per output (rows x tokens), got {self}")

    @property
    def family(self) -> str:
        return FAMILY

    @property
    def out_dtype(self) -> str:
        return "any"

    @property
    def symbol(self) -> str:
        return f"crt_route_gemv_r{self.rows}_m{self.tokens}_v{self.vecs}_t{self.threads}"

    def config(self) -> dict:
        return {**asdict(self), "select_only": False, "gemv": True}

    def launch(self) -> dict:
        return {"block_threads": self.threads, "tile_tokens": self.tokens, "tile_experts": self.rows, "splits": 1,
                "max_experts": 16 * self.rows, "one_pass_k": 8 * self.vecs * self.threads}

    def emit(self) -> str:
        return (f"// Generated by cutlass_router ({FAMILY}); regenerate with `python -m cutlass_router emit`.\n"
                f"// config: {self.config()}\n"
                f'#include "route.cuh"\n\n'
                f"extern \"C\" __global__ void __launch_bounds__({self.threads}, 1)\n"
                f"{self.symbol}(const __grid_constant__ cutlass_router::RouteParams params) {{\n"
                f"  cutlass_router::route_gemv<{self.rows}, {self.tokens}, {self.vecs}, {self.threads}>(params);\n}}\n")


BLOCK_SPEC = RouteSpec(select_only=True, mode="sigmoid", slots=BLOCK_SLOTS, block=True)


def select_rows(mode: str, M: int, N: int) -> int:
    """Rows (warps) per CTA of a select launch. A long row's choice is a long dependent chain (the grouped sigmoid
    choice about 1,500 instructions at N = 256, ncu), so at decode sizes one row per 32-thread CTA spreads a batch's
    rows over as many SMs. In the decode-layer loop: DeepSeek-V3's route from 0.1-1.1 us behind router_gemm + Triton
    at M = 8-256 to within the loop's noise (fifth session); gpt-oss-120b's (N = 128) GEMM + select at M = 128 / 256
    5.92 / 7.79 us with one row against 6.59 / 8.66 with eight (router_gemm + Triton 6.00 / 7.87; 2026-11-29,
    notes/l2/select_rows.py), while gpt-oss-20b's 32-expert rows gained nothing (M = 64: 5.05 against 4.67). With
    thousands of rows, one-warp CTAs cost more than they spread (3-7 us more at M = 1024-4096): 8 rows per CTA."""
    long_row = mode == "sigmoid" or N >= ONE_ROW_MIN_N
    return 1 if long_row and M <= ONE_ROW_MAX_M else SELECT_ROWS


def select_specs() -> list[RouteSpec]:
    """Every select kernel: one per router and slot count, and the sigmoid router's row-per-CTA kernel."""
    return [RouteSpec(select_only=True, mode=m, slots=s) for m in MODES for s in SLOTS] + [BLOCK_SPEC]


def block_select_ok(N: int, n_group: int) -> bool:
    """Whether route_select_block takes this sigmoid router: N <= 384 and groups of gs = N / n_group experts that
    stay inside a warp (gs | 32) or are whole warps (32 | gs)."""
    if N > 32 * BLOCK_SLOTS:
        return False
    gs = N // max(n_group, 1)
    return n_group <= 1 or (gs >= 1 and (32 % gs == 0 or gs % 32 == 0))


def select_symbol(N: int, scoring: str, n_group: int = 1, M: int = 1) -> str:
    """The select kernel for M rows of N experts and this router. The sigmoid router's up to BLOCK_MAX_M rows, where
    its groups allow: a row per CTA, an expert per thread. In the decode loop (notes/PERF.md, 2026-11-29),
    DeepSeek-V3's GEMM + select: 0.8-0.9 us faster at M = 1-64 launched alone, but behind a PDL-launched GEMM
    (route's path) slower from M = 64 (its wider CTAs wait beside the GEMM's), and 4-24 us slower than 8 rows per
    CTA at M = 1024-4096. Since the warp-per-row kernel's loads were batched and its slots sorted, route with it is
    faster from M = 12 (8.05 against 8.36 us; 8.98 against 9.85 at M = 32), the row-per-CTA one at M = 1, 2 and 8
    (6.37 against 6.60 at M = 1; notes/l2/ds_block_ab.py, thirteenth session). Otherwise a warp per row with the
    fewest slots per lane that hold ceil(N / 32)."""
    if scoring == "sigmoid" and M <= BLOCK_MAX_M and block_select_ok(N, n_group):
        return BLOCK_SPEC.symbol
    return warp_select_symbol(N, scoring)


def warp_select_symbol(N: int, scoring: str) -> str:
    """The warp-per-row select kernel for N experts and this router: the fewest slots per lane that hold
    ceil(N / 32)."""
    need = -(-N // 32)
    return RouteSpec(select_only=True, mode=scoring, slots=next(s for s in SLOTS if s >= need)).symbol


def geometry(entry, host=None) -> tuple[int, tuple[int, int, int], int]:
    """(block threads, the largest cluster it is launched with, dynamic shared memory bytes)."""
    fused = not entry.config["select_only"]
    return entry.launch["block_threads"], ((MAX_CLUSTER if fused else 1), 1, 1), 0


def selection_blocker(N: int, top_k: int, scoring: str, n_group: int, topk_group: int) -> str | None:
    """Why the kernels cannot make this choice (the torch path then does), or None."""
    if N > MAX_N:
        return f"N = {N} experts is above the kernels' {MAX_N}"
    if top_k > MAX_TOP_K:
        return f"top_k = {top_k} is above the kernels' {MAX_TOP_K}"
    if scoring == "sigmoid" and n_group > 1:
        per_lane = -(-N // 32)
        if n_group > 32 or (N // n_group) % per_lane:
            return (f"grouped selection with n_group = {n_group} over N = {N} experts: the kernels need "
                    f"n_group <= 32 and N / n_group a multiple of {per_lane}")
    return None


def blocker(entry, M: int, N: int) -> str | None:
    """Why this kernel cannot take an (M, N) problem, or None."""
    lc = entry.launch
    if -(-M // lc["tile_tokens"]) > (MAX_GRID_Y if not entry.config["select_only"] else 2 ** 31 - 1):
        return f"M = {M} exceeds the grid limit of {entry.symbol}"
    if N > lc["max_experts"]:
        where = "" if entry.config["select_only"] else " in one cluster"
        return f"{entry.symbol} covers at most {lc['max_experts']} experts{where}, got N = {N}"
    return None


def grid(entry, M: int, N: int, rows: int | None = None) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(grid, cluster) of a launch; rows: a select launch's rows per CTA (default: the most, SELECT_ROWS)."""
    lc = entry.launch
    if entry.config["select_only"]:
        return (-(-M // (rows or lc["tile_tokens"])), 1, 1), (1, 1, 1)
    ctas = -(-N // lc["tile_experts"]) * lc["splits"]
    return (ctas, -(-M // lc["tile_tokens"]), 1), (ctas, 1, 1)


@dataclass(frozen=True)
class RouteConsts:
    """What a launch's parameters hold that does not change between calls with the same plan (shapes, strides of
    x and the weight, the choice's scalars) and the launch geometry: made once per plan, so that a call packs only
    its pointers and its outputs' strides."""
    ldx: int
    ldw: int
    tail: tuple                      # M, N, K, top_k, mode, flags, n_group, topk_group, scale, 0 (RouteParams order)
    grid: tuple[int, int, int]
    cluster: tuple[int, int, int]
    block: int                       # threads per CTA (a select launch's depends on the router and M)


def route_consts(entry, *, M: int, N: int, K: int, ldx: int, ldw: int, top_k: int, mode: int, flags: int,
                 n_group: int, topk_group: int, scale: float) -> RouteConsts:
    rows, block = None, entry.launch["block_threads"]
    if entry.config.get("block"):  # a row per CTA, an expert per thread
        rows, block = 1, 32 * -(-N // 32)
    elif entry.config["select_only"]:
        rows = select_rows(entry.config["mode"], M, N)
        block = 32 * rows
    g, c = grid(entry, M, N, rows)
    return RouteConsts(ldx, ldw, (M, N, K, top_k, mode, flags, n_group, topk_group, float(scale), 0), g, c, block)


def pack_route(buf, c: RouteConsts, x: int, w: int, bias: int, sel_bias: int, logits_in: int, logits: int,
               weights: int, ids: int, ldi: int, ldl: int, ldk: int) -> None:
    """Write RouteParams into buf: this call's pointers and output strides, the plan's constants."""
    PARAMS.pack_into(buf, 0, x, w, bias, sel_bias, logits_in, logits, weights, ids, c.ldx, c.ldw, ldi, ldl, ldk,
                     *c.tail)
