// Experiment (notes/l2/select_fixed.py): the select kernel for one model's choice, sizes fixed at compile time
// (route.cuh's route_select_fixed), against the library's runtime-sized kernel, both compiled from this tree.
//   nvcc -cubin -arch=sm_90a -O3 -std=c++17 --expt-relaxed-constexpr -I<cutlass>/include \
//        -I cutlass_router/templates -o notes/l2/select_fixed.cubin notes/l2/select_fixed.cu
#include "route.cuh"

using cutlass_router::kModeSigmoid;
using cutlass_router::kModeTopkSoftmax;
using cutlass_router::RouteParams;

// An entry point as families/route.py emits a select kernel's (a warp per row, at most 8 rows a CTA).
#define PROTO(name, ...)                                                                                  \
  extern "C" __global__ void __launch_bounds__(256) name(const __grid_constant__ RouteParams params) { \
    cutlass_router::__VA_ARGS__(params);                                                                \
  }

// The runtime-sized sigmoid kernel, as shipped (route_select_mode<sigmoid, 8>), from this tree's template.
PROTO(proto_sigmoid_p8, route_select_mode<kModeSigmoid, 8>)
// DeepSeek-V3: 256 experts, 8 groups, 4 kept, top 8; the rounds unrolled and rolled.
PROTO(proto_sigmoid_n256_g8_tg4_k8, route_select_fixed<kModeSigmoid, 256, 8, 4, 8>)
PROTO(proto_sigmoid_n256_g8_tg4_k8_rolled, route_select_fixed<kModeSigmoid, 256, 8, 4, 8, false>)
// gpt-oss-120b: 128 experts, top 4 of the logits, softmax over them; the rounds unrolled and rolled.
PROTO(proto_topk_softmax_p4, route_select_mode<kModeTopkSoftmax, 4>)
PROTO(proto_topk_softmax_n128_k4, route_select_fixed<kModeTopkSoftmax, 128, 1, 1, 4>)
PROTO(proto_topk_softmax_n128_k4_rolled, route_select_fixed<kModeTopkSoftmax, 128, 1, 1, 4, false>)
// gpt-oss-20b: 32 experts, top 4.
PROTO(proto_topk_softmax_p1, route_select_mode<kModeTopkSoftmax, 1>)
PROTO(proto_topk_softmax_n32_k4, route_select_fixed<kModeTopkSoftmax, 32, 1, 1, 4>)

// sigmoid_rn against the division it replaces, on every float: thread t takes the 8 bit patterns 8t .. 8t + 7
// from base; a mismatch (bits differ, unless both are NaN) counts and keeps the lowest pattern.
extern "C" __global__ void __launch_bounds__(256)
sigmoid_check(unsigned long long base, unsigned long long* bad, unsigned int* first) {
  const unsigned long long t = base + (blockIdx.x * 256ull + threadIdx.x) * 8ull;
  float v[8], s[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) v[i] = __uint_as_float(static_cast<unsigned int>(t + i));
  cutlass_router::detail::sigmoid_rn(v, s);
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const float r = 1.0f / (1.0f + expf(-v[i]));
    if (__float_as_uint(r) != __float_as_uint(s[i]) && !(isnan(r) && isnan(s[i]))) {
      atomicAdd(bad, 1ull);
      atomicMin(first, static_cast<unsigned int>(t + i));
    }
  }
}
