// CPU reference of cutlass_router's routing semantics (templates/route.cuh, cutlass_router/routing_ref.py), in
// fp32 on given logits (bias included). Plain C++: used by harness.cu, and by any host-only check.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <vector>

namespace ref {
// The values of cutlass_router's enums (harness.cu static_asserts that they agree).
enum : int { kModeTopkSoftmax = 0, kModeSoftmaxTopk = 1, kModeSigmoid = 2 };
enum : int { kRenormalize = 1, kSelectBf16 = 2, kLogitsF32 = 4, kWeightsBf16 = 8, kIdsInt64 = 16, kInputF32 = 32 };
}  // namespace ref

inline float bf16_round(float f) {  // round to nearest even, as __float2bfloat16_rn
  uint32_t u;
  memcpy(&u, &f, 4);
  if (std::isnan(f)) return f;
  u += 0x7FFFu + ((u >> 16) & 1u);
  u &= 0xFFFF0000u;
  memcpy(&f, &u, 4);
  return f;
}
inline uint16_t bf16_bits(float f) {
  f = bf16_round(f);
  uint32_t u;
  memcpy(&u, &f, 4);
  if (std::isnan(f)) return 0x7FC0;
  return (uint16_t)(u >> 16);
}
inline float bf16_value(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s += 0x9E3779B97F4A7C15ull;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int integer(int lo, int hi) { return lo + (int)(next() % (uint64_t)(hi - lo + 1)); }
  double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }
  double normal() {
    const double u1 = std::max(uniform(), 1e-300), u2 = uniform();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
};

// The semantics of route.cuh / routing_ref.py, in fp32 on given logits (bias included).
struct Selection {
  int mode = 0, flags = 0, top_k = 1, n_group = 1, topk_group = 1;
  float scale = 1.f;
  const float* sel_bias = nullptr;  // [N] or nullptr (sigmoid)
};

// Torch's stable descending sort: NaN first, then larger first, ties (and NaNs) by lower index.
inline std::vector<int> rank_desc(const std::vector<float>& key) {
  std::vector<int> idx(key.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) {
    const float ka = key[a], kb = key[b];
    if (std::isnan(ka) || std::isnan(kb)) return std::isnan(ka) && !std::isnan(kb);
    return ka > kb;
  });
  return idx;
}

// Whether the order of two sigmoid-mode keys (c = 1 / (1 + exp(-l)) + correction) could differ on the GPU, whose
// expf may differ from the host's by an ulp: equal or within 1e-5 relative, unless both come from the same inputs
// (then both sides compute the same value) or are the same infinity. NaN keys order by id on both sides.
inline bool near_pair(float a, float b, bool same_inputs) {
  if (std::isnan(a) || std::isnan(b)) return false;
  if (a == b) return !same_inputs && !std::isinf(a);
  if (std::isinf(a) || std::isinf(b)) return false;
  return std::fabs(a - b) <= 1e-5f * std::max(std::fabs(a), std::fabs(b));
}

struct RefRow {
  std::vector<int> ids;
  std::vector<float> w;
  bool near_tie = false;
};

inline RefRow ref_select(const float* logits, int N, const Selection& s) {
  RefRow out;
  std::vector<float> sel(N);
  for (int e = 0; e < N; ++e) sel[e] = (s.flags & ref::kSelectBf16) ? bf16_round(logits[e]) : logits[e];
  const int k = s.top_k;
  if (s.mode == ref::kModeTopkSoftmax) {
    out.ids = rank_desc(sel);
    out.ids.resize(k);
    const float l0 = sel[out.ids[0]];
    float sum = 0.f;
    std::vector<float> e(k);
    for (int j = 0; j < k; ++j) sum += (e[j] = expf(sel[out.ids[j]] - l0));
    for (int j = 0; j < k; ++j) out.w.push_back(e[j] / sum);
  } else if (s.mode == ref::kModeSoftmaxTopk) {
    out.ids = rank_desc(sel);
    out.ids.resize(k);
    float mx = -INFINITY, sum = 0.f;
    for (int e = 0; e < N; ++e) mx = std::isnan(sel[e]) ? mx : std::max(mx, sel[e]);
    for (int e = 0; e < N; ++e) sum += expf(sel[e] - mx);
    float ssum = 0.f;
    for (int j = 0; j < k; ++j) {
      out.w.push_back(expf(sel[out.ids[j]] - mx) / sum);
      ssum += out.w.back();
    }
    if (s.flags & ref::kRenormalize)
      for (auto& w : out.w) w /= ssum;
  } else {
    std::vector<float> sc(N), c(N);
    for (int e = 0; e < N; ++e) {
      sc[e] = 1.0f / (1.0f + expf(-sel[e]));
      c[e] = sc[e] + (s.sel_bias ? s.sel_bias[e] : 0.f);
    }
    if (s.n_group > 1) {
      const int gs = N / s.n_group;
      std::vector<float> gscore(s.n_group);
      for (int g = 0; g < s.n_group; ++g) {
        std::vector<float> grp(c.begin() + g * gs, c.begin() + (g + 1) * gs);
        const std::vector<int> r = rank_desc(grp);
        gscore[g] = gs >= 2 ? grp[r[0]] + grp[r[1]] : grp[r[0]];
      }
      const std::vector<int> gr = rank_desc(gscore);
      // Only the boundary between the last kept group and the first dropped one matters.
      if (s.topk_group < s.n_group && near_pair(gscore[gr[s.topk_group - 1]], gscore[gr[s.topk_group]], false))
        out.near_tie = true;
      std::vector<bool> keep(s.n_group, false);
      for (int j = 0; j < s.topk_group; ++j) keep[gr[j]] = true;
      for (int e = 0; e < N; ++e)
        if (!keep[e / gs]) c[e] = -INFINITY;
    }
    const std::vector<int> r = rank_desc(c);
    auto same_inputs = [&](int a, int b) {
      return sel[a] == sel[b] && (s.sel_bias == nullptr || s.sel_bias[a] == s.sel_bias[b]);
    };
    for (int j = 0; j < k && j + 1 < N; ++j)
      if (near_pair(c[r[j]], c[r[j + 1]], same_inputs(r[j], r[j + 1]))) out.near_tie = true;
    out.ids.assign(r.begin(), r.begin() + k);
    float ssum = 0.f;
    for (int j = 0; j < k; ++j) {
      out.w.push_back(sc[out.ids[j]]);
      ssum += out.w.back();
    }
    for (auto& w : out.w) {
      if (s.flags & ref::kRenormalize) w = w / (ssum + 1e-20f);
      w *= s.scale;
    }
  }
  return out;
}

// The rule's own examples (tests/test_routing_ref.py), run on the CPU: checks this reference, no GPU needed.
inline bool ref_selftest() {
  int bad = 0;
  auto expect = [&](const char* what, const std::vector<int>& got, const std::vector<int>& want) {
    if (got != want) {
      fprintf(stderr, "ref selftest FAIL: %s\n", what);
      ++bad;
    }
  };
  const float nan = NAN, inf = INFINITY;
  const std::vector<float> row = {1.f, nan, 3.f, inf, nan, 3.f, -inf, 2.f};
  for (int mode = 0; mode < 3; ++mode) {
    Selection s;
    s.mode = mode;
    s.top_k = 6;
    s.flags = mode == 0 ? 0 : ref::kRenormalize;
    expect("NaN, then +inf, then descending, ties by id", ref_select(row.data(), 8, s).ids, {1, 4, 3, 2, 5, 7});
  }
  {  // grouped mask is -inf, not 0
    const std::vector<float> l = {5.f, 4.f, 3.f, 2.f, -8.f, -8.f, -8.f, -8.f};
    const std::vector<float> cb(8, -1.f);
    Selection s;
    s.mode = ref::kModeSigmoid;
    s.top_k = 3;
    s.n_group = 4;
    s.topk_group = 2;
    s.sel_bias = cb.data();
    expect("grouped mask -inf", ref_select(l.data(), 8, s).ids, {0, 1, 2});
  }
  {  // bf16 rounding merges 1 + 2^-9 with 1.0: the tie goes to the lower id
    const std::vector<float> l = {1.f, 1.f + 1.f / 512, -1.f, -2.f};
    for (int mode = 0; mode < 3; ++mode) {
      Selection s;
      s.mode = mode;
      s.top_k = 1;
      expect("fp32 picks expert 1", ref_select(l.data(), 4, s).ids, {1});
      s.flags = ref::kSelectBf16;
      expect("bf16 ties to expert 0", ref_select(l.data(), 4, s).ids, {0});
    }
  }
  {  // all equal: lowest ids; -0 and +0 tie
    const std::vector<float> l = {0.f, -0.f, 0.f, -0.f, 0.f, 0.f};
    Selection s;
    s.top_k = 4;
    expect("all equal", ref_select(l.data(), 6, s).ids, {0, 1, 2, 3});
  }
  if (bf16_round(1.f + 1.f / 512) != 1.f || bf16_round(1.f + 3.f / 512) != 1.f + 4.f / 512) {
    fprintf(stderr, "ref selftest FAIL: bf16 rounding\n");
    ++bad;
  }
  return bad == 0;
}

