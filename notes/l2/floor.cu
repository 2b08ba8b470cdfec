// Micro kernels for the decode-loop floor (notes/l2/floor.py): what a cold read of W, a cluster exchange and cold
// code each cost where the router runs. Not shipped.
#include <cuda_bf16.h>
#include <cooperative_groups.h>
namespace cg = cooperative_groups;

extern "C" __global__ void k_empty(const __nv_bfloat16* w, const __nv_bfloat16* x, float* out, int per) {
  if (per < 0) out[0] = 0.f;
}

// Each CTA reads its `per` elements of W (16-byte loads) and as many of x (wrapping over K), one block sum, one store.
template <int C>
__device__ void touch(const __nv_bfloat16* w, const __nv_bfloat16* x, float* out, int per, int K) {
  __shared__ float part[32];
  __shared__ float cl[16];
  const int cta = blockIdx.x;
  float acc = 0.f;
  const int vecs = per / 8;
  for (int v = threadIdx.x; v < vecs; v += blockDim.x) {
    long o = (long)cta * per + v * 8;
    uint4 a = __ldg(reinterpret_cast<const uint4*>(w + o));
    uint4 b = __ldcg(reinterpret_cast<const uint4*>(x + (o % K)));
    const __nv_bfloat162* pa = reinterpret_cast<const __nv_bfloat162*>(&a);
    const __nv_bfloat162* pb = reinterpret_cast<const __nv_bfloat162*>(&b);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float2 fa = __bfloat1622float2(pa[i]), fb = __bfloat1622float2(pb[i]);
      acc += fa.x * fb.x + fa.y * fb.y;
    }
  }
#pragma unroll
  for (int s = 16; s; s >>= 1) acc += __shfl_xor_sync(~0u, acc, s);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float t = 0.f;
    for (int i = 0; i < blockDim.x / 32; ++i) t += part[i];
    if (C == 1) {
      out[cta] = t;
    } else {
      cg::cluster_group c = cg::this_cluster();
      float* lead = c.map_shared_rank(cl, 0);
      lead[c.block_rank()] = t;
    }
  }
  if (C > 1) {
    cg::cluster_group c = cg::this_cluster();
    c.sync();
    if (c.block_rank() == 0 && threadIdx.x == 0) {
      float t = 0.f;
      for (int i = 0; i < C; ++i) t += cl[i];
      out[cta / C] = t;
    }
  }
}

extern "C" __global__ void k_touch(const __nv_bfloat16* w, const __nv_bfloat16* x, float* out, int per, int K) {
  touch<1>(w, x, out, per, K);
}
extern "C" __global__ void k_touch_c8(const __nv_bfloat16* w, const __nv_bfloat16* x, float* out, int per, int K) {
  touch<8>(w, x, out, per, K);
}
extern "C" __global__ void k_touch_c16(const __nv_bfloat16* w, const __nv_bfloat16* x, float* out, int per, int K) {
  touch<16>(w, x, out, per, K);
}

// Cold code: the same 8 x REPS FFMA, straight-line (REPS*8 instructions of code) or in a rolled loop.
template <int REPS, bool kRolled>
__device__ void code(float* out, int per) {
  float v[8];
#pragma unroll
  for (int j = 0; j < 8; ++j) v[j] = threadIdx.x + j;
  if (kRolled) {
#pragma unroll 1
    for (int i = 0; i < REPS; ++i) {
      const float c = i * 0.5f;
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = fmaf(v[j], 1.0001f, c);
    }
  } else {
#pragma unroll
    for (int i = 0; i < REPS; ++i) {
#pragma unroll
      for (int j = 0; j < 8; ++j) v[j] = fmaf(v[j], 1.0001f, i * 0.5f);
    }
  }
  float s = 0.f;
#pragma unroll
  for (int j = 0; j < 8; ++j) s += v[j];
  if (s == 1234.5f || per < 0) out[0] = s;
}

extern "C" __global__ void k_straight100(const __nv_bfloat16*, const __nv_bfloat16*, float* out, int per, int) { code<100, false>(out, per); }
extern "C" __global__ void k_rolled100(const __nv_bfloat16*, const __nv_bfloat16*, float* out, int per, int) { code<100, true>(out, per); }
extern "C" __global__ void k_straight200(const __nv_bfloat16*, const __nv_bfloat16*, float* out, int per, int) { code<200, false>(out, per); }
extern "C" __global__ void k_rolled200(const __nv_bfloat16*, const __nv_bfloat16*, float* out, int per, int) { code<200, true>(out, per); }
