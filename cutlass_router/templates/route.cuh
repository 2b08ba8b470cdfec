// cutlass-router: fused routing, sm_90a. The router GEMM and the expert choice in one launch (decode sizes), and
// a select-only kernel that routes logits a separate GEMM has written (large M).
//
//   logits[m, e] = sum_k x[m, k] * w[e, k] + bias[e]            (fp32 accumulation)
//   (weights[m, :top_k], ids[m, :top_k]) = the choice of one of three routers (RouteParams::mode)
//
// Fused kernel route_fused<kWarps, kSplits, kExpTiles, kTokTiles, kUnroll>: one thread block cluster per
// 8 x kTokTiles tokens, G x kSplits CTAs with G = ceil(N / (16 x kExpTiles)) expert groups. CTA rank r owns
// experts [16E (r / S), 16E (r / S + 1)) and K split r % S; its warps split that K range again (the split-K main
// loop of splitk_mma.cuh: x loads after griddepcontrol.wait). A CTA reduces its warps' partials in
// shared memory (fixed order), then sends its partial tile to the cluster's leader (rank 0) with st.async,
// counted on the leader's mbarrier: one message carries data and signal, so there is no cluster barrier after
// the K loop and no global workspace. The leader sums the S partials (fixed order), adds the bias, writes the
// logits if asked, and selects: a warp per token. A row's bits depend on K and the template arguments only,
// never on M.
// Select kernels route_select_mode<kMode, kSlots>: one router (RouteParams::mode) and N <= 32 kSlots; a warp per
// row, as many rows per CTA as the launch gives it warps (1 to 8: families/route.py, select_rows). A known model's
// route_select_fixed<kMode, kN, kGroups, kTopkGroup, kTopK>: the same with its choice's sizes fixed at compile time.
// For other sigmoid choices at decode sizes, route_select_block: a row per CTA, an expert per thread.
//
// Selection inside a warp: lane l holds the P = ceil(N / 32) contiguous experts [lP, lP + P) in registers.
// Each of top_k rounds: every lane takes its best (key, id), the warp takes the largest key and, among lanes
// holding it, the lowest id (redux.sync twice), and the owner removes it. Keys are ordered uint32 images of the
// floats, so one integer max ranks NaN above +inf and every real value above "removed" (0).
//
// Limits the host guarantees (cutlass_router/families/route.py and validate.py check them):
//   1 <= N <= 384, 1 <= top_k <= min(8, N), M >= 1, K % 8 == 0, x and W rows 16-byte aligned (ldx, ldw % 8 == 0);
//   fused: grid (G * S, ceil(M / (8T)), 1), cluster (G * S, 1, 1), G * S <= 16 (more than 8 needs
//     cudaFuncAttributeNonPortableClusterSizeAllowed), G <= kMaxGroups below (N <= 16E * kMaxGroups),
//     block 32 * kWarps threads, no dynamic shared memory, ceil(M / 8T) <= 65535;
//   select: grid (ceil(M / R), 1, 1), block 32 R threads (1 <= R <= 8), no dynamic shared memory, p.mode == kMode and
//     N <= 32 kSlots (else the kernel traps); a fixed select kernel: p.mode, N, top_k (and for the sigmoid router
//     n_group, topk_group) equal to its own (else it traps);
//   select, row per CTA (route_select_block, sigmoid only): grid (M, 1, 1), block 32 ceil(N / 32) threads, p.mode
//     sigmoid (else it traps); groups of gs = N / n_group experts with gs | 32 or 32 | gs;
//   sigmoid mode: n_group divides N, 1 <= topk_group <= n_group <= 32, and when n_group > 1,
//     (N / n_group) % P == 0 with P = ceil(N / 32), and top_k <= topk_group * (N / n_group).
// Whatever the input (NaN, Inf, ties, a limit of the sigmoid mode broken), every id written is in [0, N) and the
// ids of a row are distinct; only weights[m, :top_k], ids[m, :top_k] (m < M) and, if asked, logits[m, :N] are
// written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <cuda_bf16.h>

#include "gemv.cuh"
#include "splitk_mma.cuh"

namespace cutlass_router {

// Kernel parameters, passed by value. Python packs this layout (families/route.py: PARAMS = "<8Q5q8ifi").
struct RouteParams {
  const __nv_bfloat16* x;      // [M, K], row stride ldx (fused kernel)
  const __nv_bfloat16* w;      // [N, K], row stride ldw (fused kernel)
  const __nv_bfloat16* bias;   // [N] or nullptr: added to the logits (fused kernel only)
  const float* sel_bias;       // [N] or nullptr: sigmoid mode's score correction, for selection only
  const void* logits_in;       // select kernel: [M, ldi] logits (bias already added), bf16 or fp32 (kInputF32)
  void* logits;                // fused kernel: [M, ldl] logits output (fp32 if kLogitsF32, else bf16), or nullptr
  void* weights;               // [M, ldk] fp32, or bf16 if kWeightsBf16
  void* ids;                   // [M, ldk] int32, or int64 if kIdsInt64
  long long ldx, ldw, ldi, ldl, ldk;  // row strides in elements
  int M, N, K, top_k;
  int mode, flags, n_group, topk_group;
  float scale;                 // sigmoid mode: routed_scaling_factor (1.0 otherwise)
  int reserved;
};
static_assert(sizeof(RouteParams) == 144, "RouteParams must match families/route.py's PARAMS");
static_assert(offsetof(RouteParams, logits_in) == 32 && offsetof(RouteParams, ids) == 56, "RouteParams layout");
static_assert(offsetof(RouteParams, ldx) == 64 && offsetof(RouteParams, ldk) == 96, "RouteParams layout");
static_assert(offsetof(RouteParams, M) == 104 && offsetof(RouteParams, top_k) == 116, "RouteParams layout");
static_assert(offsetof(RouteParams, mode) == 120 && offsetof(RouteParams, topk_group) == 132, "RouteParams layout");
static_assert(offsetof(RouteParams, scale) == 136 && offsetof(RouteParams, reserved) == 140, "RouteParams layout");

enum : int { kModeTopkSoftmax = 0, kModeSoftmaxTopk = 1, kModeSigmoid = 2 };
enum : int { kRenormalize = 1, kSelectBf16 = 2, kLogitsF32 = 4, kWeightsBf16 = 8, kIdsInt64 = 16, kInputF32 = 32 };

constexpr int kRouteMaxExperts = 384;
constexpr int kRouteMaxTopK = 8;
constexpr int kRouteMaxPerLane = (kRouteMaxExperts + 31) / 32;  // 12
constexpr int kSelectWarps = 8;                                  // the most rows per CTA of route_select

namespace detail {

// Ordered uint32 image of a float: a > b (as floats) iff key(a) > key(b); -0 and +0 share a key (they compare
// equal, so their tie goes to the lower id); every NaN is 0xFFFFFFFF, above +inf (0xFF800000); -inf is 0x007FFFFF,
// so 0 stays free for "removed or not an expert".
__device__ __forceinline__ uint32_t order_key(float f) {
  uint32_t u = __float_as_uint(f);
  if (f == 0.f) u = 0u;
  const uint32_t k = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return isnan(f) ? 0xFFFFFFFFu : k;
}

__device__ __forceinline__ float round_bf16(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }

// A lane's kN consecutive values at src (fp32 or bf16) as floats: in 16-byte pieces (8-byte ones where the lane's
// bytes are not a multiple of 16: 4 or 12 bf16) where src is aligned to the piece, one by one otherwise (a padded
// logits row may start at any 2- or 4-byte boundary). A known model's select kernel reads its correction bias and
// logits this way (every slot an expert).
template <int kN, typename T>
__device__ __forceinline__ void load_lane(const T* src, float (&v)[kN]) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 2, "fp32 or bf16");
  constexpr int kBytes = (kN * sizeof(T)) % 16 == 0 ? 16 : 8;  // a piece
  static_assert((kN * sizeof(T)) % kBytes == 0, "whole pieces");
  constexpr int kPer = kBytes / sizeof(T);                     // values per piece
  if ((reinterpret_cast<uintptr_t>(src) & (kBytes - 1)) == 0) {
#pragma unroll
    for (int i = 0; i < kN; i += kPer) {
      uint32_t w[kBytes / 4];
      if constexpr (kBytes == 16) {
        const uint4 q = *reinterpret_cast<const uint4*>(src + i);
        w[0] = q.x; w[1] = q.y; w[2] = q.z; w[3] = q.w;
      } else {
        const uint2 q = *reinterpret_cast<const uint2*>(src + i);
        w[0] = q.x; w[1] = q.y;
      }
#pragma unroll
      for (int j = 0; j < kBytes / 4; ++j) {
        if constexpr (sizeof(T) == 4) {
          v[i + j] = __uint_as_float(w[j]);
        } else {  // two bf16 a word, the lower address in the low half
          v[i + 2 * j] = __uint_as_float(w[j] << 16);
          v[i + 2 * j + 1] = __uint_as_float(w[j] & 0xFFFF0000u);
        }
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      if constexpr (sizeof(T) == 4) v[i] = src[i];
      else v[i] = __bfloat162float(src[i]);
    }
  }
}

// nvcc's test for its reciprocal's slow path: an exponent field of 0 (zero, subnormal) or >= 253 (2^126 and up,
// inf, NaN).
__device__ __forceinline__ bool rcp_slow(float d) {
  return ((__float_as_uint(d) + 0x1800000u) & 0x7F800000u) <= 0x1FFFFFFu;
}

// The sigmoid of n values, 1 / (1 + expf(-v)) as torch computes it (IEEE reciprocal), each bit for bit. nvcc's
// reciprocal branches to its slow path per value (rcp_slow), which kept the n sigmoids one after another; here
// every value takes the same fast path (MUFU.RCP and one Newton step, nvcc's own) side by side, and only a row
// holding such a denominator (v < -87.3, or NaN) redoes those values with the division.
// notes/l2/select_fixed.py checks all 2^32 inputs against the division.
template <int n>
__device__ __forceinline__ void sigmoid_rn(const float (&v)[n], float (&s)[n]) {
  float d[n];
  bool slow = false;
#pragma unroll
  for (int i = 0; i < n; ++i) {
    d[i] = 1.0f + expf(-v[i]);
    float y;
    asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(d[i]));
    s[i] = __fmaf_rn(y, __fmaf_rn(-d[i], y, 1.0f), y);
    slow |= rcp_slow(d[i]);
  }
  if (slow) {
#pragma unroll
    for (int i = 0; i < n; ++i)
      if (rcp_slow(d[i])) s[i] = 1.0f / d[i];
  }
}

// Top-2 (by order_key) of a multiset, as keys and values; keys 0 are empty slots.
struct Top2 {
  uint32_t k1, k2;
  float f1, f2;
};

__device__ __forceinline__ void top2_insert(Top2& t, uint32_t k, float f) {
  if (k > t.k1) {
    t.k2 = t.k1; t.f2 = t.f1; t.k1 = k; t.f1 = f;
  } else if (k > t.k2) {
    t.k2 = k; t.f2 = f;
  }
}

// t = the top-2 of t's multiset and o's (disjoint sets).
__device__ __forceinline__ void top2_merge(Top2& t, const Top2& o) {
  top2_insert(t, o.k1, o.f1);
  top2_insert(t, o.k2, o.f2);
}

// a (key ka, id ia) ranks before b: a larger key, or an equal key and a lower id (ids distinct: a strict order).
__device__ __forceinline__ bool beats(uint32_t ka, int ia, uint32_t kb, int ib) {
  return ka > kb || (ka == kb && ia < ib);
}

// This lane's rank among the warp's 32 keys, the lane number its id: how many lanes beat it (32 shuffles, no
// collective chain). Convergent.
__device__ __forceinline__ int warp_rank(uint32_t key) {
  const int lane = threadIdx.x & 31;
  int r = 0;
#pragma unroll
  for (int j = 0; j < 32; ++j) r += beats(__shfl_sync(0xFFFFFFFFu, key, j), j, key, lane) ? 1 : 0;
  return r;
}

// f(std::integral_constant<int, S>) with S the first of kFirst, 2 kFirst, 4 kFirst, ... (at most kMax) that holds
// P slots: the selection then scans as many slots per lane as N needs (N = 32: one), not as many as the largest N
// the kernel takes.
template <int kFirst, int kMax, class F>
__device__ __forceinline__ void with_slots(int P, F&& f) {
  if constexpr (kFirst >= kMax) {
    f(std::integral_constant<int, kMax>{});
  } else {
    if (P <= kFirst)
      f(std::integral_constant<int, kFirst>{});
    else
      with_slots<2 * kFirst, kMax>(P, f);
  }
}

__device__ __forceinline__ uint32_t cluster_num_ctas() {
  uint32_t n;
  asm volatile("mov.u32 %0, %%cluster_nctarank;\n" : "=r"(n));
  return n;
}

// Store one float into CTA `rank`'s shared memory, counted on that CTA's mbarrier (st_async_v4's 4-byte twin).
__device__ __forceinline__ void st_async_f32(float* local_addr, uint64_t* local_bar, uint32_t rank, float v) {
  const uint32_t addr = cute::set_block_rank(smem_addr(local_addr), rank);
  const uint32_t bar = cute::set_block_rank(smem_addr(local_bar), rank);
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.b32 [%0], %1, [%2];\n"
               :: "r"(addr), "r"(__float_as_uint(v)), "r"(bar) : "memory");
}

// Choice j of a row (j = lane < top_k): its weight and its id, in the dtypes the flags ask for. The id is clamped to
// [0, N) as belt and braces: the choices only ever pick ids < N.
__device__ __forceinline__ void store_choice(const RouteParams& p, long long row, int j, float wgt, int id) {
  const long long o = row * p.ldk + j;
  id = min(max(id, 0), p.N - 1);
  if (p.flags & kWeightsBf16)
    static_cast<__nv_bfloat16*>(p.weights)[o] = __float2bfloat16_rn(wgt);
  else
    static_cast<float*>(p.weights)[o] = wgt;
  if (p.flags & kIdsInt64)
    static_cast<long long*>(p.ids)[o] = id;
  else
    static_cast<int*>(p.ids)[o] = id;
}

}  // namespace detail

// The expert choice for one row, by a whole warp (all 32 lanes call it, convergent).
//   v[i]:  the logit of expert lane * P + i (bias added, kSelectBf16 rounding already applied); ignored for
//          experts >= N and i >= P
//   cb[i]: sigmoid mode's correction sel_bias[lane * P + i] (0 if none); ignored in the other modes
// Writes weights[row * ldk + j] and ids[row * ldk + j] for j < top_k, in selection order.
// kMode: the router, fixed at compile time (the select kernels), or -1: p.mode at run time (the fused kernels).
// Shape<kN, kGroups, kTopkGroup, kTopK, kUnrollRounds>: the choice's sizes fixed at compile time (a model's own
// select kernel; its top_k rounds unrolled unless kUnrollRounds is false), or kN = 0: p.N, p.n_group, p.topk_group,
// p.top_k at run time.
template <int kN = 0, int kGroups = 0, int kTopkGroup = 0, int kTopK = 0, bool kUnrollRounds = true>
struct Shape {
  static constexpr bool kFixed = kN > 0;
  static constexpr int kFixedN = kN;
  static constexpr bool kUnroll = kFixed && kUnrollRounds;  // the top_k rounds unrolled
  // kGroups > 0 ? kGroups : 1 equals kGroups wherever it is tested; the runtime shape's kGroups = 0 made nvcc
  // warn of a modulo by zero (179-D) in every route kernel's build.
  static_assert(kN == 0 || (kN <= kRouteMaxExperts && kGroups >= 1 && kN % (kGroups > 0 ? kGroups : 1) == 0 &&
                            kTopkGroup >= 1 && kTopkGroup <= kGroups && kTopK >= 1 && kTopK <= kRouteMaxTopK &&
                            kTopK <= kN),
                "a fixed shape needs N, n_group | N, 1 <= topk_group <= n_group and 1 <= top_k <= min(8, N)");
  __device__ __forceinline__ static int N(const RouteParams& p) { return kN ? kN : p.N; }
  __device__ __forceinline__ static int n_group(const RouteParams& p) { return kN ? kGroups : p.n_group; }
  __device__ __forceinline__ static int topk_group(const RouteParams& p) { return kN ? kTopkGroup : p.topk_group; }
  // the host guarantees p.top_k <= min(8, N)
  __device__ __forceinline__ static int top_k(const RouteParams& p) {
    return kN ? kTopK : min(p.top_k, min(kRouteMaxTopK, p.N));
  }
};

template <int kMaxP, int kMode = -1, class S = Shape<>>
__device__ __forceinline__ void select_row(const float (&v)[kMaxP], const float (&cb)[kMaxP], int P,
                                           const RouteParams& p, long long row) {
  static_assert(kMaxP >= 1 && kMaxP <= kRouteMaxPerLane, "at most 384 experts");
  static_assert(kMode >= -1 && kMode <= kModeSigmoid, "bad mode");
  constexpr unsigned kAll = 0xFFFFFFFFu;
  const int mode = kMode >= 0 ? kMode : p.mode;
  const int lane = threadIdx.x & 31;
  const int N = S::N(p);
  const int top_k = S::top_k(p);
  const int n_group = S::n_group(p);
  const int base = lane * P;

  uint32_t key[kMaxP];  // selection key, 0 = removed or not an expert
  float val[kMaxP];     // what the weight is made of: the logit (softmax modes) or the sigmoid score
  float mx = 0.f, sum = 0.f;  // softmax_topk: max and sum of exp over all N
  if (mode == kModeSigmoid) {
    float c[kMaxP];
    detail::sigmoid_rn(v, val);
#pragma unroll
    for (int i = 0; i < kMaxP; ++i) c[i] = val[i] + cb[i];
    if (n_group > 1) {
      // Group g holds experts [g * gs, (g + 1) * gs), gs a multiple of P: lanes [g * L, (g + 1) * L), L = gs / P.
      // Group score: the sum of its two largest choice values (NaN largest, as torch.topk).
      const int gs = N / n_group;
      const int L = max(gs / P, 1);
      const int gl = lane % L;
      detail::Top2 t{0u, 0u, 0.f, 0.f};
#pragma unroll
      for (int i = 0; i < kMaxP; ++i)
        if (i < P && base + i < N) detail::top2_insert(t, detail::order_key(c[i]), c[i]);
      // Segmented tree over the group's lanes: after step `off`, lane j holds the top-2 of lanes
      // [j, min(j + 2 off, group end)). The shuffles are convergent: L is the same in every lane.
#pragma unroll
      for (int off = 1; off < 32; off <<= 1) {
        if (off >= L) break;
        const uint32_t ok1 = __shfl_down_sync(kAll, t.k1, off), ok2 = __shfl_down_sync(kAll, t.k2, off);
        const float of1 = __shfl_down_sync(kAll, t.f1, off), of2 = __shfl_down_sync(kAll, t.f2, off);
        if (gl + off < L) {
          detail::top2_insert(t, ok1, of1);
          detail::top2_insert(t, ok2, of2);
        }
      }
      const float score = gs >= 2 ? t.f1 + t.f2 : t.f1;  // at the group's first lane
      // Lane g < n_group takes group g's score; keep the topk_group best groups (ties -> lower group id).
      const float gscore = __shfl_sync(kAll, score, lane < n_group ? lane * L : 0);
      const uint32_t gkey = lane < n_group ? detail::order_key(gscore) : 0u;
      // A group's rank: how many groups beat it (n_group independent shuffles, where topk_group rounds of
      // arg-max were a chain of 2 topk_group reductions); the topk_group best are kept, as those rounds kept them.
      int grank = 0;
#pragma unroll
      for (int j = 0; j < 32; ++j) {
        if (j >= n_group) break;  // uniform: the shuffles stay convergent
        grank += detail::beats(__shfl_sync(kAll, gkey, j), j, gkey, lane) ? 1 : 0;
      }
      const uint32_t kept = __ballot_sync(kAll, lane < n_group && grank < S::topk_group(p));
      if (!((kept >> min(lane / L, 31)) & 1u)) {
        // As transformers' DeepseekV3TopkRouter (5.x) and routing_ref.py: the other groups' choice values are
        // masked with -inf, so they rank below every kept expert (but stay selectable, so ids stay distinct).
#pragma unroll
        for (int i = 0; i < kMaxP; ++i) c[i] = __int_as_float(0xFF800000);
      }
    }
#pragma unroll
    for (int i = 0; i < kMaxP; ++i) key[i] = (i < P && base + i < N) ? detail::order_key(c[i]) : 0u;
  } else {
#pragma unroll
    for (int i = 0; i < kMaxP; ++i) {
      val[i] = v[i];
      key[i] = (i < P && base + i < N) ? detail::order_key(v[i]) : 0u;
    }
    if (mode == kModeSoftmaxTopk) {
      mx = __int_as_float(0xFF800000);
#pragma unroll
      for (int i = 0; i < kMaxP; ++i)
        if (key[i] != 0u) mx = fmaxf(mx, v[i]);
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(kAll, mx, off));
#pragma unroll
      for (int i = 0; i < kMaxP; ++i)
        if (key[i] != 0u) sum += expf(v[i] - mx);
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(kAll, sum, off);
    }
  }

  // The lane's slots sorted once, best first, by odd-even transposition (adjacent exchanges on a strictly larger
  // key only: stable, so among equal keys the lower slot, the lower id, stays first). A round then reads each
  // lane's head and only the winner moves on: two reductions a round, where a tournament over the slots, the
  // winner's value fetched and its slot cleared made each round's chain twice as long.
  uint32_t sk[kMaxP];
  int si[kMaxP];
#pragma unroll
  for (int i = 0; i < kMaxP; ++i) { sk[i] = key[i]; si[i] = i; }
#pragma unroll
  for (int pass = 0; pass < kMaxP; ++pass)
#pragma unroll
    for (int i = pass & 1; i + 1 < kMaxP; i += 2)
      if (sk[i + 1] > sk[i]) {
        const uint32_t k = sk[i]; sk[i] = sk[i + 1]; sk[i + 1] = k;
        const int j = si[i]; si[i] = si[i + 1]; si[i + 1] = j;
      }

  // top_k rounds; lane j keeps the j-th choice. Rolled where top_k is a run-time value: in a decode step the code is
  // cold (the layers' weights stream through L2 between two routings), and a rolled round is fetched once, not top_k
  // times. A model's kernel unrolls them: measured faster at every M against its rolled twin except DeepSeek-V3 at
  // M = 1024 (0.09 us; notes/l2/select_fixed.py, sixteenth session).
  int my_id = 0;
  auto round = [&](int r) {
    // A lane with nothing left (head key 0) never wins: every expert < N has a key > 0 and top_k <= N.
    const uint32_t bk = sk[0];
    const uint32_t bi = static_cast<uint32_t>(base + si[0]);
    const uint32_t kmax = __reduce_max_sync(kAll, bk);
    const uint32_t win = __reduce_min_sync(kAll, bk == kmax ? bi : 0xFFFFFFFFu);
    if (bi == win) {  // the winner's next slot becomes its head
#pragma unroll
      for (int i = 0; i + 1 < kMaxP; ++i) { sk[i] = sk[i + 1]; si[i] = si[i + 1]; }
      sk[kMaxP - 1] = 0u;
    }
    if (lane == r) my_id = static_cast<int>(win);
  };
  if constexpr (S::kUnroll) {
#pragma unroll
    for (int r = 0; r < top_k; ++r) round(r);
  } else {
#pragma unroll 1
    for (int r = 0; r < top_k; ++r) round(r);
  }
  // Each choice's value from the lane that holds it: kMaxP independent shuffles, after the rounds.
  float my_val = 0.f;
  {
    const int owner = my_id / P, slot = my_id - owner * P;
#pragma unroll
    for (int i = 0; i < kMaxP; ++i) {
      const float t = __shfl_sync(kAll, val[i], owner);
      if (slot == i) my_val = t;
    }
  }

  // Weights; lanes < top_k <= 8 hold the choices, so xor-shuffles over 4, 2, 1 sum them.
  const bool mine = lane < top_k;
  float wgt;
  if (mode == kModeTopkSoftmax) {
    const float l0 = __shfl_sync(kAll, my_val, 0);  // the largest selected logit
    const float e = mine ? expf(my_val - l0) : 0.f;
    float s = e;
#pragma unroll
    for (int off = 4; off > 0; off >>= 1) s += __shfl_xor_sync(kAll, s, off);
    wgt = e / s;
  } else {
    wgt = mode == kModeSoftmaxTopk ? expf(my_val - mx) / sum : my_val;
    if (p.flags & kRenormalize) {
      float s = mine ? wgt : 0.f;
#pragma unroll
      for (int off = 4; off > 0; off >>= 1) s += __shfl_xor_sync(kAll, s, off);
      wgt = mode == kModeSoftmaxTopk ? wgt / s : wgt / (s + 1e-20f);
    }
    if (mode == kModeSigmoid) wgt *= p.scale;
  }
  if (mine) detail::store_choice(p, row, lane, wgt, my_id);
}

// The top_k of N <= 32 experts for one row, one expert per lane (lane = id), gpt-oss's router (topk_softmax), by a
// whole warp: select_row's outputs, bit for bit, by ranks instead of rounds. Every lane's key goes to the warp's
// scratch in shared memory, every lane counts the keys that beat its own (detail::beats: select_row's order) with
// eight 16-byte loads, and the ranks below top_k are the choices in selection order. 32 independent compares where
// select_row's rounds are top_k chains of two warp reductions; ranks by 32 shuffles instead (one per lane's key)
// were slower than the rounds (notes/l2/rank_ab.py), the keys read from shared memory faster (notes/l2/gemvroute.cu,
// and notes/l2/smem_rank_ab.py in the route kernels). v: the logit (kSelectBf16 rounding applied), keys: 32 words
// (16-byte aligned), sel_val / sel_id: kRouteMaxTopK each; the scratch may be reused once this returns.
__device__ __forceinline__ void select_rank1(float v, const RouteParams& p, long long row, uint32_t* keys,
                                             float* sel_val, int* sel_id) {
  constexpr unsigned kAll = 0xFFFFFFFFu;
  const int lane = threadIdx.x & 31;
  const int N = p.N;
  const int top_k = min(p.top_k, min(kRouteMaxTopK, N));  // the host guarantees p.top_k <= min(8, N)
  const uint32_t key = lane < N ? detail::order_key(v) : 0u;  // every expert's key > 0: a lane >= N ranks >= N
  keys[lane] = key;
  __syncwarp();
  int rank = 0;
#pragma unroll
  for (int j4 = 0; j4 < 8; ++j4) {
    const uint4 kk = reinterpret_cast<const uint4*>(keys)[j4];
    rank += detail::beats(kk.x, 4 * j4, key, lane) + detail::beats(kk.y, 4 * j4 + 1, key, lane) +
            detail::beats(kk.z, 4 * j4 + 2, key, lane) + detail::beats(kk.w, 4 * j4 + 3, key, lane);
  }
  if (rank < top_k) {
    sel_val[rank] = v;
    sel_id[rank] = lane;
  }
  __syncwarp();
  const bool mine = lane < top_k;
  const float my_val = mine ? sel_val[lane] : 0.f;
  const int my_id = mine ? sel_id[lane] : 0;
  // The weights as select_row makes them (softmax over the k chosen, the largest first).
  const float l0 = __shfl_sync(kAll, my_val, 0);
  const float e = mine ? expf(my_val - l0) : 0.f;
  float s = e;
#pragma unroll
  for (int off = 4; off > 0; off >>= 1) s += __shfl_xor_sync(kAll, s, off);
  if (mine) detail::store_choice(p, row, lane, e / s, my_id);
  __syncwarp();  // every lane has read sel_val / sel_id: the caller may reuse the scratch
}

// The leader's part once its logits tile [kRows][kTileN] (bias added; columns < N hold experts) and the sigmoid
// router's correction selb_s[N] are complete: write the logits if asked, then choose, a warp per token (warp w takes
// tokens w, w + kWarps, ...; no barrier, so a warp may stop early). Every thread of the leader calls it.
template <int kRows, int kTileN, int kMaxP, int kWarps>
__device__ __forceinline__ void route_leader_tail(const RouteParams& p, const float* tile, const float* selb_s,
                                                  const int m0) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int N = p.N;
  // Logits output (the unrounded fp32 values, stored as fp32 or bf16), row by row, coalesced.
  if (p.logits != nullptr) {
#pragma unroll 1
    for (int r = 0; r < kRows; ++r) {
      if (m0 + r >= p.M) break;
      const long long o = static_cast<long long>(m0 + r) * p.ldl;
      for (int n = threadIdx.x; n < N; n += 32 * kWarps) {
        const float l = tile[r * kTileN + n];
        if (p.flags & kLogitsF32)
          static_cast<float*>(p.logits)[o + n] = l;
        else
          static_cast<__nv_bfloat16*>(p.logits)[o + n] = __float2bfloat16_rn(l);
      }
    }
  }

  // Selection. N <= 32 with gpt-oss's router: select_rank1, with a warp's scratch here (192 bytes a warp).
  __shared__ alignas(16) uint32_t rank_keys[kWarps][32];
  __shared__ float rank_val[kWarps][kRouteMaxTopK];
  __shared__ int rank_id[kWarps][kRouteMaxTopK];
  const int P = (N + 31) >> 5;
  const bool sel_bf16 = (p.flags & kSelectBf16) != 0;
  const bool sigmoid = p.mode == kModeSigmoid;
  detail::with_slots<1, kMaxP>(P, [&](auto slots) {
    constexpr int kP = decltype(slots)::value;
#pragma unroll 1
    for (int r = warp; r < kRows; r += kWarps) {
      if (m0 + r >= p.M) break;
      float v[kP], cb[kP];
#pragma unroll
      for (int i = 0; i < kP; ++i) {
        const int n = lane * P + i;
        const bool ok = i < P && n < N;
        const float l = ok ? tile[r * kTileN + n] : 0.f;
        v[i] = sel_bf16 ? detail::round_bf16(l) : l;
        cb[i] = ok && sigmoid ? selb_s[n] : 0.f;
      }
      if constexpr (kP == 1) {  // (notes/l2/smem_rank_ab.py compiles this branch out: `if constexpr (false)`)
        if (p.mode == kModeTopkSoftmax) {
          select_rank1(v[0], p, m0 + r, rank_keys[warp], rank_val[warp], rank_id[warp]);
          continue;
        }
      }
      select_row<kP>(v, cb, P, p, m0 + r);
    }
  });
}

// Fused router GEMM + selection. Template parameters, in order:
//   kWarps:    warps per CTA, each a K slice (block = 32 * kWarps threads)
//   kSplits:   CTAs per expert group, each a K range (S)
//   kExpTiles: 16-expert MMA tiles per CTA (E): an expert group is 16E experts
//   kTokTiles: 8-token MMA tiles per cluster (T)
//   kUnroll:   64-wide K chunks in flight per warp
template <int kWarps, int kSplits, int kExpTiles, int kTokTiles, int kUnroll>
__device__ __forceinline__ void route_fused(const RouteParams& p) {
  static_assert(kSplits >= 1 && kSplits <= 16 && kWarps >= 1 && kWarps <= 32, "bad configuration");
  constexpr int kThreads = 32 * kWarps;
  constexpr int kGroupExperts = 16 * kExpTiles;
  // Expert groups one cluster can hold: 16 CTAs at most, and no more than 384 experts need.
  constexpr int kMaxGroups = (16 / kSplits) < (kRouteMaxExperts + kGroupExperts - 1) / kGroupExperts
                                 ? (16 / kSplits) : (kRouteMaxExperts + kGroupExperts - 1) / kGroupExperts;
  constexpr int kTileN = kGroupExperts * kMaxGroups;  // logits tile width: every N this configuration takes
  constexpr int kMaxN = kTileN < kRouteMaxExperts ? kTileN : kRouteMaxExperts;
  constexpr int kMaxP = (kMaxN + 31) / 32;
  constexpr int kRows = 8 * kTokTiles;
  constexpr int kFrag = kExpTiles * kTokTiles * 32;   // float4 fragments of a CTA's tile
  constexpr int kPartBytes = kWarps * kFrag * 16;     // its warps' partials
  constexpr int kTileBytes = kRows * kTileN * 4;      // the leader's logits tile (reuses the partials' space)
  constexpr int kScratch = (kPartBytes > kTileBytes ? kPartBytes : kTileBytes) / 16;
  constexpr int kBiasPerThread = (kMaxN + kThreads - 1) / kThreads;
  static_assert(kMaxGroups >= 1, "bad configuration");

  // Leader's receive buffer: [S][G][E][T][32 lanes] float4, in the MMA fragment layout.
  __shared__ float4 recv[kSplits][kMaxGroups][kFrag];
  __shared__ float4 scratch[kScratch];
  __shared__ float bias_s[kTileN];
  __shared__ float selb_s[kTileN];
  __shared__ alignas(8) uint64_t recv_bar;  // counts the bytes of partial tiles sent to the leader

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int rank = static_cast<int>(cute::block_rank_in_cluster());
  const int grp = rank / kSplits;    // expert group
  const int split = rank % kSplits;  // K range
  const bool leader = rank == 0;
  const int n0 = grp * kGroupExperts;
  const int m0 = blockIdx.y * kRows;
  const int N = p.N;
  const int groups = (N + kGroupExperts - 1) / kGroupExperts;
  const uint32_t ctas = detail::cluster_num_ctas();
  // A launch that does not match N would send into buffers that do not exist, or wait for bytes that never
  // come: fail loudly instead.
  if (groups > kMaxGroups || ctas != static_cast<uint32_t>(groups * kSplits)) __trap();

  if (leader && threadIdx.x == 0) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" :: "r"(detail::smem_addr(&recv_bar)) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  cute::cluster_arrive_relaxed();  // waited on before the first remote store: the leader's mbarrier exists
  // Dependents may launch now: their griddepcontrol.wait still waits for this whole grid to complete.
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");

  // The leader's bias and correction (parameters, not the previous kernel's output) are loaded into registers
  // before griddepcontrol.wait, and stored to shared memory after the K loop.
  float bias_pre[kBiasPerThread], selb_pre[kBiasPerThread];
  float acc[kExpTiles][kTokTiles][4];
  splitk_mainloop<kSplits * kWarps, kExpTiles, kTokTiles, kUnroll>(
      p, n0, m0, split * kWarps + warp, acc, [&] {
#pragma unroll
        for (int b = 0; b < kBiasPerThread; ++b) {
          const int n = static_cast<int>(threadIdx.x) + b * kThreads;
          bias_pre[b] = 0.f;
          selb_pre[b] = 0.f;
          if (leader && n < N) {
            if (p.bias != nullptr) bias_pre[b] = __bfloat162float(p.bias[n]);
            if (p.sel_bias != nullptr) selb_pre[b] = p.sel_bias[n];
          }
        }
      });

  // Reduce the warps' partials in a fixed order and send the CTA's tile to the leader.
  float4* part = scratch;  // [kWarps][kFrag]
#pragma unroll
  for (int e = 0; e < kExpTiles; ++e)
#pragma unroll
    for (int t = 0; t < kTokTiles; ++t)
      part[warp * kFrag + (e * kTokTiles + t) * 32 + lane] =
          make_float4(acc[e][t][0], acc[e][t][1], acc[e][t][2], acc[e][t][3]);
  if (leader) {
#pragma unroll
    for (int b = 0; b < kBiasPerThread; ++b) {
      const int n = static_cast<int>(threadIdx.x) + b * kThreads;
      if (n < kTileN) { bias_s[n] = bias_pre[b]; selb_s[n] = selb_pre[b]; }
    }
  }
  __syncthreads();
  cute::cluster_wait();
  // A cluster of one CTA (N <= 16E and S = 1) keeps its tile with plain stores: st.async into a cluster of one is
  // invalid (compute-sanitizer memcheck: "Cluster needs to have at least 2 blocks"), and nothing is in flight.
  const bool alone = ctas == 1u;
  if (leader && threadIdx.x == 0 && !alone) {
    // Every CTA of the cluster (the leader included) sends its whole tile, whether or not its experts are < N.
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n"
                 :: "r"(detail::smem_addr(&recv_bar)), "r"(ctas * kFrag * 16u) : "memory");
  }
  for (int i = threadIdx.x; i < kFrag; i += kThreads) {
    float4 s = part[i];
#pragma unroll
    for (int w = 1; w < kWarps; ++w) {
      const float4 r = part[w * kFrag + i];
      s.x += r.x; s.y += r.y; s.z += r.z; s.w += r.w;
    }
    if (alone)
      recv[split][grp][i] = s;
    else
      detail::st_async_v4(&recv[split][grp][i].x, &recv_bar, 0u, s);
  }
  if (!leader) return;  // uniform in the CTA; nothing here is read by another CTA

  // Leader: every thread waits, so its shared memory outlives the stores still flying into it. The wait also
  // orders the reuse of `scratch` below after every read of `part` (each st.async carries what was read), and
  // the __syncthreads makes that plain (and, alone, orders the plain stores above).
  __syncthreads();
  if (!alone) detail::mbarrier_wait<true>(detail::smem_addr(&recv_bar), 0);

  // Sum the S partials of each fragment in a fixed order, add bias: fp32 logits tile [kRows][kTileN].
  float* tile = reinterpret_cast<float*>(scratch);
  for (int i = threadIdx.x; i < groups * kFrag; i += kThreads) {
    const int gi = i / kFrag, f = i % kFrag;
    const int e = f / (kTokTiles * 32), t = (f / 32) % kTokTiles, src_lane = f % 32;
    float4 s = recv[0][gi][f];
#pragma unroll
    for (int sp = 1; sp < kSplits; ++sp) {
      const float4 r = recv[sp][gi][f];
      s.x += r.x; s.y += r.y; s.z += r.z; s.w += r.w;
    }
    const float vals[4] = {s.x, s.y, s.z, s.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = gi * kGroupExperts + 16 * e + (src_lane >> 2) + 8 * (j >> 1);
      const int m = 8 * t + 2 * (src_lane & 3) + (j & 1);
      if (n < N) tile[m * kTileN + n] = p.bias != nullptr ? vals[j] + bias_s[n] : vals[j];
    }
  }
  __syncthreads();

  route_leader_tail<kRows, kTileN, kMaxP, kWarps>(p, tile, selb_s, m0);
}

// Fused route from a GEMV: the dot products of templates/gemv.cuh (fp32 FMAs, every W and x load in flight before
// the first, no MMA and no K split), one thread block cluster of C = ceil(N / kRows) CTAs per kTokens tokens. CTA
// rank r owns expert rows [r kRows, (r + 1) kRows) over the whole of K, adds their bias (the GEMV's sum, then the
// bias) and sends its kRows x kTokens logits to the leader (rank 0) with st.async, counted on the leader's mbarrier;
// the leader writes the logits if asked and chooses (route_leader_tail). Why a second fused kernel: in the decode
// loop the GEMV's 32 CTAs of one row (gpt-oss-20b) cost 2.2 us against the split-K kernels' 3.1, and two rows a CTA
// cost the same as one when each thread still issues two W loads (kVecs = 1; 2.7 us with kVecs = 2 and half the
// threads: notes/PERF.md, thirteenth session), so 16 CTAs hold 32 experts' logits in one cluster. A row's bits depend
// on K and the template arguments only, never on M.
// Launch: grid (C, ceil(M / kTokens), 1), cluster (C, 1, 1), C <= 16 (more than 8 needs the non-portable cluster
// attribute), block kThreads, no dynamic shared memory; N <= 16 kRows (else the kernel traps).
template <int kRows, int kTokens, int kVecs, int kThreads>
__device__ __forceinline__ void route_gemv(const RouteParams& p) {
  constexpr int kMaxN = 16 * kRows;  // one cluster's experts
  static_assert(kMaxN <= kRouteMaxExperts, "at most 384 experts");
  constexpr int kMaxP = (kMaxN + 31) / 32;
  constexpr int kOut = kRows * kTokens;
  constexpr int kWarps = kThreads / 32;
  constexpr int kSelbPerThread = (kMaxN + kThreads - 1) / kThreads;
  __shared__ float tile[kTokens][kMaxN];
  __shared__ float selb_s[kMaxN];
  __shared__ alignas(8) uint64_t recv_bar;  // counts the logits sent to the leader

  const int rank = static_cast<int>(cute::block_rank_in_cluster());
  const bool leader = rank == 0;
  const int n0 = rank * kRows;
  const int m0 = blockIdx.y * kTokens;
  const int N = p.N;
  const uint32_t ctas = detail::cluster_num_ctas();
  // A launch that does not match N would wait for logits that never come: fail loudly instead.
  if (N > kMaxN || ctas != static_cast<uint32_t>((N + kRows - 1) / kRows)) __trap();

  if (leader && threadIdx.x == 0) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" :: "r"(detail::smem_addr(&recv_bar)) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  cute::cluster_arrive_relaxed();  // waited on before the first remote store: the leader's mbarrier exists
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");

  // Parameters, not the previous kernel's output: loaded before the dot products' griddepcontrol.wait.
  const int r = static_cast<int>(threadIdx.x) / kTokens, m = static_cast<int>(threadIdx.x) % kTokens;
  float bias_pre = 0.f;
  if (p.bias != nullptr && static_cast<int>(threadIdx.x) < kOut && n0 + r < N)
    bias_pre = __bfloat162float(p.bias[n0 + r]);
  float selb_pre[kSelbPerThread];
#pragma unroll
  for (int b = 0; b < kSelbPerThread; ++b) {
    const int n = static_cast<int>(threadIdx.x) + b * kThreads;
    selb_pre[b] = leader && p.sel_bias != nullptr && n < N ? p.sel_bias[n] : 0.f;
  }

  float t = detail::gemv_dot<kRows, kTokens, kVecs, kThreads>(p, n0, m0, p.K / 8);
  if (p.bias != nullptr) t += bias_pre;
  if (leader) {
#pragma unroll
    for (int b = 0; b < kSelbPerThread; ++b) {
      const int n = static_cast<int>(threadIdx.x) + b * kThreads;
      if (n < kMaxN) selb_s[n] = selb_pre[b];
    }
  }
  cute::cluster_wait();
  // A cluster of one CTA (N <= kRows) keeps its logits with plain stores: st.async into a cluster of one is invalid.
  const bool alone = ctas == 1u;
  if (leader && threadIdx.x == 0 && !alone) {
    // Every CTA sends all of its kRows x kTokens values, rows >= N and tokens >= M included (never read).
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n"
                 :: "r"(detail::smem_addr(&recv_bar)), "r"(ctas * kOut * 4u) : "memory");
  }
  if (static_cast<int>(threadIdx.x) < kOut) {
    if (alone)
      tile[m][n0 + r] = t;
    else
      detail::st_async_f32(&tile[m][n0 + r], &recv_bar, 0u, t);
  }
  if (!leader) return;  // uniform in the CTA; nothing here is read by another CTA

  // Leader: every thread waits, so its shared memory outlives the stores still flying into it; the __syncthreads
  // orders selb_s (and, alone, the plain stores) before the reads below.
  __syncthreads();
  if (!alone) detail::mbarrier_wait<true>(detail::smem_addr(&recv_bar), 0);
  route_leader_tail<kTokens, kMaxN, kMaxP, kWarps>(p, &tile[0][0], selb_s, m0);
}

// Select-only: logits_in [M, ldi] (bias included) -> weights, ids. A warp per row, blockDim.x / 32 rows per CTA:
// the host picks the CTA shape per call (families/route.py: select_rows). Sized for the slots a lane needs
// (P = ceil(N / 32)), so N <= 128 scans 4 slots per round, not 12. kMode: the router.
template <int kMaxP, int kMode, class S = Shape<>>
__device__ __forceinline__ void route_select_p(const RouteParams& p) {
  static_assert(kMode >= 0, "a select kernel has one router");
  const int lane = threadIdx.x & 31;
  const long long row = static_cast<long long>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int N = S::N(p);
  const int P = (N + 31) >> 5;
  constexpr bool sigmoid = kMode == kModeSigmoid;
  // A model's kernel whose lanes hold whole 8- or 16-byte pieces (every slot an expert, P a multiple of 4): a lane's
  // values in load_lane's pieces, no bounds tests.
  constexpr bool kWholeLanes = S::kFixedN == 32 * kMaxP && kMaxP % 4 == 0;
  // The correction is a parameter, not the previous kernel's output: load it before the wait.
  float cb[kMaxP];
  const float* cbp = p.sel_bias + lane * P;
  if constexpr (sigmoid && kWholeLanes) {
    if (p.sel_bias != nullptr) {
      detail::load_lane(cbp, cb);
    } else {
#pragma unroll
      for (int i = 0; i < kMaxP; ++i) cb[i] = 0.f;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kMaxP; ++i) {
      const int n = lane * P + i;
      cb[i] = (sigmoid && p.sel_bias != nullptr && i < P && n < N) ? cbp[i] : 0.f;
    }
  }
  asm volatile("griddepcontrol.wait;" ::: "memory");  // the logits come from the previous kernel
  if (row >= p.M) return;  // no barrier in this kernel
  const bool in_f32 = (p.flags & kInputF32) != 0;
  // Rounding to bf16 changes fp32 logits only: bf16 ones are already bf16 values.
  const bool sel_bf16 = in_f32 && (p.flags & kSelectBf16) != 0;
  // Every slot's load is issued before any is used: one branch on the input dtype around all of them, each load
  // predicated. A branch per slot (dtype and bounds) kept each load in its own block, used at once: P dependent
  // L2 round trips per row (SASS of the p4 and p8 kernels up to 2026-11-29).
  float v[kMaxP];
  const long long o = row * p.ldi + lane * P;
  if (in_f32) {
    const float* src = static_cast<const float*>(p.logits_in) + o;
    if constexpr (kWholeLanes) {
      detail::load_lane(src, v);
    } else {
#pragma unroll
      for (int i = 0; i < kMaxP; ++i) v[i] = (i < P && lane * P + i < N) ? src[i] : 0.f;
    }
  } else {
    const __nv_bfloat16* src = static_cast<const __nv_bfloat16*>(p.logits_in) + o;
    if constexpr (kWholeLanes) {
      detail::load_lane(src, v);
    } else {
#pragma unroll
      for (int i = 0; i < kMaxP; ++i) v[i] = (i < P && lane * P + i < N) ? __bfloat162float(src[i]) : 0.f;
    }
  }
  if (sel_bf16) {
#pragma unroll
    for (int i = 0; i < kMaxP; ++i) v[i] = detail::round_bf16(v[i]);
  }
  select_row<kMaxP, kMode, S>(v, cb, P, p, row);
}

// Select-only for the sigmoid router, one row per CTA, one expert per thread (blockDim.x = 32 ceil(N / 32), N <=
// 384). The warp-per-row kernel's grouped choice is a chain of about 30 dependent warp collectives (the group top-2 tree, topk_group rounds, top_k rounds over 8 experts a
// lane): 2.3 us of DeepSeek-V3's select stage in the decode loop over a top-1 choice (notes/l2/ds_select.py,
// 2026-11-29). Here every step spans the row at once:
//   1. scores and choice values, a thread each;
//   2. sigmoid groups (n_group > 1; groups of gs = N / n_group experts with gs | 32 or 32 | gs): the top-2 of each
//      group by xor-shuffle merges within a warp (then across a group's warps in shared memory); warp 0 ranks the
//      group scores (32 shuffles) and keeps the topk_group best; the other groups' choice values become -inf;
//   3. each warp's top_k by rank among its 32 lanes (32 shuffles); the warps' candidates ranked among themselves
//      (broadcast shared-memory reads), rank j -> choice j.
// The order is select_row's (a larger key first, the lower id among equal keys), so are the group scores (sums of
// the same two values) and the weights (the same renormalisation): the same outputs. (The same kernel for
// top-k-then-softmax over gpt-oss-120b's 128 experts gained nothing over a warp per row: notes/PERF.md.)
__device__ __forceinline__ void route_select_block(const RouteParams& p) {
  constexpr unsigned kAll = 0xFFFFFFFFu;
  constexpr int kMaxWarps = kRouteMaxExperts / 32;
  constexpr int kMaxCand = kMaxWarps * kRouteMaxTopK;
  __shared__ detail::Top2 warp_top2[kMaxWarps];
  __shared__ float group_score[32];
  __shared__ uint32_t keep_mask;
  __shared__ alignas(16) uint32_t cand_key[kMaxCand];
  __shared__ alignas(16) int cand_id[kMaxCand];
  __shared__ float cand_val[kMaxCand];
  __shared__ float sel_val[kRouteMaxTopK];
  __shared__ int sel_id[kRouteMaxTopK];

  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  const int N = p.N;
  // A launch outside this kernel's contract is a host bug (families/route.py: block_select_ok): fail loudly.
  if (p.mode != kModeSigmoid || N > static_cast<int>(blockDim.x) || static_cast<int>(blockDim.x) > kRouteMaxExperts)
    __trap();
  const int n = threadIdx.x, lane = n & 31, warp = n >> 5, warps = blockDim.x >> 5;
  const bool valid = n < N;
  const long long row = blockIdx.x;
  const int top_k = min(p.top_k, min(kRouteMaxTopK, N));
  // The correction is a parameter, not the previous kernel's output: load it before the wait.
  const float cb = (valid && p.sel_bias != nullptr) ? p.sel_bias[n] : 0.f;
  asm volatile("griddepcontrol.wait;" ::: "memory");  // the logits come from the previous kernel
  float l = 0.f;
  if (valid) {
    const long long o = row * p.ldi + n;
    l = (p.flags & kInputF32) ? static_cast<const float*>(p.logits_in)[o]
                              : __bfloat162float(static_cast<const __nv_bfloat16*>(p.logits_in)[o]);
  }
  const float v = (p.flags & kSelectBf16) ? detail::round_bf16(l) : l;
  const float s = 1.0f / (1.0f + expf(-v));  // the score: what the weight is made of
  float c = s + cb;                           // the choice value: what the choice ranks

  if (p.n_group > 1) {
    const int gs = N / p.n_group;
    detail::Top2 t{0u, 0u, 0.f, 0.f};
    if (valid) detail::top2_insert(t, detail::order_key(c), c);
    const int seg = min(gs, 32);  // a power of two (gs | 32) or 32 (32 | gs): xor partners stay in the segment
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      if (off >= seg) break;  // uniform
      const uint32_t k1 = __shfl_xor_sync(kAll, t.k1, off), k2 = __shfl_xor_sync(kAll, t.k2, off);
      const float f1 = __shfl_xor_sync(kAll, t.f1, off), f2 = __shfl_xor_sync(kAll, t.f2, off);
      detail::top2_merge(t, {k1, k2, f1, f2});
    }
    if (gs > 32) {  // a group is gs / 32 whole warps: merge their top-2 in order
      if (lane == 0) warp_top2[warp] = t;
      __syncthreads();
      const int per = gs >> 5, first = (n / gs) * per;
      t = warp_top2[first];
      for (int w = 1; w < per; ++w) detail::top2_merge(t, warp_top2[first + w]);
    }
    // The sum of the group's two largest choice values (NaN largest, as torch.topk), at its first expert.
    if (valid && n % gs == 0) group_score[n / gs] = gs >= 2 ? t.f1 + t.f2 : t.f1;
    __syncthreads();
    if (warp == 0) {  // keep the topk_group best groups (a larger score first, the lower group id on a tie)
      const uint32_t gk = lane < p.n_group ? detail::order_key(group_score[lane]) : 0u;
      const int r = detail::warp_rank(gk);
      const uint32_t kept = __ballot_sync(kAll, lane < p.n_group && r < p.topk_group);
      if (lane == 0) keep_mask = kept;
    }
    __syncthreads();
    // As transformers' DeepseekV3TopkRouter (5.x) and routing_ref.py: the other groups' choice values are masked
    // with -inf, so they rank below every kept expert (but stay selectable, so ids stay distinct).
    if (valid && !((keep_mask >> (n / gs)) & 1u)) c = __int_as_float(0xFF800000);
  }

  // 3. This warp's top_k (ids increase with lanes, so the lower lane wins a tie), then the warps' candidates.
  const uint32_t key = valid ? detail::order_key(c) : 0u;
  const int rw = detail::warp_rank(key);
  const int C = warps * top_k;
  const int C4 = (C + 3) & ~3;
  if (rw < top_k) {
    const int slot = warp * top_k + rw;
    cand_key[slot] = key; cand_id[slot] = n; cand_val[slot] = s;
  }
  if (n >= C && n < C4) { cand_key[n] = 0u; cand_id[n] = 0x7FFFFFFF; }  // padding: beats no candidate
  __syncthreads();
  if (n < C) {
    const uint32_t k = cand_key[n];
    const int id = cand_id[n];
    int r = 0;
    for (int j4 = 0; j4 < C4; j4 += 4) {
      const uint4 kk = *reinterpret_cast<const uint4*>(&cand_key[j4]);
      const int4 ii = *reinterpret_cast<const int4*>(&cand_id[j4]);
      r += detail::beats(kk.x, ii.x, k, id) + detail::beats(kk.y, ii.y, k, id) + detail::beats(kk.z, ii.z, k, id) +
           detail::beats(kk.w, ii.w, k, id);
    }
    if (r < top_k) { sel_val[r] = cand_val[n]; sel_id[r] = id; }
  }
  __syncthreads();
  if (warp != 0) return;

  // Weights as select_row's sigmoid branch: renormalised over the top_k (lanes < top_k <= 8), then scaled.
  const bool mine = lane < top_k;
  float wgt = mine ? sel_val[lane] : 0.f;
  const int my_id = mine ? sel_id[lane] : 0;
  if (p.flags & kRenormalize) {
    float t = mine ? wgt : 0.f;
#pragma unroll
    for (int off = 4; off > 0; off >>= 1) t += __shfl_xor_sync(kAll, t, off);
    wgt = wgt / (t + 1e-20f);
  }
  wgt *= p.scale;
  if (mine) detail::store_choice(p, row, lane, wgt, my_id);
}

// One router and one slot count (kSlots >= ceil(N / 32), chosen by the host): only the code that runs, 12 KB of
// cubin for gpt-oss's where one kernel for every router and N took 104 KB, and 0.1-0.3 us less in isolated replay
// (notes/PERF.md). A launch outside its router or slot count is a host bug: fail loudly.
template <int kMode, int kSlots>
__device__ __forceinline__ void route_select_mode(const RouteParams& p) {
  static_assert(kMode >= 0 && kSlots >= 1 && kSlots <= kRouteMaxPerLane, "bad select kernel");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if (p.mode != kMode || ((p.N + 31) >> 5) > kSlots) __trap();
  route_select_p<kSlots, kMode>(p);
}

// One model's choice (router, N, n_group, topk_group, top_k fixed at compile time): no bounds or size tests, the
// rounds unrolled, 16-byte loads. A launch with other sizes is a host bug: fail loudly.
template <int kMode, int kN, int kGroups, int kTopkGroup, int kTopK, bool kUnrollRounds = true>
__device__ __forceinline__ void route_select_fixed(const RouteParams& p) {
  using S = Shape<kN, kGroups, kTopkGroup, kTopK, kUnrollRounds>;
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  if (p.mode != kMode || p.N != kN || p.top_k != kTopK ||
      (kMode == kModeSigmoid && (p.n_group != kGroups || p.topk_group != kTopkGroup)))
    __trap();
  route_select_p<(kN + 31) / 32, kMode, S>(p);
}

}  // namespace cutlass_router

// The entry points the project emits (families/route.py), as compiled in testing (notes/route-kernel/):
//
// extern "C" __global__ void __launch_bounds__(32 * W, 1)
// crt_route_w{W}_s{S}_e{E}_t{T}_u{U}(const __grid_constant__ cutlass_router::RouteParams params) {
//   cutlass_router::route_fused<W, S, E, T, U>(params);
// }
//
// extern "C" __global__ void __launch_bounds__(256)   // 32 to 256 threads a launch
// crt_route_select_{mode}_p{P}(const __grid_constant__ cutlass_router::RouteParams params) {
//   cutlass_router::route_select_mode<MODE, P>(params);
// }
//
// extern "C" __global__ void __launch_bounds__(256)   // 32 to 256 threads a launch
// crt_route_select_{mode}_n{N}[_g{G}_tg{TG}]_k{K}(const __grid_constant__ cutlass_router::RouteParams params) {
//   cutlass_router::route_select_fixed<MODE, N, G, TG, K>(params);
// }
//
// extern "C" __global__ void __launch_bounds__(384)   // 32 ceil(N / 32) threads a launch, a row per CTA
// crt_route_select_sigmoid_block(const __grid_constant__ cutlass_router::RouteParams params) {
//   cutlass_router::route_select_block(params);
// }
