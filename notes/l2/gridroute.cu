// Prototype (not shipped; notes/l2/gridroute.py times it in the decode loop): route in one launch from the GEMV
// spread over the whole GPU, no cluster. Every CTA computes its kRows x kTokens logits (gemv.cuh's gemv_dot) and
// stores them to a scratch buffer in global memory; the CTA whose arrival completes the grid, counted on the
// cooperative launch's grid barrier (the driver's per-launch workspace, cooperative_groups' flip-bit protocol, so
// nothing to zero and nothing shared between launches), reads every logit back from L2 and chooses (the library's
// route_leader_tail). The others exit without waiting. The question: gpt-oss-120b's route is two launches
// because one cluster cannot hold 128 GEMV rows at the GEMV's speed; does one launch with an L2 round trip
// beat the GEMM + select kernels chained by PDL?
//
//   nvcc -cubin -arch=sm_90a -O3 -std=c++17 --expt-relaxed-constexpr -I<cutlass>/include \
//        -I cutlass_router/templates -o /tmp/gridroute.cubin notes/l2/gridroute.cu
#include <cooperative_groups.h>

#include "route.cuh"

namespace proto {
using namespace cutlass_router;

// True in every thread of the CTA whose arrival completes the grid's barrier round (one round per launch). The
// barrier word is cooperative_groups' (a cooperative launch's workspace): the grid's first CTA adds
// 0x80000000 - (G - 1), the others 1, so bit 31 flips exactly at the G-th arrival and the low bits return to 0.
// Release by thread 0 after __syncthreads publishes the CTA's stores (cooperative_groups' grid sync does the same);
// the last CTA's acquire makes every other CTA's stores visible to it.
// bar_in: a word to count on instead (a plain launch; zero-initialised once, shared by every launch given it:
// measurement only, two launches in flight on it would count together).
__device__ __forceinline__ bool last_arrival(unsigned int* bar_in) {
  __shared__ int last;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned int* bar = bar_in != nullptr ? bar_in : &cooperative_groups::details::get_grid_workspace()->barrier;
    if (reinterpret_cast<uintptr_t>(bar) < 8) __trap();  // not a cooperative launch: there is no barrier
    const unsigned int expected = gridDim.x * gridDim.y * gridDim.z;
    const bool first = blockIdx.x + blockIdx.y + blockIdx.z == 0;
    const unsigned int nb = first ? 0x80000000u - (expected - 1u) : 1u;
    unsigned int old;
    asm volatile("atom.add.acq_rel.gpu.u32 %0, [%1], %2;" : "=r"(old) : "l"(bar), "r"(nb) : "memory");
    last = ((old ^ (old + nb)) & 0x80000000u) != 0u;
  }
  __syncthreads();
  return last;
}

// grid (ceil(N / kRows), ceil(M / kTokens)), cooperative; p.logits_in: fp32 scratch [M, ldi >= N]; the last CTA
// chooses for every row, kSel rows at a time.
template <int kRows, int kTokens, int kVecs, int kThreads, int kMaxN, int kSel>
__device__ __forceinline__ void route_gemv_grid(const RouteParams& p, unsigned int* bar) {
  constexpr int kMaxP = (kMaxN + 31) / 32;
  constexpr int kOut = kRows * kTokens;
  constexpr int kWarps = kThreads / 32;
  constexpr int kSelbPerThread = (kMaxN + kThreads - 1) / kThreads;
  __shared__ float tile[kSel][kMaxN];
  __shared__ float selb_s[kMaxN];
  const int N = p.N;
  if (N > kMaxN) __trap();
  const int n0 = blockIdx.x * kRows, m0 = blockIdx.y * kTokens;
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  const int r = static_cast<int>(threadIdx.x) / kTokens, m = static_cast<int>(threadIdx.x) % kTokens;
  float bias_pre = 0.f;
  if (p.bias != nullptr && static_cast<int>(threadIdx.x) < kOut && n0 + r < N)
    bias_pre = __bfloat162float(p.bias[n0 + r]);
  float selb_pre[kSelbPerThread];
#pragma unroll
  for (int b = 0; b < kSelbPerThread; ++b) {
    const int n = static_cast<int>(threadIdx.x) + b * kThreads;
    selb_pre[b] = p.sel_bias != nullptr && n < N ? p.sel_bias[n] : 0.f;
  }
  float t = detail::gemv_dot<kRows, kTokens, kVecs, kThreads>(p, n0, m0, p.K / 8);
  if (p.bias != nullptr) t += bias_pre;
  float* scratch = static_cast<float*>(const_cast<void*>(p.logits_in));
  if (static_cast<int>(threadIdx.x) < kOut && n0 + r < N && m0 + m < p.M)
    scratch[static_cast<long long>(m0 + m) * p.ldi + n0 + r] = t;
  if (!last_arrival(bar)) return;
#pragma unroll
  for (int b = 0; b < kSelbPerThread; ++b) {
    const int n = static_cast<int>(threadIdx.x) + b * kThreads;
    if (n < kMaxN) selb_s[n] = selb_pre[b];
  }
#pragma unroll 1
  for (int s0 = 0; s0 < p.M; s0 += kSel) {
    for (int i = threadIdx.x; i < kSel * kMaxN; i += kThreads) {
      const int rr = i / kMaxN, n = i % kMaxN;
      tile[rr][n] = s0 + rr < p.M && n < N ? __ldcg(scratch + static_cast<long long>(s0 + rr) * p.ldi + n) : 0.f;
    }
    __syncthreads();
    route_leader_tail<kSel, kMaxN, kMaxP, kWarps>(p, &tile[0][0], selb_s, s0);
    __syncthreads();  // the tile is read before the next rows overwrite it
  }
}
}  // namespace proto

#define GRID(R, T, V, TH, MAXN, SEL)                                                                            \
  extern "C" __global__ void __launch_bounds__(TH, 1)                                                           \
      gr_r##R##_m##T##_v##V##_t##TH##_n##MAXN##_s##SEL(const __grid_constant__ cutlass_router::RouteParams p,   \
                                                       unsigned int* bar) {                                     \
    proto::route_gemv_grid<R, T, V, TH, MAXN, SEL>(p, bar);                                                   \
  }
GRID(2, 1, 1, 384, 128, 16)
GRID(2, 2, 1, 384, 128, 16)
GRID(1, 1, 1, 384, 128, 16)
GRID(1, 1, 1, 384, 32, 16)
GRID(1, 2, 1, 384, 32, 16)
GRID(2, 1, 1, 384, 32, 16)
