// Prototype (not shipped): a router GEMV for decode M without clusters or MMA. Each CTA owns R expert rows over the
// whole of K: every thread issues all of its W and x loads (16-byte vectors) before its first FMA, accumulates in
// fp32, then one warp-shuffle tree and one shared-memory step per output. No cross-CTA reduction, so at most one
// DRAM round trip and no cluster exchange. Token m's sum never depends on M (batch-invariant by construction).
#include <cuda_bf16.h>

template <int R, int MT, int VPT, int THREADS>
__device__ __forceinline__ void gemv(const __nv_bfloat16* __restrict__ x, const __nv_bfloat16* __restrict__ w,
                                     const __nv_bfloat16* __restrict__ bias, float* __restrict__ out, int M, int N,
                                     int K) {
  constexpr int WARPS = THREADS / 32;
  __shared__ float red[WARPS][R * MT];
  const int row0 = blockIdx.x * R;
  const int vecs = K / 8;
  uint4 wv[R][VPT], xv[MT][VPT];
#pragma unroll
  for (int s = 0; s < VPT; ++s) {
    const int v = threadIdx.x + s * THREADS;
#pragma unroll
    for (int r = 0; r < R; ++r)
      wv[r][s] = (v < vecs && row0 + r < N) ? __ldg(reinterpret_cast<const uint4*>(w + (size_t)(row0 + r) * K) + v)
                                            : make_uint4(0, 0, 0, 0);
  }
#pragma unroll
  for (int s = 0; s < VPT; ++s) {
    const int v = threadIdx.x + s * THREADS;
#pragma unroll
    for (int m = 0; m < MT; ++m)
      xv[m][s] = (v < vecs && m < M) ? __ldcg(reinterpret_cast<const uint4*>(x + (size_t)m * K) + v)
                                     : make_uint4(0, 0, 0, 0);
  }
  float acc[R][MT];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) acc[r][m] = 0.f;
#pragma unroll
  for (int s = 0; s < VPT; ++s)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const __nv_bfloat162* a = reinterpret_cast<const __nv_bfloat162*>(&wv[r][s]);
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        const __nv_bfloat162* b = reinterpret_cast<const __nv_bfloat162*>(&xv[m][s]);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 fa = __bfloat1622float2(a[i]), fb = __bfloat1622float2(b[i]);
          acc[r][m] = fmaf(fa.x, fb.x, acc[r][m]);
          acc[r][m] = fmaf(fa.y, fb.y, acc[r][m]);
        }
      }
    }
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      float v = acc[r][m];
#pragma unroll
      for (int o = 16; o; o >>= 1) v += __shfl_xor_sync(~0u, v, o);
      if (lane == 0) red[warp][r * MT + m] = v;
    }
  __syncthreads();
  if (threadIdx.x < R * MT) {
    const int r = threadIdx.x / MT, m = threadIdx.x % MT;
    if (row0 + r < N && m < M) {
      float t = 0.f;
#pragma unroll
      for (int i = 0; i < WARPS; ++i) t += red[i][threadIdx.x];
      if (bias) t += __bfloat162float(bias[row0 + r]);
      out[(size_t)m * N + row0 + r] = t;
    }
  }
}

#define GEMV(name, R, MT, VPT, T)                                                                                  \
  extern "C" __global__ void __launch_bounds__(T) name(const __nv_bfloat16* x, const __nv_bfloat16* w,           \
                                                       const __nv_bfloat16* bias, float* out, int M, int N, int K) { \
    gemv<R, MT, VPT, T>(x, w, bias, out, M, N, K);                                                                 \
  }
GEMV(g_r1_m1_v3_t128, 1, 1, 3, 128)
GEMV(g_r1_m2_v3_t128, 1, 2, 3, 128)
GEMV(g_r1_m4_v3_t128, 1, 4, 3, 128)
GEMV(g_r1_m8_v3_t128, 1, 8, 3, 128)
GEMV(g_r1_m1_v2_t192, 1, 1, 2, 192)
GEMV(g_r1_m8_v2_t192, 1, 8, 2, 192)
GEMV(g_r1_m1_v4_t256, 1, 1, 4, 256)
GEMV(g_r1_m8_v4_t256, 1, 8, 4, 256)
GEMV(g_r2_m1_v4_t256, 2, 1, 4, 256)
GEMV(g_r2_m8_v4_t256, 2, 8, 4, 256)
GEMV(g_r2_m1_v2_t192, 2, 1, 2, 192)
