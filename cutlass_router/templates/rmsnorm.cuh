// cutlass-router: RMSNorm that lets the router start early, sm_90a.
//
//   out[m, k] = bf16( float(w[k]) * (float(x[m, k]) * rsqrt(mean_k(float(x[m, k])^2) + eps)) )
//
// Why a norm in a router library: the router's input is the layer's RMSNorm, and the router's launch and its
// first instructions can overlap that norm only if the norm lets its dependents launch early
// (programmatic dependent launch). torch's kernels never do, so a router launched with PDL after them only pays
// the attribute (notes/PERF.md). This kernel triggers its dependents at its first instruction; the router, launched
// with PDL, launches at once and waits (griddepcontrol.wait) for this grid to complete before it reads x. In the
// decode-layer loop (H200, 2026-11-29) this norm and route, both launched with PDL, cost 18.0-19.6 us per layer with
// the out-projection at gpt-oss's shapes to M = 64, against 21.5-23.6 for F.rms_norm and route; 0.3-1.1 us of that
// is the PDL chain (notes/PERF.md, fifteenth session).
//
// One CTA per row: every thread issues all of its x loads (16-byte vectors) before its first FMA, one warp
// shuffle tree and one shared-memory step give every thread the sum of squares in the same order (so every
// element of a row is scaled by the same factor), then each thread scales and stores its vectors. The weight
// does not depend on the previous kernel: its loads come before griddepcontrol.wait in the source (ptxas
// schedules them after it). Launched without the PDL attribute (the default), the wait returns at once.
//
// Limits the host guarantees (families/rmsnorm.py, validate.py): K % 8 == 0, 1 <= K <= 8 * kVecs * kThreads, x,
// out and w 16-byte aligned with row strides ldx, ldo % 8 == 0, grid (M, 1, 1), block kThreads.
#pragma once

// load_16B (the read-only path, before the wait) and load_16B_after_wait (L2, after it)
#include "splitk_mma.cuh"

namespace cutlass_router {

// Kernel parameters, passed by value. Python packs this layout (families/rmsnorm.py: PARAMS = "<3Q2q2ifi").
struct RmsNormParams {
  const __nv_bfloat16* x;  // [M, K], row stride ldx
  const __nv_bfloat16* w;  // [K]
  __nv_bfloat16* out;      // [M, K], row stride ldo
  long long ldx, ldo;      // in elements
  int M, K;
  float eps;
  int reserved;
};
static_assert(sizeof(RmsNormParams) == 56, "RmsNormParams must match families/rmsnorm.py's PARAMS");

template <int kThreads, int kVecs>
__device__ __forceinline__ void rms_norm_rows(const RmsNormParams& p) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "whole warps");
  constexpr int kWarps = kThreads / 32;
  __shared__ float part[kWarps];
  // The dependents (the router) may launch now: they wait for this grid before they read what it writes.
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  const int vecs = p.K / 8;
  const long long row = blockIdx.x;
  uint4 wv[kVecs], xv[kVecs];
#pragma unroll
  for (int s = 0; s < kVecs; ++s) {
    const int v = static_cast<int>(threadIdx.x) + s * kThreads;
    wv[s] = detail::load_16B(p.w + 8 * v, v < vecs);
  }
  asm volatile("griddepcontrol.wait;" ::: "memory");  // x comes from the previous kernel
#pragma unroll
  for (int s = 0; s < kVecs; ++s) {
    const int v = static_cast<int>(threadIdx.x) + s * kThreads;
    xv[s] = detail::load_16B_after_wait(p.x + row * p.ldx + 8 * v, v < vecs);
  }
  float ss = 0.f;
#pragma unroll
  for (int s = 0; s < kVecs; ++s)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&(&xv[s].x)[i]));
      ss = fmaf(a.x, a.x, ss);
      ss = fmaf(a.y, a.y, ss);
    }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if (lane == 0) part[warp] = ss;
  __syncthreads();
  float total = part[0];  // every thread sums the warps in the same order: one factor per row
#pragma unroll
  for (int i = 1; i < kWarps; ++i) total += part[i];
  // A NaN or Inf in the row makes the factor NaN or 0, and the row follows (as torch's RMSNorm does).
  const float r = rsqrtf(total / static_cast<float>(p.K) + p.eps);
#pragma unroll
  for (int s = 0; s < kVecs; ++s) {
    const int v = static_cast<int>(threadIdx.x) + s * kThreads;
    if (v >= vecs) continue;
    uint4 o;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 a = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&(&xv[s].x)[i]));
      const float2 g = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&(&wv[s].x)[i]));
      const __nv_bfloat162 y = __floats2bfloat162_rn(g.x * (a.x * r), g.y * (a.y * r));
      (&o.x)[i] = *reinterpret_cast<const uint32_t*>(&y);
    }
    *reinterpret_cast<uint4*>(p.out + row * p.ldo + 8 * v) = o;
  }
}

}  // namespace cutlass_router
