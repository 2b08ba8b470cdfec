// cutlass-router: the router GEMM as a GEMV for the smallest decode batches, sm_90a: no cluster, no MMA.
//
//   out[m, n] = sum_k x[m, k] * w[n, k] + bias[n]      (fp32 accumulation)
//
// Why this kernel beside the split-K one: inside a decode step the router's W is cold (the layer's other GEMMs
// evict it from L2) and nothing overlaps the router, so what counts is the chain of dependent steps, not the
// FLOPs. Measured in the decode-layer loop (notes/l2/, H200): a kernel that only reads W once over 128 CTAs costs
// 1.9-2.0 us per layer over an empty kernel's 0.9; the split-K kernel costs 3.2-3.5, and still 2.7 with W and
// its code warm, so its own chain (MMA, slice reduction, cluster exchange) is most of it. Here a CTA owns
// kRows expert rows over the whole of K:
//   * every thread issues all of its W and x loads (16-byte vectors) before its first FMA: one memory round
//     trip for K <= 8 * kVecs * kThreads;
//   * fp32 FMAs on the CUDA cores (at M <= 2 an MMA would waste 7/8 of its tokens anyway);
//   * one warp-shuffle tree and one shared-memory step per output; no cross-CTA reduction, so no cluster.
// Each CTA reads all of its tokens' x: at larger M the split-K kernels (x split over K slices, 16 experts per
// MMA) read far less, which is where the dispatch table hands over.
//
// Bits: token m's result is a fixed function of K and the template arguments (a thread's vectors in order, then
// the shuffle tree, then the warps in order), never of M or of the other rows.
#pragma once

#include "splitk_mma.cuh"

namespace cutlass_router {
namespace detail {

// This CTA's dot products of expert rows [n0, n0 + kRows) with tokens [m0, m0 + kTokens) over the whole of K, in
// fp32: thread i < kRows * kTokens returns row n0 + i / kTokens with token m0 + i % kTokens (0 for a row >= N or a
// token >= M), the other threads 0; vecs = K / 8. Every thread of the CTA calls it (one __syncthreads). Its
// griddepcontrol.wait comes before the first x load; W is loaded before it in the source.
//   kVecs:    16-byte vectors of K per thread and row per pass; K <= 8 * kVecs * kThreads takes one pass
template <int kRows, int kTokens, int kVecs, int kThreads, typename Params>
__device__ __forceinline__ float gemv_dot(const Params& p, const int n0, const int m0, const int vecs) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps");
  constexpr int kWarps = kThreads / 32;
  constexpr int kOut = kRows * kTokens;
  static_assert(kOut <= kThreads, "a thread per output in the last step");
  constexpr int kStep = kVecs * kThreads;  // vectors per pass
  __shared__ float red[kWarps][kOut];

  float acc[kRows][kTokens];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int m = 0; m < kTokens; ++m) acc[r][m] = 0.f;

  // One pass: this thread's vectors [base, base + kStep) of K, every load issued before the first FMA. The wait
  // sits between the W and the x loads in the source, but ptxas schedules the read-only W loads after it (SASS of
  // every configuration): under PDL they do not overlap the previous kernel. With PDL off, the default, nothing
  // is lost; what this kernel saves is the split-K kernels' reduction chain, not the prefetch.
  auto pass = [&](const int base, const bool first) {
    uint4 wv[kRows][kVecs], xv[kTokens][kVecs];
#pragma unroll
    for (int s = 0; s < kVecs; ++s) {
      const int v = base + static_cast<int>(threadIdx.x) + s * kThreads;
#pragma unroll
      for (int r = 0; r < kRows; ++r)
        wv[r][s] = load_16B(p.w + static_cast<long long>(n0 + r) * p.ldw + 8 * v, v < vecs && n0 + r < p.N);
    }
    if (first) asm volatile("griddepcontrol.wait;" ::: "memory");  // x may come from the previous kernel
#pragma unroll
    for (int s = 0; s < kVecs; ++s) {
      const int v = base + static_cast<int>(threadIdx.x) + s * kThreads;
#pragma unroll
      for (int m = 0; m < kTokens; ++m)
        xv[m][s] = load_16B_after_wait(p.x + static_cast<long long>(m0 + m) * p.ldx + 8 * v,
                                       v < vecs && m0 + m < p.M);
    }
#pragma unroll
    for (int s = 0; s < kVecs; ++s)
#pragma unroll
      for (int r = 0; r < kRows; ++r)
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
  pass(0, true);  // the wait runs even where K is 0
#pragma unroll 1
  for (int base = kStep; base < vecs; base += kStep) pass(base, false);

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
  if (static_cast<int>(threadIdx.x) < kOut) {
    t = red[0][threadIdx.x];
#pragma unroll
    for (int i = 1; i < kWarps; ++i) t += red[i][threadIdx.x];
  }
  return t;
}

}  // namespace detail

// kRows:    expert rows per CTA
// kTokens:  tokens per CTA (blockIdx.y tiles M)
// kVecs:    16-byte vectors of K per thread and row per pass (detail::gemv_dot)
// kThreads: threads per CTA
template <int kRows, int kTokens, int kVecs, int kThreads, typename OutT>
__device__ __forceinline__ void router_gemv(const SplitKParams& p) {
  constexpr int kOut = kRows * kTokens;
  const int n0 = blockIdx.x * kRows;
  const int m0 = blockIdx.y * kTokens;
  const int vecs = p.K / 8;

  // The bias does not depend on the previous kernel: output i's, fetched before the wait by thread i.
  float bias_pre = 0.f;
  if (p.bias != nullptr && static_cast<int>(threadIdx.x) < kOut && n0 + static_cast<int>(threadIdx.x) / kTokens < p.N)
    bias_pre = __bfloat162float(p.bias[n0 + threadIdx.x / kTokens]);
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");

  float t = detail::gemv_dot<kRows, kTokens, kVecs, kThreads>(p, n0, m0, vecs);
  if (static_cast<int>(threadIdx.x) < kOut) {
    const int n = n0 + threadIdx.x / kTokens, m = m0 + threadIdx.x % kTokens;
    if (n < p.N && m < p.M) {
      if (p.bias != nullptr) t += bias_pre;
      static_cast<OutT*>(p.out)[static_cast<long long>(m) * p.ldo + n] = detail::from_float<OutT>(t);
    }
  }
}

}  // namespace cutlass_router
