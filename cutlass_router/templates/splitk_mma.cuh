// cutlass-router: split-K router GEMM for small M (decode), sm_90a.
//
//   out[m, n] = sum_k x[m, k] * w[n, k] + bias[n]      (fp32 accumulation)
//
// Why this shape of kernel: at decode M the router GEMM is latency-bound (W is 0.2-0.7 MB, the FLOPs are
// nothing), so the win is spreading W over many SMs and keeping the reduction cheap.
//   * swap-AB: the experts sit on the M side of mma.sync m16n8k16 (16 experts x 8 tokens per MMA), so M = 1
//     wastes 7/8 of the N side instead of 15/16 of the M side.
//   * split-K twice: the warps of a CTA own disjoint K slices, and the CTAs of a thread block cluster own
//     disjoint K ranges; partial sums travel through distributed shared memory (st.async, counted on the
//     owner's mbarrier), with no second launch, no global workspace and no cluster barrier after the K loop.
//   * fragments straight from global memory: the dot product does not care how K is ordered, so each thread
//     loads 16-byte vectors and the same permutation of K is applied to W and x. No shared-memory staging,
//     no ldmatrix, every load in flight before the first MMA.
//   * programmatic dependent launch: x is read only after griddepcontrol.wait. W and the bias do not depend on
//     the previous kernel and are loaded before the wait in the source, but ptxas schedules most W loads after
//     it, and W loads forced ahead of it, or W prefetched into L2 there, measured slower (notes/PERF.md,
//     seventeenth session). Without the PDL launch attribute the wait returns at once, so one binary serves
//     both launch modes.
// The K split is fixed by the template arguments and K alone, never by M: a row's result does not depend on
// how many other rows are in the batch for a given kernel.
#pragma once

#include <cstdint>
#include <cuda_bf16.h>
#include <cute/arch/cluster_sm90.hpp>
#include <cute/arch/mma_sm80.hpp>

namespace cutlass_router {

// Kernel parameters, passed by value. The launcher packs this layout (see launch.py: SPLITK_PARAMS).
struct SplitKParams {
  const __nv_bfloat16* x;     // [M, K], row stride ldx
  const __nv_bfloat16* w;     // [N, K], row stride ldw
  const __nv_bfloat16* bias;  // [N] or nullptr
  void* out;                  // [M, N], row stride ldo; bf16 or fp32 per the kernel
  long long ldx, ldw, ldo;    // in elements
  int M, N, K, reserved;
};

namespace detail {

// W (and the bias) are never written by the kernel before this one, so they may come through the read-only path
// and be issued before griddepcontrol.wait. A volatile asm keeps NVVM from moving them across the (volatile)
// wait; ptxas still schedules most W loads below it (SASS: ACQBULK first), which measured faster than keeping
// them above it (notes/PERF.md, seventeenth session).
__device__ __forceinline__ uint4 load_16B(const __nv_bfloat16* p, bool pred) {
  uint4 v = make_uint4(0u, 0u, 0u, 0u);
  if (pred)
    asm volatile("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
  return v;
}

// x may be written by the previous kernel while this one already runs (PDL). ld.global.nc (__ldg) promises the
// data is constant for the kernel's whole life, which lets the compiler hoist it above griddepcontrol.wait: it did
// (every x load of the first batch sat before the wait in the SASS, and a producer that triggers its dependents
// early then fed them stale x). A volatile asm load with a memory clobber stays after the wait, and .cg reads L2,
// where the previous kernel's writes are once the wait returns.
__device__ __forceinline__ uint4 load_16B_after_wait(const __nv_bfloat16* p, bool pred) {
  uint4 v = make_uint4(0u, 0u, 0u, 0u);
  if (pred)
    asm volatile("ld.global.cg.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Store 16 bytes into CTA `rank`'s shared memory and count them on that CTA's mbarrier (complete_tx): one
// message carries data and signal, so no cluster-wide barrier is needed after the partial sums are sent.
__device__ __forceinline__ void st_async_v4(float* local_addr, uint64_t* local_bar, uint32_t rank, float4 v) {
  const uint32_t addr = cute::set_block_rank(smem_addr(local_addr), rank);
  const uint32_t bar = cute::set_block_rank(smem_addr(local_bar), rank);
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.f32 [%0], {%1, %2, %3, %4}, [%5];\n"
               :: "r"(addr), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w), "r"(bar) : "memory");
}

// Wait until the mbarrier at shared address `bar` completes phase `parity`: at cluster scope where other CTAs'
// st.async stores arrive on it (their data must be visible after the wait), at CTA scope where this CTA's own TMA
// copies complete it.
template <bool kClusterScope>
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  while (!done) {
    if constexpr (kClusterScope)
      asm volatile("{\n .reg .pred p;\n"
                   " mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
                   " selp.u32 %0, 1, 0, p;\n}\n"
                   : "=r"(done) : "r"(bar), "r"(parity) : "memory");
    else
      asm volatile("{\n .reg .pred p;\n"
                   " mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                   " selp.u32 %0, 1, 0, p;\n}\n"
                   : "=r"(done) : "r"(bar), "r"(parity) : "memory");
  }
}

template <typename T> __device__ __forceinline__ T from_float(float v);
template <> __device__ __forceinline__ float from_float<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

}  // namespace detail

struct NoPrologue {
  __device__ __forceinline__ void operator()() const {}
};

// The split-K main loop, shared by splitk_mma and the route kernels (route.cuh): this warp's partial sums of one
// output tile, 16 x kExpTiles experts from n0 by 8 x kTokTiles tokens from m0, over K slice `slice` of kSlices.
//   p:        any parameter struct with fields x, w (bf16 pointers), ldx, ldw (long long), M, N, K (int)
//   slice:    the slice covers the 64-wide K chunks [chunks * slice / kSlices, chunks * (slice + 1) / kSlices),
//             fixed by K and kSlices alone, never by M
//   out:      the mma.sync m16n8k16 C fragment (swap-AB: the experts are the MMA's M side): lane 4g + q holds
//             experts n0 + 16e + g (j = 0, 1) and n0 + 16e + g + 8 (j = 2, 3), tokens m0 + 8t + 2q + (j & 1)
//   prologue: runs once, after the pointers and accumulators are set up and before the first load: the place
//             for the caller's loads that do not depend on the previous kernel (bias), so they overlap W's
//   kUnroll:  64-wide K chunks loaded per warp before its MMAs run
//   kAccSets: 0: two accumulator sets when registers allow (below); 1: one set at any unroll, and no MMA past the
//             slice's last chunk: unroll 1's arithmetic, bit for bit, with kUnroll chunks' loads in flight (the
//             batch-invariant order at decode sizes, where a slice's chunks loaded one at a time cost a round trip each)
// Every thread returns from it after its griddepcontrol.wait: from then on it may read what the previous kernel
// wrote, and write outputs.
template <int kSlices, int kExpTiles, int kTokTiles, int kUnroll, int kAccSets = 0, typename Params,
          typename Prologue = NoPrologue>
__device__ __forceinline__ void splitk_mainloop(const Params& p, int n0, int m0, int slice,
                                                float (&out)[kExpTiles][kTokTiles][4],
                                                Prologue&& prologue = Prologue{}) {
  const int lane = threadIdx.x & 31;
  const int g = lane >> 2;  // MMA group: expert row g and g + 8, token column g
  const int q = lane & 3;   // thread in group: which 16 of a 64-wide K chunk

  // K range of this warp, in 64-wide chunks.
  const int chunks = (p.K + 63) >> 6;
  const int c_begin = (chunks * slice) / kSlices;
  const int c_end = (chunks * (slice + 1)) / kSlices;

  // Rows past N or M are clamped to the last valid row: they are read but never stored.
  const __nv_bfloat16* wrow[kExpTiles][2];
#pragma unroll
  for (int e = 0; e < kExpTiles; ++e)
#pragma unroll
    for (int h = 0; h < 2; ++h)
      wrow[e][h] = p.w + static_cast<long long>(min(n0 + 16 * e + g + 8 * h, p.N - 1)) * p.ldw + 8 * q;
  const __nv_bfloat16* xrow[kTokTiles];
#pragma unroll
  for (int t = 0; t < kTokTiles; ++t)
    xrow[t] = p.x + static_cast<long long>(min(m0 + 8 * t + g, p.M - 1)) * p.ldx + 8 * q;

  // Two accumulator sets halve the dependent MMA chain when registers allow.
  static_assert(kAccSets == 0 || kAccSets == 1, "kAccSets: 0 (automatic) or 1");
  constexpr int kAcc = kAccSets ? kAccSets : (kExpTiles * kTokTiles <= 2 && kUnroll >= 2) ? 2 : 1;
  float acc[kAcc][kExpTiles][kTokTiles][4];
#pragma unroll
  for (int a = 0; a < kAcc; ++a)
#pragma unroll
    for (int e = 0; e < kExpTiles; ++e)
#pragma unroll
      for (int t = 0; t < kTokTiles; ++t)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[a][e][t][j] = 0.f;

  prologue();

  bool first = true;
  for (int c0 = c_begin; c0 < c_end; c0 += kUnroll) {
    // Thread q owns elements [8q, 8q+8) and [32+8q, 32+8q+8) of each chunk, in W and x alike.
    uint4 wv[kUnroll][kExpTiles][2][2];
    uint4 xv[kUnroll][kTokTiles][2];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int k = (c0 + u) * 64 + 8 * q;
      const bool in_range = c0 + u < c_end;
#pragma unroll
      for (int e = 0; e < kExpTiles; ++e)
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
          for (int v = 0; v < 2; ++v)
            wv[u][e][h][v] = detail::load_16B(wrow[e][h] + (c0 + u) * 64 + 32 * v,
                                              in_range && k + 32 * v + 8 <= p.K);
    }
    if (first) {
      asm volatile("griddepcontrol.wait;" ::: "memory");  // x may come from the previous kernel
      first = false;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int k = (c0 + u) * 64 + 8 * q;
      const bool in_range = c0 + u < c_end;
#pragma unroll
      for (int t = 0; t < kTokTiles; ++t)
#pragma unroll
        for (int v = 0; v < 2; ++v)
          xv[u][t][v] = detail::load_16B_after_wait(xrow[t] + (c0 + u) * 64 + 32 * v,
                                                    in_range && k + 32 * v + 8 <= p.K);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      // Unroll 1 never runs a chunk past the slice: an MMA of zeros would turn a -0.0 partial into +0.0.
      if (kAccSets == 1 && u > 0 && c0 + u >= c_end) break;
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        const int v = s >> 1, lo = 2 * (s & 1), hi = lo + 1;  // MMA step s uses words lo, hi of vector v
        float (&c)[kExpTiles][kTokTiles][4] = acc[u % kAcc];
#pragma unroll
        for (int e = 0; e < kExpTiles; ++e)
#pragma unroll
          for (int t = 0; t < kTokTiles; ++t)
            cute::SM80_16x8x16_F32BF16BF16F32_TN::fma(
                c[e][t][0], c[e][t][1], c[e][t][2], c[e][t][3],
                detail::word(wv[u][e][0][v], lo), detail::word(wv[u][e][1][v], lo),
                detail::word(wv[u][e][0][v], hi), detail::word(wv[u][e][1][v], hi),
                detail::word(xv[u][t][v], lo), detail::word(xv[u][t][v], hi),
                c[e][t][0], c[e][t][1], c[e][t][2], c[e][t][3]);
      }
    }
  }
#pragma unroll
  for (int a = 1; a < kAcc; ++a)
#pragma unroll
    for (int e = 0; e < kExpTiles; ++e)
#pragma unroll
      for (int t = 0; t < kTokTiles; ++t)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[0][e][t][j] += acc[a][e][t][j];
  if (first) asm volatile("griddepcontrol.wait;" ::: "memory");  // a warp with no K still stores later
#pragma unroll
  for (int e = 0; e < kExpTiles; ++e)
#pragma unroll
    for (int t = 0; t < kTokTiles; ++t)
#pragma unroll
      for (int j = 0; j < 4; ++j) out[e][t][j] = acc[0][e][t][j];
}

// kWarps:    warps per CTA, each owning a K slice
// kCluster:  CTAs per cluster, each owning a K range (1 = no cluster)
// kExpTiles: 16-expert MMA tiles per CTA
// kTokTiles: 8-token MMA tiles per CTA
// kUnroll:   64-wide K chunks loaded per warp before its MMAs run
// kAccSets:  splitk_mainloop's (0: automatic; 1: unroll 1's arithmetic with kUnroll chunks in flight)
template <int kWarps, int kCluster, int kExpTiles, int kTokTiles, int kUnroll, typename OutT, int kAccSets = 0>
__device__ __forceinline__ void splitk_mma(const SplitKParams& p) {
  constexpr int kSlices = kWarps * kCluster;           // K slices per output tile
  constexpr int kOwnLanes = (32 + kCluster - 1) / kCluster;
  // Receive buffer of the CTA that owns an output fragment: one float4 per (slice, tile, lane it owns).
  __shared__ float4 recv[kSlices][kExpTiles][kTokTiles][kOwnLanes];
  __shared__ alignas(8) uint64_t recv_bar;  // counts the bytes of partial sums that peers send here

  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int rank = kCluster > 1 ? static_cast<int>(cute::block_rank_in_cluster()) : 0;
  const int n0 = (blockIdx.x / kCluster) * (16 * kExpTiles);
  const int m0 = blockIdx.y * (8 * kTokTiles);

  if constexpr (kCluster > 1) {
    if (threadIdx.x == 0) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" :: "r"(detail::smem_addr(&recv_bar)) : "memory");
      asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    cute::cluster_arrive_relaxed();  // waited on before the first remote store: peers' smem and mbarrier exist
  }
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");

  // This warp's partial sums over its K slice (x loads after griddepcontrol.wait).
  const int slice = rank * kWarps + warp;
  float acc[kExpTiles][kTokTiles][4];
  float bias_pre[2] = {0.f, 0.f};
  constexpr int kOwned = kExpTiles * kTokTiles * kOwnLanes;
  splitk_mainloop<kSlices, kExpTiles, kTokTiles, kUnroll, kAccSets>(p, n0, m0, slice, acc, [&] {
    // Bias does not depend on the previous kernel either: fetch the owner's first fragment rows now, so no
    // global load is left after the reduction.
    if (p.bias != nullptr && static_cast<int>(threadIdx.x) < kOwned) {
      const int e = threadIdx.x / (kTokTiles * kOwnLanes);
      const int src_lane = (threadIdx.x % kOwnLanes) * kCluster + rank;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int n = n0 + 16 * e + (src_lane >> 2) + 8 * h;
        if (src_lane < 32 && n < p.N) bias_pre[h] = __bfloat162float(p.bias[n]);
      }
    }
  });

  // Push this warp's partial tile to the CTA that owns each lane's fragment (lane % kCluster).
  const int owner = lane % kCluster;
  const int own_idx = lane / kCluster;
  if constexpr (kCluster > 1) {
    cute::cluster_wait();
    if (threadIdx.x == 0) {
      // Every slice sends one float4 per tile for each lane this CTA owns.
      const uint32_t bytes = kSlices * ((32 - rank + kCluster - 1) / kCluster) * kExpTiles * kTokTiles * 16;
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n"
                   :: "r"(detail::smem_addr(&recv_bar)), "r"(bytes) : "memory");
    }
  }
#pragma unroll
  for (int e = 0; e < kExpTiles; ++e)
#pragma unroll
    for (int t = 0; t < kTokTiles; ++t) {
      const float4 v = make_float4(acc[e][t][0], acc[e][t][1], acc[e][t][2], acc[e][t][3]);
      if constexpr (kCluster > 1)
        detail::st_async_v4(&recv[slice][e][t][own_idx].x, &recv_bar, owner, v);
      else
        recv[slice][e][t][own_idx] = v;
    }
  // Every thread waits, so this CTA's shared memory outlives the stores still flying into it.
  if constexpr (kCluster > 1) detail::mbarrier_wait<true>(detail::smem_addr(&recv_bar), 0); else __syncthreads();

  // Reduce the fragments this CTA owns over all K slices in a fixed order, add bias, store.
  for (int i = threadIdx.x; i < kOwned; i += kWarps * 32) {
    const int e = i / (kTokTiles * kOwnLanes);
    const int t = (i / kOwnLanes) % kTokTiles;
    const int own = i % kOwnLanes;
    const int src_lane = own * kCluster + rank;
    if (src_lane >= 32) continue;
    float4 s = recv[0][e][t][own];
#pragma unroll
    for (int sl = 1; sl < kSlices; ++sl) {
      const float4 r = recv[sl][e][t][own];
      s.x += r.x; s.y += r.y; s.z += r.z; s.w += r.w;
    }
    const float vals[4] = {s.x, s.y, s.z, s.w};
    const int sg = src_lane >> 2, sq = src_lane & 3;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + 16 * e + sg + 8 * (j >> 1);
      const int m = m0 + 8 * t + 2 * sq + (j & 1);
      if (n < p.N && m < p.M) {
        float r = vals[j];
        if (p.bias != nullptr)
          r += i == static_cast<int>(threadIdx.x) ? bias_pre[j >> 1] : __bfloat162float(p.bias[n]);
        static_cast<OutT*>(p.out)[static_cast<long long>(m) * p.ldo + n] = detail::from_float<OutT>(r);
      }
    }
  }
}

namespace detail {

// A TMA tensor map (CUtensorMap: 128 opaque bytes, 64-byte aligned), encoded on the host per launch.
struct alignas(64) TmaMap {
  uint64_t opaque[16];
};

// One box of a 2-D tensor map (coordinates innermost first: K, then rows) into this CTA's shared memory, counted on
// the mbarrier at `bar`. Elements past the tensor's edges (K's tail, rows past N or M) arrive as zeros.
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const TmaMap* map, int k, int row, uint32_t bar) {
  asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], "
               "[%4];\n" :: "r"(dst), "l"(reinterpret_cast<uint64_t>(map)), "r"(k), "r"(row), "r"(bar) : "memory");
}

__device__ __forceinline__ void mbarrier_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(bar), "r"(count) : "memory");
}

__device__ __forceinline__ void mbarrier_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" :: "r"(bar), "r"(bytes) : "memory");
}

__device__ __forceinline__ uint4 ld_shared_16B(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}

// A 64-wide K chunk of one row in shared memory, as TMA's 128-byte swizzle writes it (regions 1024-byte aligned): 16-byte
// unit u of row r at r * 128 + 16 (u ^ (r & 7)).
__device__ __forceinline__ uint32_t swizzled(int row, int unit) {
  return static_cast<uint32_t>(row * 128 + ((unit ^ (row & 7)) << 4));
}

// The row of an 8-row group of the staged tile that MMA row (or column) g takes: rows 0 4 1 5 2 6 3 7. A warp's 16-byte
// fragment loads read rows g, units q + 4v (lane 4g + q); a quarter-warp phase covers g = 2p, 2p + 1, which this puts on
// rows p and p + 4, whose swizzles differ in bit 2: opposite halves of the 32 banks, no conflicts. Which expert (token)
// sits in which MMA row (column) does not change its sum: each output element is its own dot product.
__device__ __forceinline__ int mma_row(int g) {
  return ((g & 1) << 2) | (g >> 1);
}

}  // namespace detail

// Batch-invariant GEMM for large M: the K reduction order of a split-K kernel, without splitting K.
// splitk_mma<W, C, E, T, U> sums, for each output element, kSlices = W * C partial sums in the order 0..kSlices-1;
// partial s is chunk range [chunks * s / kSlices, chunks * (s + 1) / kSlices) accumulated in chunk order, into
// kAcc accumulator sets (relative chunk j into set (j % kBaseUnroll) % kAcc, the sets then added: set 0 + set 1),
// each MMA the same m16n8k16 step on the same 16 K values. splitk_tiled reproduces exactly that sequence of fp32
// operations with no partials crossing warps: every chunk in order, a partial finished (and added to the total) at
// each slice boundary, empty slices included (+0, as the split kernel adds them). So a row's bits equal the split
// kernel's for every M, while the grid grows with M, not with the slices: the split kernels serve the batch-invariant
// mode at decode sizes, this one at prefill sizes (dispatch.choose_invariant).
// The CTA is kWarpsE x kWarpsT warps over a 16 kWE kWarpsE experts x 8 kWT kWarpsT tokens tile whose W and x chunks
// are staged through shared memory (TMA boxes, kStages - 1 chunks in flight), so x is read once per expert tile. Each
// warp owns kWE x kWT MMA tiles; every chunk's MMAs take the same 16 K values per step as the split kernel's (thread
// q's 16-byte units q and q + 4, words lo/hi per step), in the same order, into the same accumulator set.
//   kSlices, kBaseUnroll, kAcc: the split kernel's W * C, U and accumulator sets (kAcc = 2 iff its E * T <= 2 and
//                               U >= 2: splitk_mainloop)
// kGroups: warp groups of kWarpsE x kWarpsT warps, each over the same tile and its own contiguous share of the slices
// (its own stages and named barrier), so the chunks a CTA walks one after another are chunks / kGroups. Group 0 adds
// its slices into the total as above; the others store each slice's partial in shared memory, which group 0 then adds
// in slice order: the same sequence of fp32 operations. Without groups the loop (one chunk per barrier) costs ~400 ns a
// chunk, and a small grid's time is chunks x that.
// Staging by TMA (one box of W and one of x per chunk, issued by one thread) instead of 16-byte cp.async per thread took
// up to half the time off at prefill sizes on an H200 (notes/PERF.md, seventh session); MMA rows take the staged rows in the order
// detail::mma_row gives, so that the 128-byte swizzle TMA writes leaves the fragment loads free of bank conflicts.
// Parameters of the tiled kernels: SplitKParams, then tensor maps of W (box 64 x kRowsE) and x (box 64 x kRowsT), bf16,
// 128-byte swizzle (families/splitk_mma.py packs this layout: TILED_MAPS, TILED_PARAMS_SIZE).
struct SplitKTiledParams {
  SplitKParams p;
  detail::TmaMap w_map;  // at byte 128
  detail::TmaMap x_map;  // at byte 256
};

template <int kSlices, int kBaseUnroll, int kAcc, int kWarpsE, int kWarpsT, int kWE, int kWT, int kStages,
          int kGroups, typename OutT>
__device__ __forceinline__ void splitk_tiled(const SplitKTiledParams& tp) {
  const SplitKParams& p = tp.p;
  static_assert(kAcc == 1 || kAcc == 2, "one or two accumulator sets");
  static_assert(kStages >= 2, "a pipeline needs two stages");
  static_assert(kGroups >= 1 && kSlices % kGroups == 0 && kGroups <= 15, "groups share the slices evenly");
  constexpr int kRowsE = 16 * kWE * kWarpsE;  // experts of the CTA tile
  constexpr int kRowsT = 8 * kWT * kWarpsT;   // tokens of the CTA tile
  constexpr int kThreads = 32 * kWarpsE * kWarpsT;  // per group
  constexpr int kStageBytes = (kRowsE + kRowsT) * 128;  // W's rows, then x's: both regions 1024-byte aligned
  constexpr int kGroupSlices = kSlices / kGroups;
  constexpr int kFrag = kWE * kWT * 4;        // fp32 values a thread holds per slice
  extern __shared__ __align__(1024) char smem[];

  const int lane = threadIdx.x & 31;
  const int group = static_cast<int>(threadIdx.x) / kThreads;
  const int tid = static_cast<int>(threadIdx.x) % kThreads;  // thread within the group
  const int warp = tid >> 5;
  const int g = lane >> 2, q = lane & 3;
  const int we = warp % kWarpsE, wt = warp / kWarpsE;
  const int n0 = blockIdx.x * kRowsE;
  const int m0 = blockIdx.y * kRowsT;
  const int chunks = (p.K + 63) >> 6;
  // TMA's swizzle is a function of the address bits: the stages must start at a 1024-byte boundary. A kernel without
  // static shared memory gets its dynamic shared memory there (CUTLASS's swizzled TMA kernels rely on the same); a base
  // anywhere else would permute the fragments silently, so it stops the kernel instead.
  if (detail::smem_addr(smem) & 1023) __trap();
  const uint32_t smem0 = detail::smem_addr(smem) + group * kStages * kStageBytes;
  // Partials of the slices of groups 1.., [slice - kGroupSlices][value][thread within group]: lanes adjacent.
  float* const parts = reinterpret_cast<float*>(smem + kGroups * kStages * kStageBytes);
  constexpr int kPartFloats = kGroups > 1 ? (kSlices - kGroupSlices) * kFrag * kThreads : 0;
  // One mbarrier per group and stage, after the partials.
  const uint32_t bars = detail::smem_addr(smem) + kGroups * kStages * kStageBytes + kPartFloats * 4 + group * kStages * 8;
  auto part = [&](int s, int e, int t, int j) -> float& {  // slice s's value (e, t, j) of this thread
    return parts[((s - kGroupSlices) * kFrag + (e * kWT + t) * 4 + j) * kThreads + tid];
  };
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");

  // This group's slices and chunks.
  const int s_first = group * kGroupSlices, s_end = s_first + kGroupSlices;
  const int c_first = chunks * s_first / kSlices, c_end = chunks * s_end / kSlices;
  const int n_chunks = c_end - c_first;

  // Chunk c into stage st: thread 0 of the group expects the stage's bytes on its mbarrier and loads W's box (w_part)
  // and x's (x_part). Rows past N or M and K's tail arrive as zeros: the MMAs past K add products of zeros, as the split
  // kernel's zero-filled loads do, and rows past N or M are never stored.
  auto load = [&](int c, int st, bool w_part, bool x_part) {
    if (tid != 0) return;
    const uint32_t bar = bars + st * 8, to = smem0 + st * kStageBytes;
    if (w_part) {
      detail::mbarrier_expect_tx(bar, kStageBytes);
      detail::tma_load_2d(to, &tp.w_map, 64 * c, n0, bar);
    }
    if (x_part) detail::tma_load_2d(to + kRowsE * 128, &tp.x_map, 64 * c, m0, bar);
  };
  // The group's own barrier (id 0 is __syncthreads).
  auto group_sync = [&] {
    if constexpr (kGroups == 1) __syncthreads();
    else asm volatile("bar.sync %0, %1;\n" :: "r"(group + 1), "n"(kThreads) : "memory");
  };

  if (tid == 0) {
#pragma unroll
    for (int s = 0; s < kStages; ++s) detail::mbarrier_init(bars + s * 8, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");  // visible to the copy engine
  }
  group_sync();
  // W does not depend on the previous kernel: the first stages' W before griddepcontrol.wait, x after it.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s)
    if (s < n_chunks) load(c_first + s, s, true, false);
  asm volatile("griddepcontrol.wait;" ::: "memory");
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s)
    if (s < n_chunks) load(c_first + s, s, false, true);

  float acc[kAcc][kWE][kWT][4];
  float tot[kWE][kWT][4];
  // f(e, t, j) for every value a thread holds: MMA tile (e, t), C fragment element j.
  auto for_each_value = [&](auto&& f) {
#pragma unroll
    for (int e = 0; e < kWE; ++e)
#pragma unroll
      for (int t = 0; t < kWT; ++t)
#pragma unroll
        for (int j = 0; j < 4; ++j) f(e, t, j);
  };
  auto zero = [&](float (&a)[kWE][kWT][4]) { for_each_value([&](int e, int t, int j) { a[e][t][j] = 0.f; }); };
#pragma unroll
  for (int a = 0; a < kAcc; ++a) zero(acc[a]);
  // One 64-wide chunk: wait for its stage, refill the stage the previous chunk used, then its MMAs into
  // accumulator set `set` (16 K values per step, the split kernel's words and order).
  int c = c_first;
  int stage = 0;        // (c - c_first) % kStages
  uint32_t parity = 0;  // ((c - c_first) / kStages) & 1: the phase of the stage's mbarrier that chunk c completes
  const int gr = detail::mma_row(g);
  auto step = [&](int set) {
    detail::mbarrier_wait<false>(bars + stage * 8, parity);  // chunk c is in its stage
    group_sync();  // and every thread of the group is done with the previous chunk's stage: refill it
    {
      const int cn = c + kStages - 1;
      if (cn < c_end) load(cn, stage == 0 ? kStages - 1 : stage - 1, true, true);
    }
    const uint32_t wbase = smem0 + stage * kStageBytes;
    if (stage == kStages - 1) {
      stage = 0;
      parity ^= 1;
    } else {
      ++stage;
    }
    ++c;
    const uint32_t xbase = wbase + kRowsE * 128;
#pragma unroll
    for (int v = 0; v < 2; ++v) {
      uint4 wv[kWE][2], xv[kWT];
#pragma unroll
      for (int e = 0; e < kWE; ++e)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          wv[e][h] = detail::ld_shared_16B(wbase + detail::swizzled(16 * (we * kWE + e) + 8 * h + gr, q + 4 * v));
#pragma unroll
      for (int t = 0; t < kWT; ++t)
        xv[t] = detail::ld_shared_16B(xbase + detail::swizzled(8 * (wt * kWT + t) + gr, q + 4 * v));
#pragma unroll
      for (int a = 0; a < kAcc; ++a) {  // a compile-time index (a run-time one would put acc in local memory)
        if (a != set) continue;
#pragma unroll
        for (int s2 = 0; s2 < 2; ++s2) {
          const int lo = 2 * s2, hi = lo + 1;  // MMA step 2v + s2 uses words lo, hi of vector v
#pragma unroll
          for (int e = 0; e < kWE; ++e)
#pragma unroll
            for (int t = 0; t < kWT; ++t)
              cute::SM80_16x8x16_F32BF16BF16F32_TN::fma(
                  acc[a][e][t][0], acc[a][e][t][1], acc[a][e][t][2], acc[a][e][t][3],
                  detail::word(wv[e][0], lo), detail::word(wv[e][1], lo),
                  detail::word(wv[e][0], hi), detail::word(wv[e][1], hi),
                  detail::word(xv[t], lo), detail::word(xv[t], hi),
                  acc[a][e][t][0], acc[a][e][t][1], acc[a][e][t][2], acc[a][e][t][3]);
        }
      }
    }
  };
  // Slice s's partial into acc: its chunks in order, then the split kernel's padding (below). A slice without chunks
  // leaves acc at +0, as the split kernel adds an empty slice.
  auto run_slice = [&](int s) {
#pragma unroll
    for (int a = 0; a < kAcc; ++a) zero(acc[a]);
    const int begin = chunks * s / kSlices, len = chunks * (s + 1) / kSlices - begin;  // chunks * kSlices < 2^31
    if constexpr (kAcc == 1) {
#pragma unroll 1
      for (int j = 0; j < len; ++j) step(0);
    } else {
#pragma unroll 1
      for (int j = 0; j < len; ++j) step((j % kBaseUnroll) % kAcc);
    }
    // The split kernel's last batch of a slice runs kBaseUnroll chunks whatever is left: its MMAs past the slice add
    // products of zeros (+0), which turns a -0 accumulator into +0. The same, here.
    if (kBaseUnroll > 1 && len % kBaseUnroll != 0) {
#pragma unroll 1
      for (int j = len; j % kBaseUnroll != 0; ++j) {
        const int set = (j % kBaseUnroll) % kAcc;
#pragma unroll
        for (int a = 0; a < kAcc; ++a)  // a compile-time index (a run-time one would put acc in local memory)
          if (a == set) for_each_value([&](int e, int t, int k) { acc[a][e][t][k] = __fadd_rn(acc[a][e][t][k], 0.f); });
      }
    }
  };
  // The slices one after another: an outer loop over slices and an inner one over their chunks keeps the slice
  // bookkeeping out of the chunk loop (closing a slice inside it cost ~100 register moves per chunk in SASS).
  auto slice_sum = [&](int e, int t, int j) {
    return kAcc == 2 ? acc[0][e][t][j] + acc[kAcc - 1][e][t][j] : acc[0][e][t][j];
  };
  if (kGroups == 1 || group == 0) {  // slice 0 first: the total starts as its partial (not +0 + it: -0 stays -0)
    run_slice(0);
    for_each_value([&](int e, int t, int j) { tot[e][t][j] = slice_sum(e, t, j); });
#pragma unroll 1
    for (int s = 1; s < s_end; ++s) {
      run_slice(s);
      for_each_value([&](int e, int t, int j) { tot[e][t][j] += slice_sum(e, t, j); });
    }
  } else {
#pragma unroll 1
    for (int s = s_first; s < s_end; ++s) {
      run_slice(s);
      for_each_value([&](int e, int t, int j) { part(s, e, t, j) = slice_sum(e, t, j); });
    }
  }

  if constexpr (kGroups > 1) {
    __syncthreads();  // every group's partials are in shared memory
    if (group != 0) return;
#pragma unroll 1
    for (int s = kGroupSlices; s < kSlices; ++s)
      for_each_value([&](int e, int t, int j) { tot[e][t][j] += part(s, e, t, j); });
  }

  for_each_value([&](int e, int t, int j) {
    const int n = n0 + 16 * (we * kWE + e) + gr + 8 * (j >> 1);            // MMA rows g, g + 8
    const int m = m0 + 8 * (wt * kWT + t) + detail::mma_row(2 * q + (j & 1));  // MMA column 2q + (j & 1)
    if (n < p.N && m < p.M) {
      float r = tot[e][t][j];
      if (p.bias != nullptr) r += __bfloat162float(p.bias[n]);
      static_cast<OutT*>(p.out)[static_cast<long long>(m) * p.ldo + n] = detail::from_float<OutT>(r);
    }
  });
}

}  // namespace cutlass_router
