// Host-only check of cutlass_router::select_row (templates/route.cuh), no GPU needed: the header is compiled by the
// host compiler, each of 32 lanes is a std::thread, and the warp intrinsics select_row uses (__shfl*_sync,
// __reduce_{max,min}_sync, __ballot_sync) are emulated with a std::barrier (every call in select_row is warp-
// uniform, so a barrier per call is exact). Random rows with many ties, NaN, +-Inf, +-0, bf16 rounding, every
// mode and grouped sigmoid (including gs == 1 and groups spanning a non-power-of-2 number of lanes) are
// compared with reference.h: ids exactly, weights to 1e-6 (the same expf on both sides). Build: README.md.
// It checks the selection logic, not the GPU's expf, the fused kernel's data movement, nor the compiled SASS.
#include <cuda_bf16.h>
#include <math.h>
#include <barrier>
#include <cstdint>
#include <cstring>
#include <thread>
#include <algorithm>
using std::max;
using std::min;
thread_local uint3 threadIdx, blockIdx;
inline void __syncthreads() {}
inline void __trap() { abort(); }
inline uint32_t __float_as_uint(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
inline int __ffs(unsigned x) { return __builtin_ffs(x); }
// Parsed (in splitk_mma.cuh's helpers), never called here.
inline uint4 __ldg(const uint4* p) { return *p; }
inline size_t __cvta_generic_to_shared(const void*) { return 0; }
static std::barrier<>* g_bar;
static uint64_t g_slot[32];
static long long g_collectives = 0;
inline int lane_id() { return threadIdx.x & 31; }
template <class T> inline void put(T v) { uint64_t u = 0; memcpy(&u, &v, sizeof(T)); g_slot[lane_id()] = u; }
template <class T> inline T get(int l) { T v; memcpy(&v, &g_slot[l], sizeof(T)); return v; }
inline void wsync() { g_bar->arrive_and_wait(); }
template <class T> T __shfl_sync(unsigned, T v, int src) { put(v); wsync(); T r = get<T>(src & 31); wsync(); return r; }
template <class T> T __shfl_down_sync(unsigned, T v, unsigned d) {
  put(v); wsync(); int s = lane_id() + (int)d; T r = get<T>(s > 31 ? lane_id() : s); wsync(); return r; }
template <class T> T __shfl_xor_sync(unsigned, T v, int m) { put(v); wsync(); T r = get<T>((lane_id() ^ m) & 31); wsync(); return r; }
inline unsigned __reduce_max_sync(unsigned, unsigned v) {
  put(v); wsync(); unsigned r = 0; for (int l = 0; l < 32; ++l) r = std::max(r, get<unsigned>(l)); wsync();
  if (lane_id() == 0) ++g_collectives; return r; }
inline unsigned __reduce_min_sync(unsigned, unsigned v) {
  put(v); wsync(); unsigned r = ~0u; for (int l = 0; l < 32; ++l) r = std::min(r, get<unsigned>(l)); wsync(); return r; }
inline unsigned __ballot_sync(unsigned, int p) {
  put((unsigned)(p != 0)); wsync(); unsigned r = 0; for (int l = 0; l < 32; ++l) r |= get<unsigned>(l) << l; wsync(); return r; }

#include "route.cuh"
#include "reference.h"

namespace cr = cutlass_router;
struct Job { std::vector<float> l, cb; Selection s; cr::RouteParams p; std::vector<float> w; std::vector<long long> ids; int ldk; };

template <int kMaxP>
void run_lane(Job& j, int lane) {
  const int N = j.p.N, P = (N + 31) / 32;
  float v[kMaxP], cb[kMaxP];
  for (int i = 0; i < kMaxP; ++i) {
    const int n = lane * P + i;
    const bool ok = i < P && n < N;
    const float l = ok ? j.l[n] : 0.f;
    v[i] = (j.p.flags & cr::kSelectBf16) ? cr::detail::round_bf16(l) : l;
    cb[i] = ok && j.p.mode == cr::kModeSigmoid && j.p.sel_bias ? j.p.sel_bias[n] : 0.f;
  }
  cr::select_row<kMaxP>(v, cb, P, j.p, 0);
}

int main(int argc, char** argv) {
  const int cases = argc > 1 ? atoi(argv[1]) : 4000;
  Rng r(11);
  std::vector<Job> jobs(cases);
  for (auto& j : jobs) {
    const int Ns[] = {1, 2, 8, 16, 17, 32, 33, 60, 64, 96, 128, 200, 256, 320, 384};
    const int N = Ns[r.integer(0, 14)];
    Selection& s = j.s;
    s.mode = r.integer(0, 2);
    s.top_k = std::min(N, r.integer(1, 8));
    s.flags = (r.integer(0, 1) ? ref::kSelectBf16 : 0) | (s.mode != 0 && r.integer(0, 1) ? ref::kRenormalize : 0) |
              (r.integer(0, 1) ? ref::kWeightsBf16 : 0) | (r.integer(0, 1) ? ref::kIdsInt64 : 0);
    j.l.resize(N); j.cb.resize(N);
    const int spread = r.integer(0, 40), kind = r.integer(0, 9);
    for (int e = 0; e < N; ++e) {
      j.l[e] = r.integer(-spread, spread) / 8.f + (r.integer(0, 1) ? 1.f / 512 : 0.f);
      const int u = r.integer(0, kind == 0 ? 3 : 99);
      if (u == 0) j.l[e] = NAN; else if (u == 1) j.l[e] = INFINITY; else if (u == 2) j.l[e] = -INFINITY;
      else if (u == 3) j.l[e] = r.integer(0, 1) ? -0.f : 0.f;
      j.cb[e] = r.integer(-4, 4) / 16.f;
    }
    if (s.mode == 2) {
      s.scale = 2.5f;
      const int P = (N + 31) / 32;
      std::vector<int> gs;
      for (int g : {2, 3, 4, 5, 8, 10, 16, 32}) if (g <= N && N % g == 0 && (N / g) % P == 0) gs.push_back(g);
      if (!gs.empty() && r.integer(0, 3)) {
        s.n_group = gs[r.integer(0, (int)gs.size() - 1)];
        s.topk_group = r.integer(1, s.n_group);
        s.top_k = std::min(s.top_k, s.topk_group * (N / s.n_group));
      }
      if (r.integer(0, 1)) s.sel_bias = j.cb.data();
    }
    j.ldk = s.top_k + 2;
    j.w.assign(2 * j.ldk, -777.f);
    j.ids.assign(2 * j.ldk, -777);
    cr::RouteParams& p = j.p;
    memset(&p, 0, sizeof p);
    p.sel_bias = s.sel_bias; p.weights = j.w.data(); p.ids = j.ids.data(); p.ldk = j.ldk;
    p.M = 1; p.N = N; p.top_k = s.top_k; p.mode = s.mode; p.flags = s.flags; p.n_group = s.n_group;
    p.topk_group = s.topk_group; p.scale = s.scale;
  }
  std::barrier<> bar(32);
  g_bar = &bar;
  std::vector<std::thread> lanes;
  for (int lane = 0; lane < 32; ++lane)
    lanes.emplace_back([&, lane] {
      threadIdx.x = lane;
      for (auto& j : jobs) {
        // kMaxP as the select kernel (12) and as a fused configuration bound just large enough.
        const int P = (j.p.N + 31) / 32;
        if (&j - &jobs[0] & 1) run_lane<12>(j, lane);
        else if (P <= 1) run_lane<1>(j, lane);
        else if (P <= 2) run_lane<2>(j, lane);
        else if (P <= 4) run_lane<4>(j, lane);
        else if (P <= 8) run_lane<8>(j, lane);
        else run_lane<12>(j, lane);
      }
    });
  for (auto& t : lanes) t.join();
  int bad = 0;
  for (auto& j : jobs) {
    const RefRow ref = ref_select(j.l.data(), j.p.N, j.s);
    const bool wb = j.p.flags & cr::kWeightsBf16, i64 = j.p.flags & cr::kIdsInt64;
    bool ok = true;
    std::vector<int> seen;
    for (int k = 0; k < j.s.top_k; ++k) {
      long long id; float w;
      if (i64) id = j.ids[k]; else { int v; memcpy(&v, (char*)j.ids.data() + 4 * k, 4); id = v; }
      if (wb) { uint16_t b; memcpy(&b, (char*)j.w.data() + 2 * k, 2); w = bf16_value(b); } else w = j.w[k];
      const float rw = wb ? bf16_round(ref.w[k]) : ref.w[k];
      const bool wok = (std::isnan(rw) && std::isnan(w)) || w == rw || std::fabs(w - rw) <= (wb ? 1e-2f : 1e-6f) * std::fabs(rw);
      if (id != ref.ids[k] || !wok) ok = false;
      if (id < 0 || id >= j.p.N || std::find(seen.begin(), seen.end(), (int)id) != seen.end()) ok = false;
      seen.push_back((int)id);
    }
    const size_t wbytes = wb ? 2 : 4, ibytes = i64 ? 8 : 4;
    // untouched past top_k
    {
      std::vector<float> w0(2 * j.ldk, -777.f);
      std::vector<long long> i0(2 * j.ldk, -777);
      if (memcmp((char*)j.w.data() + j.s.top_k * wbytes, (char*)w0.data() + j.s.top_k * wbytes, w0.size() * 4 - j.s.top_k * wbytes) ||
          memcmp((char*)j.ids.data() + j.s.top_k * ibytes, (char*)i0.data() + j.s.top_k * ibytes, i0.size() * 8 - j.s.top_k * ibytes))
        ok = false;
    }
    if (!ok && bad++ < 8) {
      printf("MISMATCH N=%d mode=%d k=%d flags=%d groups=%d/%d cb=%d:\n  got ", j.p.N, j.s.mode, j.s.top_k, j.s.flags,
             j.s.n_group, j.s.topk_group, j.s.sel_bias != nullptr);
      for (int k = 0; k < j.s.top_k; ++k) printf("%lld:%g ", i64 ? j.ids[k] : (long long)((int*)j.ids.data())[k], wb ? bf16_value(((uint16_t*)j.w.data())[k]) : j.w[k]);
      printf("\n  want ");
      for (int k = 0; k < j.s.top_k; ++k) printf("%d:%g ", ref.ids[k], ref.w[k]);
      printf("\n");
    }
  }
  printf("%d cases, %d mismatches (%lld redux rounds)\n", cases, bad, g_collectives);
  return bad != 0;
}
