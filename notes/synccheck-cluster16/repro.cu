// Standalone reproduction: compute-sanitizer synccheck reports an illegal memory access for the st.async +
// mbarrier exchange with clusters of 16 CTAs (non-portable size) once 8 or more clusters run; without the tool, and
// with clusters of 8, it is correct. Build and run: bash notes/synccheck-cluster16/run.sh (on the GPU).
// Minimal cluster kernel: does compute-sanitizer synccheck survive clusters of 16 scheduled in waves?
#include <cooperative_groups.h>
#include <cstdio>
#include <cstdlib>
namespace cg = cooperative_groups;

__global__ void k(int* out, int variant) {
  __shared__ int s[32];
  cg::cluster_group cluster = cg::this_cluster();
  if (threadIdx.x < 32) s[threadIdx.x] = threadIdx.x;
  cluster.sync();
  if (variant == 1 && threadIdx.x == 0) {
    int* remote = cluster.map_shared_rank(s, (cluster.block_rank() + 1) % cluster.num_blocks());
    atomicAdd(remote, 1);
  }
  cluster.sync();
  if (threadIdx.x == 0) out[blockIdx.x] = s[0];
}


// The split-K exchange in miniature: st.async into peers' shared memory, counted on their mbarrier.
template <int C>
__global__ void k2(float* out) {
  __shared__ float4 recv[C][32 / C];
  __shared__ alignas(8) unsigned long long bar;
  unsigned rank;
  asm("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
  uint32_t bar_a = static_cast<uint32_t>(__cvta_generic_to_shared(&bar));
  if (threadIdx.x == 0) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" :: "r"(bar_a) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
  asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
  if (threadIdx.x == 0)
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bar_a), "r"(512) : "memory");
  if (threadIdx.x < 32) {
    int lane = threadIdx.x;
    unsigned owner = lane % C;
    uint32_t local = static_cast<uint32_t>(__cvta_generic_to_shared(&recv[rank][lane / C]));
    uint32_t raddr, rbar;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(raddr) : "r"(local), "r"(owner));
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(rbar) : "r"(bar_a), "r"(owner));
    float v = rank * 100 + lane;
    asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.f32 [%0], {%1, %2, %3, %4}, [%5];"
                 :: "r"(raddr), "f"(v), "f"(v), "f"(v), "f"(v), "r"(rbar) : "memory");
  }
  uint32_t done = 0;
  while (!done)
    asm volatile("{ .reg .pred p; mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], 0;"
                 " selp.u32 %0, 1, 0, p; }" : "=r"(done) : "r"(bar_a) : "memory");
  if (threadIdx.x < 32) out[blockIdx.x * 32 + threadIdx.x] = recv[threadIdx.x % C][threadIdx.x / C].x;
}

int main(int argc, char** argv) {
  int csize = atoi(argv[1]), nclusters = atoi(argv[2]), variant = atoi(argv[3]);
  int* out;
  cudaMalloc(&out, 4 * csize * nclusters);
  cudaFuncSetAttribute(k, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(csize * nclusters);
  cfg.blockDim = dim3(128);
  cudaLaunchAttribute a[1];
  a[0].id = cudaLaunchAttributeClusterDimension;
  a[0].val.clusterDim.x = csize;
  a[0].val.clusterDim.y = 1;
  a[0].val.clusterDim.z = 1;
  cfg.attrs = a;
  cfg.numAttrs = 1;
  int active = -1;
  cudaOccupancyMaxActiveClusters(&active, k, &cfg);
  cudaError_t e;
  float* fout;
  cudaMalloc(&fout, 4 * 32 * csize * nclusters);
  if (variant < 2) {
    e = cudaLaunchKernelEx(&cfg, k, out, variant);
  } else if (csize == 16) {
    cudaFuncSetAttribute(k2<16>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    e = cudaLaunchKernelEx(&cfg, k2<16>, fout);
  } else {
    e = cudaLaunchKernelEx(&cfg, k2<8>, fout);
  }
  cudaError_t e2 = cudaDeviceSynchronize();
  if (variant == 2 && e2 == cudaSuccess) {
    int n = 32 * csize * nclusters, bad = 0;
    float* h = (float*)malloc(4 * n);
    cudaMemcpy(h, fout, 4 * n, cudaMemcpyDeviceToHost);
    for (int b = 0; b < csize * nclusters; ++b)
      for (int t = 0; t < 32; ++t) {
        int o = b % csize;
        float want = (t % csize) * 100 + o + csize * (t / csize);
        bad += h[b * 32 + t] != want;
      }
    printf("values wrong: %d; ", bad);
  }
  printf("cluster %d x %d clusters (max active %d), variant %d: launch %s, sync %s\n", csize, nclusters, active,
         variant, cudaGetErrorString(e), cudaGetErrorString(e2));
  return e2 != cudaSuccess;
}
