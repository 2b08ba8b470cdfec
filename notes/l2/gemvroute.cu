// Prototype (not shipped; notes/l2/gemvroute.py times it in the decode loop): route in one launch from a GEMV
// whose CTAs form one cluster, W and x staged by bulk copies (cp.async.bulk, the copy engine: no per-thread
// loads in flight), the logits sent to the leader's shared memory with st.async, the leader choosing (the
// library's select_row). The question: does a bulk copy lift the per-SM byte limit that made a GEMV CTA with
// more than one expert row slow (notes/PERF.md, 2026-11-29), so that a 16-CTA cluster can hold every logit?
//
// kCS CTAs per cluster (grid.x), kRows expert rows each (N <= kCS kRows), kTokens tokens per cluster (grid.y),
// kSelect: choose in the leader (else every CTA stores its logits to p.logits: a router_gemm).
//   nvcc -cubin -arch=sm_90a -O3 -std=c++17 --expt-relaxed-constexpr -I<cutlass>/include
//        -I cutlass_router/templates -o /tmp/gemvroute.cubin notes/l2/gemvroute.cu
//
// Thirteenth session (gemvroute-ldg-2026-11-29-h200.json, run 1): gemv_route_ldg below, the same choice from
// per-thread LDGs. Logits only, gpt-oss-20b M = 1: one row per CTA 2.18 us, two rows over 384 threads 2.11, two rows
// over 192 threads (4 W loads a thread) 2.70: the loads per thread cost, not the bytes per SM. One 16-CTA cluster
// of two rows with the leader choosing: 2.97 / 2.90 / 2.86 / 3.01 / 3.39 us at M = 1 / 2 / 4 / 8 / 16 (rank choice)
// and 3.14 / 3.26 / 3.07 / 3.30 / 3.67 (select_row) against route's GEMM + select 3.89 / 3.78 / 3.78 / 3.96 / 3.95
// in the same loop. Shipped as route.cuh's route_gemv (select_row, every router); gpt-oss-120b's 16 x 8 rows cost
// 4.35-4.46 against route's 4.06-4.24 (four W loads a thread at 768 threads) and are not.
#include "route.cuh"

namespace proto {
using namespace cutlass_router;

__device__ __forceinline__ void bulk_copy(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
               :: "r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}

// The rank choice (N <= 32, lane = expert) is the library's select_rank1 (route.cuh), which this prototype's
// select_rank32 became; the thirteenth session's and run 6 of the fifteenth were timed with that local copy, whose outputs it
// gives bit for bit (gemvroute.py checks _s3 against _s1, the rounds, at every M).

// kSelect: 0 logits only (no cluster), 1 gather + select_row (the library's rounds), 2 gather + the leader stores the logits (no choice),
// 3 gather + select_rank1 (N <= 32)
template <int kCS, int kRows, int kTokens, int kThreads, int kSelect>
__device__ __forceinline__ void gemv_route(const RouteParams& p) {
  constexpr int kN = kCS * kRows;
  constexpr int kWarps = kThreads / 32;
  constexpr int kOut = kRows * kTokens;
  constexpr int kMaxP = (kN + 31) / 32;
  static_assert(kOut <= kThreads, "a thread per output");
  extern __shared__ __align__(128) unsigned char dyn[];  // W [kRows][K] then x [kTokens][K], bf16
  __shared__ float tile[kSelect ? kTokens : 1][kSelect ? kN : 1];
  __shared__ float red[kWarps][kOut];
  __shared__ alignas(8) uint64_t bar_w, bar_x, recv_bar;
  __shared__ alignas(16) uint32_t keys_s[kWarps][32];
  __shared__ float selv_s[kWarps][8];
  __shared__ int seli_s[kWarps][8];

  const int K = p.K, N = p.N, M = p.M;
  const int rank = kSelect ? static_cast<int>(cute::block_rank_in_cluster()) : 0;
  const int n0 = (kSelect ? rank : static_cast<int>(blockIdx.x)) * kRows;
  const int m0 = blockIdx.y * kTokens;
  const bool leader = kSelect && rank == 0;
  const int rows = min(kRows, max(0, N - n0));
  const int toks = min(kTokens, M - m0);
  const uint32_t row_bytes = static_cast<uint32_t>(K) * 2u;
  const uint32_t sw = detail::smem_addr(dyn), sx = sw + kRows * row_bytes;

  if (threadIdx.x == 0) {
    detail::mbarrier_init(detail::smem_addr(&bar_w), 1);
    detail::mbarrier_init(detail::smem_addr(&bar_x), 1);
    if (leader) detail::mbarrier_init(detail::smem_addr(&recv_bar), 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  if constexpr (kSelect) cute::cluster_arrive_relaxed();
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  float bias_pre = 0.f;
  if (p.bias != nullptr && static_cast<int>(threadIdx.x) < kOut && threadIdx.x / kTokens < rows)
    bias_pre = __bfloat162float(p.bias[n0 + threadIdx.x / kTokens]);
  if (threadIdx.x == 0) {  // W is a parameter: its copies go before the wait
    detail::mbarrier_expect_tx(detail::smem_addr(&bar_w), rows * row_bytes);
    for (int r = 0; r < rows; ++r) bulk_copy(sw + r * row_bytes, p.w + (long long)(n0 + r) * p.ldw, row_bytes,
                                             detail::smem_addr(&bar_w));
  }
  asm volatile("griddepcontrol.wait;" ::: "memory");
  if (threadIdx.x == 0) {
    detail::mbarrier_expect_tx(detail::smem_addr(&bar_x), toks * row_bytes);
    for (int m = 0; m < toks; ++m) bulk_copy(sx + m * row_bytes, p.x + (long long)(m0 + m) * p.ldx, row_bytes,
                                             detail::smem_addr(&bar_x));
  }
  detail::mbarrier_wait<false>(detail::smem_addr(&bar_w), 0);
  detail::mbarrier_wait<false>(detail::smem_addr(&bar_x), 0);

  float acc[kRows][kTokens];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int m = 0; m < kTokens; ++m) acc[r][m] = 0.f;
  const int vecs = K / 8;
#pragma unroll 1
  for (int v = threadIdx.x; v < vecs; v += kThreads) {
    uint4 wv[kRows], xv[kTokens];
#pragma unroll
    for (int r = 0; r < kRows; ++r)
      wv[r] = r < rows ? detail::ld_shared_16B(sw + r * row_bytes + 16 * v) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int m = 0; m < kTokens; ++m)
      xv[m] = m < toks ? detail::ld_shared_16B(sx + m * row_bytes + 16 * v) : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&(&wv[r].x)[i]));
#pragma unroll
        for (int m = 0; m < kTokens; ++m) {
          const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&(&xv[m].x)[i]));
          acc[r][m] = fmaf(a.x, b.x, acc[r][m]);
          acc[r][m] = fmaf(a.y, b.y, acc[r][m]);
        }
      }
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int m = 0; m < kTokens; ++m) {
      float v = acc[r][m];
#pragma unroll
      for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) red[warp][r * kTokens + m] = v;
    }
  __syncthreads();
  float t = 0.f;
  const int r = threadIdx.x / kTokens, m = threadIdx.x % kTokens;
  if (static_cast<int>(threadIdx.x) < kOut) {
    t = red[0][threadIdx.x];
#pragma unroll
    for (int i = 1; i < kWarps; ++i) t += red[i][threadIdx.x];
    t += bias_pre;
  }
  if constexpr (!kSelect) {
    if (static_cast<int>(threadIdx.x) < kOut && r < rows && m < toks)
      static_cast<float*>(p.logits)[(long long)(m0 + m) * p.ldl + n0 + r] = t;
    return;
  } else {
    cute::cluster_wait();  // the leader's recv_bar exists
    if (leader && threadIdx.x == 0)
      detail::mbarrier_expect_tx(detail::smem_addr(&recv_bar), kCS * kOut * 4u);
    if (static_cast<int>(threadIdx.x) < kOut) detail::st_async_f32(&tile[m][n0 + r], &recv_bar, 0u, t);
    if (!leader) return;
    detail::mbarrier_wait<true>(detail::smem_addr(&recv_bar), 0);
    if constexpr (kSelect == 2) {
      for (int i = threadIdx.x; i < toks * N; i += kThreads)
        static_cast<float*>(p.logits)[(long long)(m0 + i / N) * p.ldl + i % N] = tile[i / N][i % N];
      return;
    }
    if constexpr (kSelect == 3) {
      for (int row = warp; row < toks; row += kWarps)
        select_rank1(tile[row][lane < kN ? lane : 0], p, m0 + row, keys_s[warp], selv_s[warp], seli_s[warp]);
      return;
    }
    const int P = (N + 31) >> 5;
    const bool sel_bf16 = (p.flags & kSelectBf16) != 0;
    detail::with_slots<1, kMaxP>(P, [&](auto slots) {
      constexpr int kP = decltype(slots)::value;
#pragma unroll 1
      for (int row = warp; row < toks; row += kWarps) {
        float v[kP], cb[kP];
#pragma unroll
        for (int i = 0; i < kP; ++i) {
          const int n = lane * P + i;
          const float l = i < P && n < N ? tile[row][n] : 0.f;
          v[i] = sel_bf16 ? detail::round_bf16(l) : l;
          cb[i] = 0.f;
        }
        select_row<kP, kModeTopkSoftmax>(v, cb, P, p, m0 + row);
      }
    });
  }
}
// The same choice from a GEMV whose loads are per-thread 16-byte LDGs into registers (templates/gemv.cuh's
// pass), not bulk copies: the ninth session's numbers (g_r1_m1_v3_t128 2.32 against g_r1_m1_v2_t192 1.92 at the
// same bytes per SM) suggest the cost of a second expert row per CTA is loads per thread, not bytes per SM.
// kRG row groups of kThreads / kRG threads each take kRows / kRG of the CTA's rows over the whole of K, so a
// thread issues (kRows / kRG) x kVecs W loads and kTokens x kVecs x loads.
template <int kCS, int kRows, int kRG, int kTokens, int kVecs, int kThreads, int kSelect>
__device__ __forceinline__ void gemv_route_ldg(const RouteParams& p) {
  constexpr int kN = kCS * kRows;
  constexpr int kGT = kThreads / kRG;
  constexpr int kRowsG = kRows / kRG;
  static_assert(kGT % 32 == 0 && kRows % kRG == 0, "whole warps per group, rows shared evenly");
  constexpr int kWarps = kThreads / 32, kWarpsG = kGT / 32;
  constexpr int kOut = kRows * kTokens;
  constexpr int kMaxP = (kN + 31) / 32;
  static_assert(kOut <= kThreads, "a thread per output");
  __shared__ float tile[kSelect ? kTokens : 1][kSelect ? kN : 1];
  __shared__ float red[kWarps][kRowsG * kTokens];
  __shared__ alignas(8) uint64_t recv_bar;
  __shared__ alignas(16) uint32_t keys_s[kWarps][32];
  __shared__ float selv_s[kWarps][8];
  __shared__ int seli_s[kWarps][8];

  const int K = p.K, N = p.N, M = p.M;
  const int rank = kSelect ? static_cast<int>(cute::block_rank_in_cluster()) : 0;
  const int n0 = (kSelect ? rank : static_cast<int>(blockIdx.x)) * kRows;
  const int m0 = blockIdx.y * kTokens;
  const bool leader = kSelect && rank == 0;
  const int rows = min(kRows, max(0, N - n0));
  const int toks = min(kTokens, M - m0);
  const int tid = threadIdx.x;

  if (kSelect && leader && tid == 0) {
    detail::mbarrier_init(detail::smem_addr(&recv_bar), 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  if constexpr (kSelect) cute::cluster_arrive_relaxed();
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  float bias_pre = 0.f;
  if (p.bias != nullptr && tid < kOut && tid / kTokens < rows) bias_pre = __bfloat162float(p.bias[n0 + tid / kTokens]);

  const int rg = tid / kGT, lt = tid % kGT;
  const int vecs = K / 8;
  float acc[kRowsG][kTokens];
#pragma unroll
  for (int r = 0; r < kRowsG; ++r)
#pragma unroll
    for (int m = 0; m < kTokens; ++m) acc[r][m] = 0.f;
  auto pass = [&](const int base, const bool first) {
    uint4 wv[kRowsG][kVecs], xv[kTokens][kVecs];
#pragma unroll
    for (int s = 0; s < kVecs; ++s) {
      const int v = base + lt + s * kGT;
#pragma unroll
      for (int r = 0; r < kRowsG; ++r) {
        const int rr = rg * kRowsG + r;
        wv[r][s] = detail::load_16B(p.w + static_cast<long long>(n0 + rr) * p.ldw + 8 * v, v < vecs && rr < rows);
      }
    }
    if (first) asm volatile("griddepcontrol.wait;" ::: "memory");
#pragma unroll
    for (int s = 0; s < kVecs; ++s) {
      const int v = base + lt + s * kGT;
#pragma unroll
      for (int m = 0; m < kTokens; ++m)
        xv[m][s] = detail::load_16B_after_wait(p.x + static_cast<long long>(m0 + m) * p.ldx + 8 * v,
                                               v < vecs && m < toks);
    }
#pragma unroll
    for (int s = 0; s < kVecs; ++s)
#pragma unroll
      for (int r = 0; r < kRowsG; ++r)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&(&wv[r][s].x)[i]));
#pragma unroll
          for (int m = 0; m < kTokens; ++m) {
            const float2 b = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&(&xv[m][s].x)[i]));
            acc[r][m] = fmaf(a.x, b.x, acc[r][m]);
            acc[r][m] = fmaf(a.y, b.y, acc[r][m]);
          }
        }
  };
  pass(0, true);
#pragma unroll 1
  for (int base = kVecs * kGT; base < vecs; base += kVecs * kGT) pass(base, false);

  const int lane = tid & 31, warp = tid >> 5;
#pragma unroll
  for (int r = 0; r < kRowsG; ++r)
#pragma unroll
    for (int m = 0; m < kTokens; ++m) {
      float v = acc[r][m];
#pragma unroll
      for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) red[warp][r * kTokens + m] = v;
    }
  __syncthreads();
  float t = 0.f;
  const int r = tid / kTokens, m = tid % kTokens;
  if (tid < kOut) {
    const int g = r / kRowsG, o = (r % kRowsG) * kTokens + m;
    t = red[g * kWarpsG][o];
#pragma unroll
    for (int i = 1; i < kWarpsG; ++i) t += red[g * kWarpsG + i][o];
    t += bias_pre;
  }
  if constexpr (!kSelect) {
    if (tid < kOut && r < rows && m < toks) static_cast<float*>(p.logits)[(long long)(m0 + m) * p.ldl + n0 + r] = t;
    return;
  } else {
    cute::cluster_wait();  // the leader's recv_bar exists
    if (leader && tid == 0) detail::mbarrier_expect_tx(detail::smem_addr(&recv_bar), kCS * kOut * 4u);
    if (tid < kOut) detail::st_async_f32(&tile[m][n0 + r], &recv_bar, 0u, t);
    if (!leader) return;
    detail::mbarrier_wait<true>(detail::smem_addr(&recv_bar), 0);
    if constexpr (kSelect == 3) {
      for (int row = warp; row < toks; row += kWarps)
        select_rank1(tile[row][lane < kN ? lane : 0], p, m0 + row, keys_s[warp], selv_s[warp], seli_s[warp]);
      return;
    }
    const int P = (N + 31) >> 5;
    const bool sel_bf16 = (p.flags & kSelectBf16) != 0;
    detail::with_slots<1, kMaxP>(P, [&](auto slots) {
      constexpr int kP = decltype(slots)::value;
#pragma unroll 1
      for (int row = warp; row < toks; row += kWarps) {
        float v[kP], cb[kP];
#pragma unroll
        for (int i = 0; i < kP; ++i) {
          const int n = lane * P + i;
          const float l = i < P && n < N ? tile[row][n] : 0.f;
          v[i] = sel_bf16 ? detail::round_bf16(l) : l;
          cb[i] = 0.f;
        }
        select_row<kP, kModeTopkSoftmax>(v, cb, P, p, m0 + row);
      }
    });
  }
}
}  // namespace proto

#define RL(CS, R, G, T, V, TH, S)                                                                                 \
  extern "C" __global__ void __launch_bounds__(TH, 1) rl_c##CS##_r##R##_g##G##_m##T##_v##V##_t##TH##_s##S(       \
      const __grid_constant__ cutlass_router::RouteParams p) {                                                    \
    proto::gemv_route_ldg<CS, R, G, T, V, TH, S>(p);                                                              \
  }
// gpt-oss-20b, logits only (no cluster): one row (the shipped GEMV's shape), two rows one group, two rows two groups
RL(1, 1, 1, 1, 1, 384, 0) RL(1, 2, 1, 1, 1, 384, 0) RL(1, 2, 2, 1, 1, 768, 0) RL(1, 2, 1, 1, 2, 192, 0)
// gpt-oss-20b, one 16-CTA cluster of 2 rows: rank choice (3), the library's rounds (1)
RL(16, 2, 1, 1, 1, 384, 3) RL(16, 2, 2, 1, 1, 768, 3) RL(16, 2, 1, 2, 1, 384, 3) RL(16, 2, 2, 2, 1, 768, 3)
RL(16, 2, 1, 1, 1, 384, 1) RL(16, 2, 2, 1, 1, 768, 1)
// gpt-oss-120b: 16 x 8 rows
RL(1, 8, 2, 1, 1, 768, 0) RL(1, 8, 4, 1, 2, 1024, 0)
RL(16, 8, 2, 1, 1, 768, 1) RL(16, 8, 4, 1, 2, 1024, 1) RL(16, 8, 2, 2, 1, 768, 1)

#define RG(CS, R, T, TH, S)                                                                          \
  extern "C" __global__ void __launch_bounds__(TH, 1)                                               \
      rg_c##CS##_r##R##_m##T##_t##TH##_s##S(const __grid_constant__ cutlass_router::RouteParams p) { \
    proto::gemv_route<CS, R, T, TH, S>(p);                                                               \
  }
// gpt-oss-20b (N = 32): 16 x 2; gpt-oss-120b (N = 128): 16 x 8
RG(16, 2, 1, 256, 1) RG(16, 2, 2, 256, 1) RG(16, 2, 4, 256, 1) RG(16, 2, 8, 256, 1)
RG(16, 2, 1, 256, 2) RG(16, 2, 2, 256, 2) RG(16, 2, 4, 256, 2) RG(16, 2, 8, 256, 2)
RG(16, 2, 1, 256, 3) RG(16, 2, 2, 256, 3) RG(16, 2, 4, 256, 3) RG(16, 2, 8, 256, 3)
RG(16, 8, 1, 256, 1) RG(16, 8, 2, 256, 1) RG(16, 8, 4, 256, 1)
RG(16, 8, 1, 256, 2) RG(16, 8, 2, 256, 2) RG(16, 8, 4, 256, 2)
// logits only (router_gemm candidates; grid.x = ceil(N / R), no cluster)
RG(1, 2, 1, 256, 0) RG(1, 8, 1, 256, 0)
