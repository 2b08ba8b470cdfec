// Standalone GPU test of cutlass_router/templates/route.cuh: the fused router GEMM + selection kernel
// (route_fused) and the select-only kernel (route_select), against a CPU reference written here.
// Build and run: see README.md beside this file. Exit status 0 = PASS, 1 = FAIL, 2 = no usable GPU.
//
// What is checked, per launch:
//   * ids of every row in [0, N) and distinct (always, whatever the input);
//   * ids equal to the reference exactly, weights to 1e-5 relative (bf16 weights: 1e-2), where the reference
//     choice is not a near-tie of values the two sides compute with different expf's (sigmoid keys; such rows
//     are counted as "near-tie rows" and get the first check only);
//   * logits: "exact" data (small integers times powers of two, so every fp32 sum is exact in any order) must
//     give the fp64 logits bit for bit; "gauss" data within 1e-5 relative (row norm), and bit-equal to the
//     same rows computed in a larger batch (batch invariance);
//   * nothing written outside weights/ids [M, top_k] and logits [M, N] (the buffers are poisoned, with padded
//     row strides and one extra row);
//   * with PDL: x (or logits_in) is written by a slow producer kernel launched just before, which triggers its
//     dependents at once, so a read of x before griddepcontrol.wait would see the poison.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "route.cuh"

using cutlass_router::RouteParams;
namespace cr = cutlass_router;

// ------------------------------------------------------------------------------------------- kernels under test
#define ROUTE_KERNEL(W, S, E, T, U)                                                                         \
  extern "C" __global__ void __launch_bounds__(32 * W, 1)                                                   \
      crt_route_w##W##_s##S##_e##E##_t##T##_u##U(const __grid_constant__ cutlass_router::RouteParams params) { \
    cutlass_router::route_fused<W, S, E, T, U>(params);                                                     \
  }
ROUTE_KERNEL(16, 1, 1, 1, 3)
ROUTE_KERNEL(16, 2, 1, 1, 2)
ROUTE_KERNEL(8, 2, 1, 1, 3)
ROUTE_KERNEL(8, 4, 1, 1, 2)
ROUTE_KERNEL(4, 8, 1, 1, 2)
ROUTE_KERNEL(8, 1, 2, 1, 3)
ROUTE_KERNEL(16, 1, 1, 2, 2)
ROUTE_KERNEL(8, 2, 2, 1, 2)
ROUTE_KERNEL(8, 4, 1, 2, 2)
ROUTE_KERNEL(8, 1, 3, 1, 2)

extern "C" __global__ void __launch_bounds__(256)
crt_route_select(const __grid_constant__ cutlass_router::RouteParams params) {
  cutlass_router::route_select(params);
}

// A producer for the PDL tests: lets its dependents launch at once, spins ~spin_ns, then copies src to dst.
__global__ void slow_copy(const uint4* src, uint4* dst, long long n16, long long spin_ns) {
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  long long t0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  for (;;) {
    long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    if (t - t0 > spin_ns) break;
  }
  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n16; i += (long long)gridDim.x * blockDim.x)
    dst[i] = src[i];
}

struct Config {
  const char* name;
  const void* fn;
  int W, S, E, T;
  int max_groups() const {
    const int ge = 16 * E;
    return std::min(16 / S, (384 + ge - 1) / ge);
  }
  int groups(int N) const { return (N + 16 * E - 1) / (16 * E); }
  bool covers(int N) const { return groups(N) <= max_groups() && groups(N) * S <= 16; }
};
#define CFG(W, S, E, T, U) \
  Config{"w" #W "_s" #S "_e" #E "_t" #T "_u" #U, (const void*)crt_route_w##W##_s##S##_e##E##_t##T##_u##U, W, S, E, T}
static const Config kConfigs[] = {CFG(16, 1, 1, 1, 3), CFG(16, 2, 1, 1, 2), CFG(8, 2, 1, 1, 3), CFG(8, 4, 1, 1, 2),
                                  CFG(4, 8, 1, 1, 2),  CFG(8, 1, 2, 1, 3),  CFG(16, 1, 1, 2, 2), CFG(8, 2, 2, 1, 2),
                                  CFG(8, 4, 1, 2, 2),  CFG(8, 1, 3, 1, 2)};

#include "reference.h"

#define SAME(name) (static_cast<int>(ref::name) == static_cast<int>(cr::name))
static_assert(SAME(kModeTopkSoftmax) && SAME(kModeSoftmaxTopk) && SAME(kModeSigmoid), "mode values");
static_assert(SAME(kRenormalize) && SAME(kSelectBf16) && SAME(kLogitsF32) && SAME(kWeightsBf16) && SAME(kIdsInt64) &&
                  SAME(kInputF32), "flag values");
#undef SAME

static int g_failures = 0;
static long long g_checks = 0, g_launches = 0, g_near_tie_rows = 0, g_rows_checked = 0;
static void fail(const std::string& what) {
  if (g_failures < 40) fprintf(stderr, "FAIL: %s\n", what.c_str());
  ++g_failures;
}

#define CUDA_OK(call)                                                                                    \
  do {                                                                                                   \
    cudaError_t err_ = (call);                                                                           \
    if (err_ != cudaSuccess) {                                                                           \
      fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorName(err_), __FILE__, __LINE__,       \
              cudaGetErrorString(err_));                                                                 \
      exit(1);                                                                                           \
    }                                                                                                    \
  } while (0)

// ------------------------------------------------------------------------------------------- device buffers
template <typename T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  void alloc(size_t count) {
    if (count > n) {
      if (p) CUDA_OK(cudaFree(p));
      CUDA_OK(cudaMalloc(&p, count * sizeof(T)));
      n = count;
    }
  }
  ~DevBuf() {
    if (p) cudaFree(p);
  }
};

struct Problem {  // one data set: x [Mmax, K], W [N, K], bias [N], correction [N], fp64 logits [Mmax, N]
  int Mmax, N, K;
  bool exact;
  std::vector<uint16_t> x, w, bias;
  std::vector<float> cb;
  std::vector<double> logits;  // without bias
  std::vector<float> logits_b;  // with bias, as fp32
};

static Problem make_problem(int Mmax, int N, int K, bool exact, uint64_t seed) {
  Problem pr{Mmax, N, K, exact};
  Rng r(seed);
  pr.x.resize((size_t)Mmax * K);
  pr.w.resize((size_t)N * K);
  pr.bias.resize(N);
  pr.cb.resize(N);
  for (auto& v : pr.x) v = bf16_bits(exact ? (float)r.integer(-3, 3) : (float)r.normal());
  const double ws = 1.0 / std::sqrt((double)K);
  for (auto& v : pr.w) v = bf16_bits(exact ? r.integer(-8, 8) / 256.f : (float)(r.normal() * ws));
  for (auto& v : pr.bias) v = bf16_bits(exact ? r.integer(-32, 32) / 16.f : (float)r.normal());
  for (auto& v : pr.cb) v = (float)(0.1 * r.normal());
  pr.logits.assign((size_t)Mmax * N, 0.0);
  pr.logits_b.assign((size_t)Mmax * N, 0.f);
  std::vector<double> xd((size_t)Mmax * K), wd((size_t)N * K);
  for (size_t i = 0; i < xd.size(); ++i) xd[i] = bf16_value(pr.x[i]);
  for (size_t i = 0; i < wd.size(); ++i) wd[i] = bf16_value(pr.w[i]);
  for (int m = 0; m < Mmax; ++m)
    for (int e = 0; e < N; ++e) {
      double acc = 0;
      const double* a = &xd[(size_t)m * K];
      const double* b = &wd[(size_t)e * K];
      for (int k = 0; k < K; ++k) acc += a[k] * b[k];
      pr.logits[(size_t)m * N + e] = acc;
    }
  return pr;
}

struct Case {
  int mode, top_k, flags, n_group, topk_group;
  bool bias, sel_bias, logits_out;
  float scale;
};

static std::vector<Case> cases_for(int N, bool exact, int salt) {
  static const int kFlagSets[] = {0, cr::kSelectBf16, cr::kSelectBf16 | cr::kWeightsBf16 | cr::kIdsInt64,
                                  cr::kLogitsF32 | cr::kIdsInt64, cr::kLogitsF32 | cr::kWeightsBf16 | cr::kSelectBf16};
  std::vector<Case> out;
  int i = salt;
  // Grouped sigmoid settings valid for this N: n_group | N, (N / n_group) % P == 0.
  const int P = (N + 31) / 32;
  std::vector<std::pair<int, int>> groupings = {{1, 1}};
  for (auto g : {std::make_pair(8, 4), std::make_pair(2, 1), std::make_pair(32, 8)})
    if (g.first <= N && N % g.first == 0 && (N / g.first) % P == 0) groupings.push_back(g);
  for (int top_k : {1, 4, 8}) {
    if (top_k > N) continue;
    for (int mode = 0; mode < 3; ++mode) {
      const int variants = mode == cr::kModeSigmoid ? (int)groupings.size() : 2;
      for (int v = 0; v < variants; ++v, ++i) {
        Case c{};
        c.mode = mode;
        c.top_k = top_k;
        c.flags = kFlagSets[i % 5];
        c.n_group = 1;
        c.topk_group = 1;
        c.scale = 1.f;
        c.bias = mode != cr::kModeSigmoid || (i % 3 == 0);
        c.sel_bias = false;
        c.logits_out = !exact || (i % 3 != 1);
        if (!exact) c.flags |= cr::kLogitsF32;  // the selection is checked on the kernel's own fp32 logits
        if (mode == cr::kModeSoftmaxTopk && v == 1) c.flags |= cr::kRenormalize;
        if (mode == cr::kModeSigmoid) {
          c.n_group = groupings[v].first;
          c.topk_group = groupings[v].second;
          if (top_k > c.topk_group * (N / c.n_group)) continue;
          c.flags |= (i % 2) ? cr::kRenormalize : 0;
          c.scale = 2.5f;
          c.sel_bias = (i % 4) != 3;
        }
        out.push_back(c);
      }
    }
  }
  return out;
}

static std::string describe(const char* kernel, int M, int N, int K, const Case& c, bool pdl) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s M=%d N=%d K=%d mode=%d top_k=%d flags=%d groups=%d/%d bias=%d sel_bias=%d logits=%d pdl=%d",
           kernel, M, N, K, c.mode, c.top_k, c.flags, c.n_group, c.topk_group, c.bias, c.sel_bias, c.logits_out, pdl);
  return buf;
}

// Output buffers with padded strides and one extra row, poisoned before every launch.
struct Outputs {
  int M, N, top_k, ldk, ldl;
  DevBuf<unsigned char> weights, ids, logits;
  std::vector<unsigned char> hw, hi, hl;
  void prepare(int M_, int N_, int top_k_, cudaStream_t st) {
    M = M_; N = N_; top_k = top_k_;
    ldk = top_k + 3;
    ldl = N + 5;
    weights.alloc((size_t)(M + 1) * ldk * 4);
    ids.alloc((size_t)(M + 1) * ldk * 8);
    logits.alloc((size_t)(M + 1) * ldl * 4);
    CUDA_OK(cudaMemsetAsync(weights.p, 0xA5, (size_t)(M + 1) * ldk * 4, st));
    CUDA_OK(cudaMemsetAsync(ids.p, 0xA5, (size_t)(M + 1) * ldk * 8, st));
    CUDA_OK(cudaMemsetAsync(logits.p, 0xA5, (size_t)(M + 1) * ldl * 4, st));
  }
  void fetch(cudaStream_t st) {  // after the launch, in stream order
    hw.resize((size_t)(M + 1) * ldk * 4);
    hi.resize((size_t)(M + 1) * ldk * 8);
    hl.resize((size_t)(M + 1) * ldl * 4);
    CUDA_OK(cudaMemcpyAsync(hw.data(), weights.p, hw.size(), cudaMemcpyDeviceToHost, st));
    CUDA_OK(cudaMemcpyAsync(hi.data(), ids.p, hi.size(), cudaMemcpyDeviceToHost, st));
    CUDA_OK(cudaMemcpyAsync(hl.data(), logits.p, hl.size(), cudaMemcpyDeviceToHost, st));
    CUDA_OK(cudaStreamSynchronize(st));
  }
};

static bool poisoned(const std::vector<unsigned char>& buf, size_t from, size_t bytes) {
  for (size_t i = from; i < from + bytes; ++i)
    if (buf[i] != 0xA5) return false;
  return true;
}

// Checks weights/ids (and poison) of one launch against the reference on `basis` logits [M, N] (bias included).
static void check_selection(const std::string& what, const Outputs& o, const Case& c, const float* basis,
                            const float* cb, bool check_logit_poison) {
  const int M = o.M, N = o.N, k = c.top_k;
  const bool w_bf16 = c.flags & cr::kWeightsBf16, i64 = c.flags & cr::kIdsInt64;
  const size_t wsz = w_bf16 ? 2 : 4, isz = i64 ? 8 : 4;
  Selection s;
  s.mode = c.mode; s.flags = c.flags; s.top_k = k; s.n_group = c.n_group; s.topk_group = c.topk_group;
  s.scale = c.scale; s.sel_bias = c.sel_bias ? cb : nullptr;
  int reported = 0;
  for (int m = 0; m < M; ++m) {
    ++g_rows_checked;
    std::vector<int> ids(k);
    std::vector<float> w(k);
    for (int j = 0; j < k; ++j) {
      const size_t at = (size_t)m * o.ldk + j;
      if (i64) {
        long long v;
        memcpy(&v, &o.hi[at * 8], 8);
        ids[j] = (v < 0 || v > 1 << 20) ? -1 : (int)v;
      } else {
        memcpy(&ids[j], &o.hi[at * 4], 4);
      }
      if (w_bf16) {
        uint16_t b;
        memcpy(&b, &o.hw[at * 2], 2);
        w[j] = bf16_value(b);
      } else {
        memcpy(&w[j], &o.hw[at * 4], 4);
      }
    }
    std::vector<int> sorted = ids;
    std::sort(sorted.begin(), sorted.end());
    const bool valid = sorted.front() >= 0 && sorted.back() < N &&
                       std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end();
    ++g_checks;
    if (!valid) {
      char b[96];
      snprintf(b, sizeof b, " row %d: ids out of range or repeated (first %d)", m, ids[0]);
      fail(what + b);
      continue;
    }
    const RefRow ref = ref_select(basis + (size_t)m * N, N, s);
    if (ref.near_tie) {
      ++g_near_tie_rows;
      continue;
    }
    for (int j = 0; j < k; ++j) {
      const float rw = w_bf16 ? bf16_round(ref.w[j]) : ref.w[j];
      const float tol = (w_bf16 ? 1e-2f : 1e-5f) * std::fabs(rw) + 1e-30f;
      const bool w_ok = (std::isnan(rw) && std::isnan(w[j])) || (std::isinf(rw) && rw == w[j]) ||
                        std::fabs(w[j] - rw) <= tol;
      if (ids[j] != ref.ids[j] || !w_ok) {
        if (reported++ < 2) {
          char b[160];
          snprintf(b, sizeof b, " row %d slot %d: id %d weight %.9g, want id %d weight %.9g", m, j, ids[j], w[j],
                   ref.ids[j], rw);
          fail(what + b);
        }
        break;
      }
    }
  }
  // Nothing written past top_k in a row, nor in row M.
  for (int m = 0; m <= M; ++m) {
    const int from = m < M ? k : 0;
    const size_t n = (size_t)(o.ldk - from);
    if (!poisoned(o.hw, ((size_t)m * o.ldk + from) * wsz, n * wsz) ||
        !poisoned(o.hi, ((size_t)m * o.ldk + from) * isz, n * isz)) {
      fail(what + " wrote weights/ids outside [M, top_k]");
      break;
    }
  }
  if (check_logit_poison && !poisoned(o.hl, 0, o.hl.size())) fail(what + " wrote logits it was not asked for");
}

static cudaError_t launch(const void* fn, dim3 grid, dim3 block, unsigned cluster, bool pdl, const RouteParams& p,
                          cudaStream_t st) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = 0;
  cfg.stream = st;
  cudaLaunchAttribute at[2];
  int n = 0;
  if (cluster) {
    at[n].id = cudaLaunchAttributeClusterDimension;
    at[n].val.clusterDim.x = cluster;
    at[n].val.clusterDim.y = 1;
    at[n].val.clusterDim.z = 1;
    ++n;
  }
  if (pdl) {
    at[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  cfg.attrs = at;
  cfg.numAttrs = n;
  RouteParams copy = p;
  void* args[] = {&copy};
  ++g_launches;
  return cudaLaunchKernelExC(&cfg, fn, args);
}

static void produce(const void* src, void* dst, size_t bytes, cudaStream_t st) {
  // Poison dst (bf16 0xFFFF / fp32 0xFFFFFFFF are NaN), then copy src over it after a ~20 us spin.
  CUDA_OK(cudaMemsetAsync(dst, 0xFF, bytes, st));
  slow_copy<<<64, 256, 0, st>>>((const uint4*)src, (uint4*)dst, (long long)(bytes / 16), 20000);
  CUDA_OK(cudaGetLastError());
}

// ------------------------------------------------------------------------------------------- the fused kernel
static bool cluster_schedulable(const Config& cfg, int ctas) {
  cudaLaunchConfig_t lc = {};
  lc.gridDim = dim3(ctas, 1, 1);
  lc.blockDim = dim3(32 * cfg.W);
  cudaLaunchAttribute at;
  at.id = cudaLaunchAttributeClusterDimension;
  at.val.clusterDim.x = ctas;
  at.val.clusterDim.y = 1;
  at.val.clusterDim.z = 1;
  lc.attrs = &at;
  lc.numAttrs = 1;
  int clusters = 0;
  const cudaError_t err = cudaOccupancyMaxActiveClusters(&clusters, cfg.fn, &lc);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return clusters > 0;
}

static long long g_unschedulable = 0;

static void test_fused(const Problem& pr, cudaStream_t st) {
  const int N = pr.N, K = pr.K;
  DevBuf<uint16_t> dx, dx_src, dw, dbias;
  DevBuf<float> dcb;
  const size_t xbytes = ((size_t)pr.Mmax * K * 2 + 15) / 16 * 16;
  dx.alloc(xbytes / 2);
  dx_src.alloc(xbytes / 2);
  dw.alloc(pr.w.size());
  dbias.alloc(N);
  dcb.alloc(N);
  CUDA_OK(cudaMemset(dx_src.p, 0, xbytes));
  CUDA_OK(cudaMemcpy(dx_src.p, pr.x.data(), pr.x.size() * 2, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dx.p, dx_src.p, xbytes, cudaMemcpyDeviceToDevice));
  CUDA_OK(cudaMemcpy(dw.p, pr.w.data(), pr.w.size() * 2, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dbias.p, pr.bias.data(), N * 2, cudaMemcpyHostToDevice));
  CUDA_OK(cudaMemcpy(dcb.p, pr.cb.data(), N * 4, cudaMemcpyHostToDevice));
  Outputs o;
  static const int kMs[] = {127, 1, 3, 13, 64};  // the largest first: the batch-invariance reference
  int salt = 0;
  for (const Config& cfg : kConfigs) {
    const std::vector<Case> cases = cases_for(N, pr.exact, salt++);  // the same cases for every M
    if (!cfg.covers(N)) continue;
    const int ctas = cfg.groups(N) * cfg.S;
    if (!cluster_schedulable(cfg, ctas)) {
      printf("  note: %s cannot schedule a cluster of %d CTAs on this GPU; skipped for N=%d\n", cfg.name, ctas, N);
      ++g_unschedulable;
      continue;
    }
    std::vector<std::vector<float>> full_logits;  // per case index, from M = 127 (gauss data)
    full_logits.resize(cases.size());
    for (int M : kMs) {
      for (size_t ci = 0; ci < cases.size(); ++ci) {
        const Case& c = cases[ci];
        const bool pdl = (ci + M) % 2 == 0;
        o.prepare(M, N, c.top_k, st);
        RouteParams p = {};
        p.x = reinterpret_cast<const __nv_bfloat16*>(dx.p);
        p.w = reinterpret_cast<const __nv_bfloat16*>(dw.p);
        p.bias = c.bias ? reinterpret_cast<const __nv_bfloat16*>(dbias.p) : nullptr;
        p.sel_bias = c.sel_bias ? dcb.p : nullptr;
        p.logits = c.logits_out ? o.logits.p : nullptr;
        p.weights = o.weights.p;
        p.ids = o.ids.p;
        p.ldx = K; p.ldw = K; p.ldi = 0; p.ldl = o.ldl; p.ldk = o.ldk;
        p.M = M; p.N = N; p.K = K; p.top_k = c.top_k;
        p.mode = c.mode; p.flags = c.flags; p.n_group = c.n_group; p.topk_group = c.topk_group;
        p.scale = c.scale;
        if (pdl) produce(dx_src.p, dx.p, xbytes, st);
        const std::string what = describe(cfg.name, M, N, K, c, pdl) + (pr.exact ? " exact" : " gauss");
        const cudaError_t err = launch(cfg.fn, dim3(ctas, (M + 8 * cfg.T - 1) / (8 * cfg.T), 1), dim3(32 * cfg.W),
                                       ctas, pdl, p, st);
        if (err != cudaSuccess) {
          fail(what + " launch: " + cudaGetErrorString(err));
          cudaGetLastError();
          continue;
        }
        CUDA_OK(cudaStreamSynchronize(st));
        o.fetch(st);
        // Logits: exact data must equal the fp64 values bit for bit; gauss data within 1e-5 (row norm).
        std::vector<float> got((size_t)M * N);
        std::vector<float> want((size_t)M * N);
        for (int m = 0; m < M; ++m)
          for (int e = 0; e < N; ++e) {
            const double b = c.bias ? bf16_value(pr.bias[e]) : 0.0;
            want[(size_t)m * N + e] = (float)(pr.logits[(size_t)m * N + e] + b);
          }
        if (c.logits_out) {
          const bool f32 = c.flags & cr::kLogitsF32;
          for (int m = 0; m < M; ++m) {
            double err2 = 0, ref2 = 0;
            for (int e = 0; e < N; ++e) {
              const size_t at = (size_t)m * o.ldl + e;
              float v;
              if (f32) memcpy(&v, &o.hl[at * 4], 4);
              else { uint16_t b; memcpy(&b, &o.hl[at * 2], 2); v = bf16_value(b); }
              got[(size_t)m * N + e] = v;
              const float wv = want[(size_t)m * N + e];
              if (pr.exact) {
                if (v != (f32 ? wv : bf16_round(wv))) {
                  char b[96];
                  snprintf(b, sizeof b, " logits[%d][%d] = %.9g, want %.9g", m, e, v, wv);
                  fail(what + b);
                  m = M;
                  break;
                }
              } else {
                const double ref = c.bias ? pr.logits[(size_t)m * N + e] + bf16_value(pr.bias[e])
                                          : pr.logits[(size_t)m * N + e];
                err2 += (v - ref) * (v - ref);
                ref2 += ref * ref;
              }
            }
            if (!pr.exact && !(std::sqrt(err2) <= 1e-5 * std::sqrt(ref2) + 1e-6)) {
              char b[96];
              snprintf(b, sizeof b, " row %d logits rel err %.3g", m, std::sqrt(err2 / std::max(ref2, 1e-300)));
              fail(what + b);
            }
          }
          // Padding of the logits rows and row M untouched.
          const size_t esz = f32 ? 4 : 2;
          for (int m = 0; m <= M; ++m) {
            const int from = m < M ? N : 0;
            if (!poisoned(o.hl, ((size_t)m * o.ldl + from) * esz, (size_t)(o.ldl - from) * esz)) {
              fail(what + " wrote logits outside [M, N]");
              break;
            }
          }
          if (!pr.exact) {  // batch invariance: the same rows as in the M = 127 launch, bit for bit
            if (M == 127) full_logits[ci] = got;
            else if (full_logits[ci].size() == (size_t)127 * N &&
                     memcmp(got.data(), full_logits[ci].data(), (size_t)M * N * 4) != 0)
              fail(what + " logits differ from the same rows in a batch of 127");
          }
        }
        // Selection: on the fp64 logits (exact data: they are the kernel's too) or on the kernel's fp32 logits.
        check_selection(what, o, c, pr.exact ? want.data() : got.data(), pr.cb.data(), !c.logits_out);
      }
    }
  }
}

// ------------------------------------------------------------------------------------------- the select kernel
static void test_select(const Problem& pr, cudaStream_t st, int M) {
  const int N = pr.N;
  for (int in_f32 = 0; in_f32 < 2; ++in_f32) {
    const int ldi = in_f32 ? N + 3 : N + (N % 2);
    const size_t esz = in_f32 ? 4 : 2;
    // The input: the fp32 logits (bias included) of rows m % Mmax, stored as fp32 or bf16.
    std::vector<float> basis((size_t)M * N);
    std::vector<unsigned char> host(((size_t)M * ldi * esz + 15) / 16 * 16, 0);
    for (int m = 0; m < M; ++m)
      for (int e = 0; e < N; ++e) {
        const int mm = m % pr.Mmax;
        float v = (float)(pr.logits[(size_t)mm * N + e] + bf16_value(pr.bias[e]));
        if (!in_f32) v = bf16_round(v);
        basis[(size_t)m * N + e] = v;
        if (in_f32) memcpy(&host[((size_t)m * ldi + e) * 4], &v, 4);
        else { const uint16_t b = bf16_bits(v); memcpy(&host[((size_t)m * ldi + e) * 2], &b, 2); }
      }
    DevBuf<unsigned char> din, din_src;
    DevBuf<float> dcb;
    din.alloc(host.size());
    din_src.alloc(host.size());
    dcb.alloc(N);
    CUDA_OK(cudaMemcpy(din_src.p, host.data(), host.size(), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(din.p, host.data(), host.size(), cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dcb.p, pr.cb.data(), N * 4, cudaMemcpyHostToDevice));
    Outputs o;
    const std::vector<Case> cases = cases_for(N, true, M + in_f32);
    for (size_t ci = 0; ci < cases.size(); ++ci) {
      Case c = cases[ci];
      c.logits_out = false;
      c.bias = false;
      const bool pdl = ci % 2 == 1;
      o.prepare(M, N, c.top_k, st);
      RouteParams p = {};
      p.sel_bias = c.sel_bias ? dcb.p : nullptr;
      p.logits_in = din.p;
      p.weights = o.weights.p;
      p.ids = o.ids.p;
      p.ldi = ldi; p.ldk = o.ldk;
      p.M = M; p.N = N; p.K = 0; p.top_k = c.top_k;
      p.mode = c.mode; p.flags = c.flags | (in_f32 ? cr::kInputF32 : 0) ; p.n_group = c.n_group;
      p.topk_group = c.topk_group; p.scale = c.scale;
      c.flags = p.flags;
      if (pdl) produce(din_src.p, din.p, host.size(), st);
      const std::string what = describe("select", M, N, pr.K, c, pdl);
      const cudaError_t err = launch((const void*)crt_route_select, dim3((M + 7) / 8), dim3(256), 0, pdl, p, st);
      if (err != cudaSuccess) {
        fail(what + " launch: " + cudaGetErrorString(err));
        cudaGetLastError();
        continue;
      }
      CUDA_OK(cudaStreamSynchronize(st));
      o.fetch(st);
      check_selection(what, o, c, basis.data(), pr.cb.data(), true);
    }
  }
}

// ------------------------------------------------------------------------------------------- NaN / Inf / ties
static std::vector<float> special_rows(int N) {
  const float nan = NAN, inf = INFINITY;
  std::vector<float> t((size_t)8 * N, 0.f);  // row 0: all equal
  for (int e = 0; e < N; ++e) {
    t[1 * N + e] = (float)(e % 7) - 3.f;
    t[2 * N + e] = (float)(e % 5);
    t[3 * N + e] = -inf;                         // all -inf
    t[4 * N + e] = e % 3 == 0 ? nan : 1.f;       // many NaNs
    t[5 * N + e] = (float)(e % 4);               // many ties
    t[6 * N + e] = (e % 2) ? -0.f : 0.f;         // +-0 tie
    t[7 * N + e] = nan;                          // all NaN
  }
  t[1 * N + std::min(5, N - 1)] = nan;
  t[1 * N + std::min(7, N - 1)] = nan;
  t[2 * N + std::min(3, N - 1)] = inf;
  t[2 * N + N - 1] = -inf;
  return t;
}

static void test_special(cudaStream_t st) {
  for (int N : {8, 32, 60, 128, 256, 384}) {
    const std::vector<float> rows = special_rows(N);
    const int R = 8;
    std::vector<float> cb(N, 0.f);
    // Select kernel on these rows, fp32 input.
    DevBuf<float> din, dcb;
    din.alloc(rows.size());
    dcb.alloc(N);
    CUDA_OK(cudaMemcpy(din.p, rows.data(), rows.size() * 4, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dcb.p, cb.data(), N * 4, cudaMemcpyHostToDevice));
    Outputs o;
    for (const Case& c0 : cases_for(N, true, N)) {
      Case c = c0;
      c.bias = false;
      c.logits_out = false;
      c.flags |= cr::kInputF32;
      o.prepare(R, N, c.top_k, st);
      RouteParams p = {};
      p.sel_bias = c.sel_bias ? dcb.p : nullptr;
      p.logits_in = din.p;
      p.weights = o.weights.p;
      p.ids = o.ids.p;
      p.ldi = N; p.ldk = o.ldk;
      p.M = R; p.N = N; p.top_k = c.top_k;
      p.mode = c.mode; p.flags = c.flags; p.n_group = c.n_group; p.topk_group = c.topk_group; p.scale = c.scale;
      const std::string what = describe("select-special", R, N, 0, c, false);
      CUDA_OK(launch((const void*)crt_route_select, dim3(1), dim3(256), 0, false, p, st));
      CUDA_OK(cudaStreamSynchronize(st));
      o.fetch(st);
      check_selection(what, o, c, rows.data(), cb.data(), true);
      // Row 0 (all equal) picks the lowest ids in every mode.
      for (int j = 0; j < c.top_k; ++j) {
        int id;
        if (c.flags & cr::kIdsInt64) { long long v; memcpy(&v, &o.hi[(size_t)j * 8], 8); id = (int)v; }
        else memcpy(&id, &o.hi[(size_t)j * 4], 4);
        if (id != j) { fail(what + " all-equal row does not pick the lowest ids"); break; }
      }
    }
    // Fused kernel: x one-hot rows, W[:, r] = row r's wanted logits; the MMA makes 0 * NaN = NaN, so the
    // selection is checked on the kernel's own fp32 logits.
    const int K = 64;
    std::vector<uint16_t> x((size_t)R * K, 0), w((size_t)N * K, 0);
    for (int r = 0; r < R; ++r) x[(size_t)r * K + r] = bf16_bits(1.f);
    for (int e = 0; e < N; ++e)
      for (int r = 0; r < R; ++r) w[(size_t)e * K + r] = bf16_bits(rows[(size_t)r * N + e]);
    DevBuf<uint16_t> dx, dw;
    dx.alloc(x.size());
    dw.alloc(w.size());
    CUDA_OK(cudaMemcpy(dx.p, x.data(), x.size() * 2, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(dw.p, w.data(), w.size() * 2, cudaMemcpyHostToDevice));
    for (const Config& cfg : kConfigs) {
      if (!cfg.covers(N) || !cluster_schedulable(cfg, cfg.groups(N) * cfg.S)) continue;
      for (const Case& c0 : cases_for(N, false, N + cfg.W)) {
        Case c = c0;
        c.bias = false;
        o.prepare(R, N, c.top_k, st);
        RouteParams p = {};
        p.x = reinterpret_cast<const __nv_bfloat16*>(dx.p);
        p.w = reinterpret_cast<const __nv_bfloat16*>(dw.p);
        p.sel_bias = c.sel_bias ? dcb.p : nullptr;
        p.logits = o.logits.p;
        p.weights = o.weights.p;
        p.ids = o.ids.p;
        p.ldx = K; p.ldw = K; p.ldl = o.ldl; p.ldk = o.ldk;
        p.M = R; p.N = N; p.K = K; p.top_k = c.top_k;
        p.mode = c.mode; p.flags = c.flags; p.n_group = c.n_group; p.topk_group = c.topk_group; p.scale = c.scale;
        const int ctas = cfg.groups(N) * cfg.S;
        const std::string what = describe(cfg.name, R, N, K, c, false) + " special";
        CUDA_OK(launch(cfg.fn, dim3(ctas, (R + 8 * cfg.T - 1) / (8 * cfg.T)), dim3(32 * cfg.W), ctas, false, p, st));
        CUDA_OK(cudaStreamSynchronize(st));
        o.fetch(st);
        std::vector<float> got((size_t)R * N);
        for (int m = 0; m < R; ++m) memcpy(&got[(size_t)m * N], &o.hl[(size_t)m * o.ldl * 4], (size_t)N * 4);
        check_selection(what, o, c, got.data(), cb.data(), false);
      }
    }
  }
}

int main(int argc, char** argv) {
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--quick")) quick = true;
    else if (!strcmp(argv[i], "--ref-selftest")) {
      const bool ok = ref_selftest();
      printf("reference selftest: %s\n", ok ? "PASS" : "FAIL");
      return ok ? 0 : 1;
    } else {
      fprintf(stderr, "usage: %s [--quick] [--ref-selftest]\n", argv[0]);
      return 2;
    }
  }
  if (!ref_selftest()) {
    printf("FAIL: the CPU reference fails its own examples\n");
    return 1;
  }
  int dev = 0, count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    printf("no CUDA device: only the reference selftest ran (PASS)\n");
    return 2;
  }
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, dev));
  printf("device: %s (sm_%d%d, %d SMs)\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  if (prop.major != 9) {
    printf("FAIL: needs an sm_90 GPU\n");
    return 2;
  }
  for (const Config& cfg : kConfigs)
    CUDA_OK(cudaFuncSetAttribute(cfg.fn, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  cudaStream_t st;
  // A blocking stream: the synchronous cudaMemcpy/cudaMemset uploads (legacy stream) are ordered with it.
  CUDA_OK(cudaStreamCreate(&st));

  const std::vector<int> Ns = quick ? std::vector<int>{32, 256} : std::vector<int>{32, 60, 128, 256, 384};
  const std::vector<int> Ks = quick ? std::vector<int>{2880} : std::vector<int>{2880, 1000, 7168};
  uint64_t seed = 1;
  for (int N : Ns)
    for (int K : Ks)
      for (int exact = 1; exact >= 0; --exact) {
        const int before = g_failures;
        const Problem pr = make_problem(127, N, K, exact, seed++);
        test_fused(pr, st);
        if (exact) {
          for (int M : {1, 13, 127, 1000}) test_select(pr, st, M);
        }
        printf("N=%3d K=%4d %s: %s\n", N, K, exact ? "exact" : "gauss", g_failures == before ? "ok" : "FAILED");
        fflush(stdout);
      }
  {
    const int before = g_failures;
    test_special(st);
    printf("NaN/Inf/ties: %s\n", g_failures == before ? "ok" : "FAILED");
  }
  CUDA_OK(cudaStreamDestroy(st));
  printf("%lld launches, %lld row checks (%lld near-tie rows checked for validity only), %lld unschedulable "
         "cluster configs skipped\n",
         g_launches, g_rows_checked, g_near_tie_rows, g_unschedulable);
  printf("%s: %d failure(s)\n", g_failures == 0 ? "PASS" : "FAIL", g_failures);
  return g_failures == 0 ? 0 : 1;
}
