// Standalone self-test (and benchmark) of the CUDA NA core, torch-free.
//
//   na_cuda_selftest            run every case, forward + backward, against a CPU fp64
//                               reference built on window.h; prints one line per case and
//                               "N passed, M failed"; exit code 1 on any failure.
//   na_cuda_selftest --bench    time forward / backward on the ANCHORS.md NA problems
//                               (--fwd-only: forward only).
//   na_cuda_selftest --filter S only cases whose name contains S.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "effattn/cuda/sm90_dispatch.cuh"
#include "effattn/na_cuda.h"
#include "effattn/window.h"

using effattn::AxisParams;
using effattn::AxisWindow;
using effattn::cuda::DType;
using effattn::cuda::NaParams;
using effattn::cuda::TensorStrides;

#define CUDA_CHECK(expr)                                                                  \
  do {                                                                                    \
    cudaError_t err__ = (expr);                                                           \
    if (err__ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorName(err__),      \
                   __FILE__, __LINE__, cudaGetErrorString(err__));                        \
      std::exit(2);                                                                       \
    }                                                                                     \
  } while (0)

namespace {

// ---------------------------------------------------------------------------------------
// Host helpers.

uint16_t to_bits(float x, DType dt) {
  if (dt == DType::kFloat16) return __half_as_ushort(__float2half_rn(x));
  return __bfloat16_as_ushort(__float2bfloat16_rn(x));
}
float from_bits(uint16_t b, DType dt) {
  if (dt == DType::kFloat16) return __half2float(__ushort_as_half(b));
  return __bfloat162float(__ushort_as_bfloat16(b));
}

struct Case {
  std::string name;
  int rank;
  int64_t L[3], K[3], dil[3], str[3];
  bool causal[3];
  int B, H, Hkv, D;
  DType dt;
  bool packed = false;    // q, k, v interleaved in one [B, tokens, 3, H, D] buffer
  bool use_dlse = false;  // feed a random gradient w.r.t. lse
};

struct Geometry {
  int rank;
  int64_t L[3];
  int64_t N;
  AxisParams ax[3];
};

Geometry make_geometry(const Case& c) {
  Geometry g;
  g.rank = c.rank;
  g.N = 1;
  for (int a = 0; a < 3; ++a) {
    if (a < c.rank) {
      g.L[a] = c.L[a];
      g.ax[a] = AxisParams{c.L[a], c.K[a], c.dil[a], c.str[a], c.causal[a]};
    } else {
      g.L[a] = 1;
      g.ax[a] = AxisParams{1, 1, 1, 1, false};
    }
    g.N *= g.L[a];
  }
  return g;
}

// Keys (linear token indices) attended by query token t, enumerated per axis via window.h.
void window_keys(const Geometry& g, int64_t t, std::vector<int64_t>& keys) {
  keys.clear();
  const int64_t x = t / (g.L[1] * g.L[2]), y = (t / g.L[2]) % g.L[1], z = t % g.L[2];
  const int64_t crd[3] = {x, y, z};
  AxisWindow w[3];
  for (int a = 0; a < 3; ++a) w[a] = effattn::axis_window(g.ax[a], crd[a]);
  for (int64_t i = w[0].start; i < w[0].end; ++i)
    for (int64_t j = w[1].start; j < w[1].end; ++j)
      for (int64_t k = w[2].start; k < w[2].end; ++k) {
        const int64_t kx = effattn::window_key(g.ax[0], w[0], i);
        const int64_t ky = effattn::window_key(g.ax[1], w[1], j);
        const int64_t kz = effattn::window_key(g.ax[2], w[2], k);
        keys.push_back((kx * g.L[1] + ky) * g.L[2] + kz);
      }
}

struct Ref {
  std::vector<double> o, lse, dq, dk, dv;
};

// q, k, v, dout as float (already rounded); layouts contiguous [B, N, H(kv), D].
Ref reference(const Case& c, const Geometry& g, const std::vector<float>& q,
              const std::vector<float>& k, const std::vector<float>& v,
              const std::vector<float>& dout, const std::vector<float>& dlse, double scale) {
  const int64_t B = c.B, N = g.N, H = c.H, Hkv = c.Hkv, D = c.D, grp = H / Hkv;
  Ref r;
  r.o.assign(B * N * H * D, 0.0);
  r.lse.assign(B * N * H, 0.0);
  r.dq.assign(B * N * H * D, 0.0);
  r.dk.assign(B * N * Hkv * D, 0.0);
  r.dv.assign(B * N * Hkv * D, 0.0);
  std::vector<int64_t> keys;
  std::vector<double> s, dp;
  for (int64_t t = 0; t < N; ++t) {
    window_keys(g, t, keys);
    const size_t nk = keys.size();
    s.resize(nk);
    dp.resize(nk);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t kvh = h / grp;
        const float* qi = &q[((b * N + t) * H + h) * D];
        const float* doi = &dout[((b * N + t) * H + h) * D];
        double mx = -INFINITY;
        for (size_t j = 0; j < nk; ++j) {
          const float* kj = &k[((b * N + keys[j]) * Hkv + kvh) * D];
          double acc = 0;
          for (int64_t d = 0; d < D; ++d) acc += double(qi[d]) * double(kj[d]);
          s[j] = acc * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (size_t j = 0; j < nk; ++j) sum += std::exp(s[j] - mx);
        const double lse = mx + std::log(sum);
        r.lse[(b * N + t) * H + h] = lse;
        double* oi = &r.o[((b * N + t) * H + h) * D];
        for (size_t j = 0; j < nk; ++j) {
          s[j] = std::exp(s[j] - lse);  // p
          const float* vj = &v[((b * N + keys[j]) * Hkv + kvh) * D];
          for (int64_t d = 0; d < D; ++d) oi[d] += s[j] * double(vj[d]);
        }
        // Backward.
        double delta = 0;
        for (size_t j = 0; j < nk; ++j) {
          const float* vj = &v[((b * N + keys[j]) * Hkv + kvh) * D];
          double acc = 0;
          for (int64_t d = 0; d < D; ++d) acc += double(doi[d]) * double(vj[d]);
          dp[j] = acc;
          delta += s[j] * acc;
        }
        if (!dlse.empty()) delta -= dlse[(b * N + t) * H + h];
        double* dqi = &r.dq[((b * N + t) * H + h) * D];
        for (size_t j = 0; j < nk; ++j) {
          const double ds = s[j] * (dp[j] - delta);
          const int64_t kb = ((b * N + keys[j]) * Hkv + kvh) * D;
          for (int64_t d = 0; d < D; ++d) {
            dqi[d] += scale * ds * double(k[kb + d]);
            r.dk[kb + d] += scale * ds * double(qi[d]);
            r.dv[kb + d] += s[j] * double(doi[d]);
          }
        }
      }
  }
  return r;
}

struct CmpResult {
  double err = 0, maxref = 0;
  bool ok = true;
};

// Compares a GPU tensor (bits or float) in layout (strided) to a contiguous reference.
template <typename Get>
CmpResult compare(const std::vector<double>& ref, Get get, double rtol, double atol) {
  CmpResult r;
  for (size_t i = 0; i < ref.size(); ++i) r.maxref = std::max(r.maxref, std::fabs(ref[i]));
  for (size_t i = 0; i < ref.size(); ++i) {
    const double g = get(i);
    const double e = std::fabs(g - ref[i]);
    if (!(e == e) || std::isinf(g)) {
      r.err = INFINITY;
      break;
    }
    r.err = std::max(r.err, e);
  }
  r.ok = r.err <= rtol * r.maxref + atol;
  return r;
}

TensorStrides contiguous(const Geometry& g, int64_t heads, int64_t d) {
  TensorStrides s;
  s.head = d;
  s.token[2] = heads * d;
  s.token[1] = g.L[2] * s.token[2];
  s.token[0] = g.L[1] * s.token[1];
  s.batch = g.L[0] * s.token[0];
  return s;
}

bool run_case(const Case& c, uint64_t seed) {
  const Geometry g = make_geometry(c);
  const int64_t B = c.B, N = g.N, H = c.H, Hkv = c.Hkv, D = c.D;
  const double scale = 1.0 / std::sqrt(double(D));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);

  auto make = [&](int64_t n, std::vector<float>& f, std::vector<uint16_t>& bits) {
    f.resize(n);
    bits.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      bits[i] = to_bits(nd(rng), c.dt);
      f[i] = from_bits(bits[i], c.dt);
    }
  };
  std::vector<float> q, k, v, dout, dlse;
  std::vector<uint16_t> qb, kb, vb, dob;
  make(B * N * H * D, q, qb);
  make(B * N * Hkv * D, k, kb);
  make(B * N * Hkv * D, v, vb);
  make(B * N * H * D, dout, dob);
  if (c.use_dlse) {
    dlse.resize(B * N * H);
    for (auto& x : dlse) x = 0.5f * nd(rng);
  }

  const Ref ref = reference(c, g, q, k, v, dout, dlse, scale);

  // Device buffers.
  const TensorStrides sq = contiguous(g, H, D), skv = contiguous(g, Hkv, D);
  const TensorStrides slse = contiguous(g, H, 1);
  uint16_t *dq_in = nullptr, *dk_in = nullptr, *dv_in = nullptr, *d_packed = nullptr;
  TensorStrides pq = sq, pk = skv, pv = skv;
  if (c.packed) {
    // [B, tokens, 3, H, D]
    const TensorStrides sp = contiguous(g, 3 * H, D);
    CUDA_CHECK(cudaMalloc(&d_packed, sizeof(uint16_t) * B * N * 3 * H * D));
    std::vector<uint16_t> host(B * N * 3 * H * D);
    for (int64_t bt = 0; bt < B * N; ++bt)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d) {
          host[((bt * 3 + 0) * H + h) * D + d] = qb[(bt * H + h) * D + d];
          host[((bt * 3 + 1) * H + h) * D + d] = kb[(bt * H + h) * D + d];
          host[((bt * 3 + 2) * H + h) * D + d] = vb[(bt * H + h) * D + d];
        }
    CUDA_CHECK(cudaMemcpy(d_packed, host.data(), host.size() * 2, cudaMemcpyHostToDevice));
    dq_in = d_packed;
    dk_in = d_packed + H * D;
    dv_in = d_packed + 2 * H * D;
    pq = pk = pv = sp;
  } else {
    CUDA_CHECK(cudaMalloc(&dq_in, qb.size() * 2));
    CUDA_CHECK(cudaMalloc(&dk_in, kb.size() * 2));
    CUDA_CHECK(cudaMalloc(&dv_in, vb.size() * 2));
    CUDA_CHECK(cudaMemcpy(dq_in, qb.data(), qb.size() * 2, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dk_in, kb.data(), kb.size() * 2, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dv_in, vb.data(), vb.size() * 2, cudaMemcpyHostToDevice));
  }
  uint16_t *d_o, *d_do, *d_dq, *d_dk, *d_dv;
  float *d_lse, *d_dlse = nullptr;
  CUDA_CHECK(cudaMalloc(&d_o, qb.size() * 2));
  CUDA_CHECK(cudaMalloc(&d_do, qb.size() * 2));
  CUDA_CHECK(cudaMalloc(&d_dq, qb.size() * 2));
  CUDA_CHECK(cudaMalloc(&d_dk, kb.size() * 2));
  CUDA_CHECK(cudaMalloc(&d_dv, vb.size() * 2));
  CUDA_CHECK(cudaMalloc(&d_lse, sizeof(float) * B * N * H));
  CUDA_CHECK(cudaMemcpy(d_do, dob.data(), dob.size() * 2, cudaMemcpyHostToDevice));
  if (c.use_dlse) {
    CUDA_CHECK(cudaMalloc(&d_dlse, sizeof(float) * dlse.size()));
    CUDA_CHECK(cudaMemcpy(d_dlse, dlse.data(), sizeof(float) * dlse.size(), cudaMemcpyHostToDevice));
  }
  // Poison every output.
  CUDA_CHECK(cudaMemset(d_o, 0xFF, qb.size() * 2));
  CUDA_CHECK(cudaMemset(d_lse, 0xFF, sizeof(float) * B * N * H));
  CUDA_CHECK(cudaMemset(d_dq, 0xFF, qb.size() * 2));
  CUDA_CHECK(cudaMemset(d_dk, 0xFF, kb.size() * 2));
  CUDA_CHECK(cudaMemset(d_dv, 0xFF, vb.size() * 2));

  NaParams p;
  p.dtype = c.dt;
  p.rank = c.rank;
  p.batch = B;
  for (int a = 0; a < c.rank; ++a) p.axes[a] = g.ax[a];
  p.heads = H;
  p.kv_heads = Hkv;
  p.head_dim = D;
  p.scale = static_cast<float>(scale);
  p.q = dq_in;
  p.k = dk_in;
  p.v = dv_in;
  p.o = d_o;
  p.lse = d_lse;
  p.q_strides = pq;
  p.k_strides = pk;
  p.v_strides = pv;
  p.o_strides = sq;
  p.lse_strides = slse;
  p.dout = d_do;
  p.dlse = d_dlse;
  p.do_strides = sq;
  p.dlse_strides = slse;
  p.dq = d_dq;
  p.dk = d_dk;
  p.dv = d_dv;
  p.dq_strides = sq;
  p.dk_strides = skv;
  p.dv_strides = skv;
  const size_t ws_bytes = effattn::cuda::na_backward_workspace_bytes(p);
  void* d_ws = nullptr;
  CUDA_CHECK(cudaMalloc(&d_ws, ws_bytes));
  CUDA_CHECK(cudaMemset(d_ws, 0xFF, ws_bytes));
  p.workspace = d_ws;
  p.workspace_bytes = ws_bytes;

  const char* why = effattn::cuda::na_cuda_unsupported_reason(p, true);
  if (why != nullptr) {
    std::printf("FAIL %-44s unsupported: %s\n", c.name.c_str(), why);
    return false;
  }
  CUDA_CHECK(effattn::cuda::na_forward(p, nullptr));
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaDeviceSynchronize());
  CUDA_CHECK(effattn::cuda::na_backward(p, nullptr));
  CUDA_CHECK(cudaGetLastError());
  CUDA_CHECK(cudaDeviceSynchronize());

  std::vector<uint16_t> o_h(qb.size()), dq_h(qb.size()), dk_h(kb.size()), dv_h(vb.size());
  std::vector<float> lse_h(B * N * H);
  CUDA_CHECK(cudaMemcpy(o_h.data(), d_o, o_h.size() * 2, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(dq_h.data(), d_dq, dq_h.size() * 2, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(dk_h.data(), d_dk, dk_h.size() * 2, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(dv_h.data(), d_dv, dv_h.size() * 2, cudaMemcpyDeviceToHost));
  CUDA_CHECK(cudaMemcpy(lse_h.data(), d_lse, lse_h.size() * 4, cudaMemcpyDeviceToHost));

  const bool bf = c.dt == DType::kBFloat16;
  const double rt_o = bf ? 2e-2 : 4e-3;
  const double rt_g = bf ? 4e-2 : 8e-3;
  const double at = 1e-5;
  auto bits = [&](const std::vector<uint16_t>& vv) {
    return [&vv, &c](size_t i) { return double(from_bits(vv[i], c.dt)); };
  };
  const CmpResult ro = compare(ref.o, bits(o_h), rt_o, at);
  const CmpResult rl = compare(ref.lse, [&](size_t i) { return double(lse_h[i]); }, 1e-4, 1e-3);
  const CmpResult rq = compare(ref.dq, bits(dq_h), rt_g, at);
  const CmpResult rk = compare(ref.dk, bits(dk_h), rt_g, at);
  const CmpResult rv = compare(ref.dv, bits(dv_h), rt_g, at);
  const bool ok = ro.ok && rl.ok && rq.ok && rk.ok && rv.ok;
  auto rel = [](const CmpResult& r) { return r.maxref > 0 ? r.err / r.maxref : r.err; };
  std::printf("%s %-44s %s D%-3d rel.err o %.2e%s lse %.1e%s dq %.2e%s dk %.2e%s dv %.2e%s\n",
              ok ? "PASS" : "FAIL", c.name.c_str(), bf ? "bf16" : "fp16", c.D, rel(ro),
              ro.ok ? "" : "!", rl.err, rl.ok ? "" : "!", rel(rq), rq.ok ? "" : "!", rel(rk),
              rk.ok ? "" : "!", rel(rv), rv.ok ? "" : "!");
  std::fflush(stdout);

  if (c.packed) {
    CUDA_CHECK(cudaFree(d_packed));
  } else {
    CUDA_CHECK(cudaFree(dq_in));
    CUDA_CHECK(cudaFree(dk_in));
    CUDA_CHECK(cudaFree(dv_in));
  }
  CUDA_CHECK(cudaFree(d_o));
  CUDA_CHECK(cudaFree(d_do));
  CUDA_CHECK(cudaFree(d_dq));
  CUDA_CHECK(cudaFree(d_dk));
  CUDA_CHECK(cudaFree(d_dv));
  CUDA_CHECK(cudaFree(d_lse));
  CUDA_CHECK(cudaFree(d_ws));
  if (d_dlse) CUDA_CHECK(cudaFree(d_dlse));
  return ok;
}

Case mk(std::string name, int rank, std::vector<int64_t> L, std::vector<int64_t> K,
        std::vector<int64_t> dil, std::vector<int64_t> str, std::vector<int> causal, int B,
        int H, int Hkv, int D, DType dt) {
  Case c;
  c.name = std::move(name);
  c.rank = rank;
  for (int a = 0; a < 3; ++a) {
    c.L[a] = a < rank ? L[a] : 1;
    c.K[a] = a < rank ? K[a] : 1;
    c.dil[a] = a < rank && !dil.empty() ? dil[a] : 1;
    c.str[a] = a < rank && !str.empty() ? str[a] : 1;
    c.causal[a] = a < rank && !causal.empty() ? causal[a] != 0 : false;
  }
  c.B = B;
  c.H = H;
  c.Hkv = Hkv;
  c.D = D;
  c.dt = dt;
  return c;
}

std::vector<Case> all_cases() {
  std::vector<Case> cs;
  const DType dts[2] = {DType::kBFloat16, DType::kFloat16};
  for (DType dt : dts) {
    // 1D
    cs.push_back(mk("1d L77 K7", 1, {77}, {7}, {}, {}, {}, 2, 2, 2, 64, dt));
    cs.push_back(mk("1d L77 K8 causal", 1, {77}, {8}, {}, {}, {1}, 2, 2, 2, 32, dt));
    cs.push_back(mk("1d L1000 K33", 1, {1000}, {33}, {}, {}, {}, 2, 2, 2, 128, dt));
    cs.push_back(mk("1d L1000 K31 d3 s2", 1, {1000}, {31}, {3}, {2}, {}, 2, 2, 2, 64, dt));
    cs.push_back(mk("1d L1000 K64 d2 s3 causal", 1, {1000}, {64}, {2}, {3}, {1}, 2, 2, 1, 128, dt));
    cs.push_back(mk("1d L1000 K200 (multi-tile windows)", 1, {1000}, {200}, {}, {}, {}, 2, 2, 2, 32, dt));
    cs.push_back(mk("1d L3 K2 tiny", 1, {3}, {2}, {}, {}, {}, 2, 2, 2, 64, dt));
    cs.push_back(mk("1d L150 K150 == input", 1, {150}, {150}, {}, {}, {}, 2, 2, 2, 64, dt));
    // 1D, dilation 1, D 64 / 128: the Hopper forward's TMA producer (EFFATTN_SM90_TMA=0: cp.async).
    // L not a multiple of the 128-row tiles, windows clipped at both ends, odd tile counts.
    cs.push_back(mk("1d L1337 K257 (tma, clipped both ends)", 1, {1337}, {257}, {}, {}, {}, 2, 2, 2, 128, dt));
    cs.push_back(mk("1d L129 K3 (tma, 1-row last tile)", 1, {129}, {3}, {}, {}, {}, 3, 2, 2, 64, dt));
    cs.push_back(mk("1d L700 K129 s2 causal (tma)", 1, {700}, {129}, {}, {2}, {1}, 2, 2, 2, 64, dt));
    cs.push_back(mk("1d L517 K100 GQA H4 Hkv2 (tma)", 1, {517}, {100}, {}, {}, {}, 2, 4, 2, 128, dt));
    cs.push_back(mk("1d L333 K333 == input (tma)", 1, {333}, {333}, {}, {}, {}, 1, 3, 1, 128, dt));
    Case pk1 = mk("1d L1000 K65 packed qkv (tma strides)", 1, {1000}, {65}, {}, {}, {}, 2, 2, 2, 64, dt);
    pk1.packed = true;
    cs.push_back(pk1);
    // More 128-row tiles than SMs: persistent CTAs with EFFATTN_SM90_PERSIST=1 (else one per tile),
    // the K/V ring and its phases carried across tiles of different heads and batches.
    cs.push_back(mk("1d L2500 K129 GQA H4 Hkv2 (persistent)", 1, {2500}, {129}, {}, {}, {}, 2, 4, 2, 128, dt));
    cs.push_back(mk("1d L5000 K65 H4 (persistent)", 1, {5000}, {65}, {}, {}, {}, 2, 4, 4, 128, dt));
    cs.push_back(mk("1d L8192 K7 H16 (persistent, ~16 tiles per CTA)", 1, {8192}, {7}, {}, {}, {}, 2, 16, 16, 64, dt));
    // D = 128, pairs of key tiles (EFFATTN_SM90_BWD=fused128): odd key-tile counts per
    // dilation group (the last pair's second tile is empty), key tiles whose query ranges
    // differ (query tiles visited by one half only).
    cs.push_back(mk("1d L330 K45 d2 (odd key tiles per group)", 1, {330}, {45}, {2}, {}, {}, 2, 2, 2, 128, dt));
    cs.push_back(mk("1d L200 K9 causal (pairs: one-half query tiles)", 1, {200}, {9}, {}, {}, {1}, 1, 2, 1, 128, dt));
    // 2D
    cs.push_back(mk("2d 45x37 K11x9 d1x2 (pairs on the last axis)", 2, {45, 37}, {11, 9}, {1, 2}, {}, {}, 1, 2, 2, 128, dt));
    cs.push_back(mk("2d 13x17 K5x7", 2, {13, 17}, {5, 7}, {}, {}, {}, 2, 2, 2, 32, dt));
    cs.push_back(mk("2d 13x17 K13x17 == input", 2, {13, 17}, {13, 17}, {}, {}, {}, 2, 2, 2, 64, dt));
    cs.push_back(mk("2d 40x29 K7x6 d2x3 s2x3", 2, {40, 29}, {7, 6}, {2, 3}, {2, 3}, {}, 2, 2, 2, 64, dt));
    cs.push_back(mk("2d 40x29 K9x9 causal x", 2, {40, 29}, {9, 9}, {}, {}, {1, 0}, 2, 2, 2, 128, dt));
    cs.push_back(mk("2d 40x29 K8x10 causal xy s2x2", 2, {40, 29}, {8, 10}, {}, {2, 2}, {1, 1}, 2, 2, 2, 32, dt));
    cs.push_back(mk("2d 40x29 K20x9 d2x3 (K*d=L)", 2, {40, 29}, {20, 9}, {2, 3}, {}, {}, 2, 2, 2, 64, dt));
    cs.push_back(mk("2d 40x29 K7x7 GQA H4 Hkv2", 2, {40, 29}, {7, 7}, {}, {}, {}, 2, 4, 2, 64, dt));
    cs.push_back(mk("2d 40x29 K7x7 MQA H4 Hkv1", 2, {40, 29}, {7, 7}, {}, {}, {}, 2, 4, 1, 128, dt));
    // 3D
    cs.push_back(mk("3d 7x9x11 K3x5x5", 3, {7, 9, 11}, {3, 5, 5}, {}, {}, {}, 2, 2, 2, 64, dt));
    cs.push_back(mk("3d 7x9x11 K4x3x5 d1x2x2 s2", 3, {7, 9, 11}, {4, 3, 5}, {1, 2, 2}, {2, 2, 2}, {}, 2, 2, 2, 32, dt));
    cs.push_back(mk("3d 7x9x11 K3x4x6 causal z", 3, {7, 9, 11}, {3, 4, 6}, {}, {}, {0, 0, 1}, 2, 2, 2, 128, dt));
    cs.push_back(mk("3d 7x9x11 K3x3x3 d2x3x3 causal x GQA", 3, {7, 9, 11}, {3, 3, 3}, {2, 3, 3}, {}, {1, 0, 0}, 2, 4, 2, 64, dt));
    cs.push_back(mk("3d 7x9x11 K7x9x11 == input", 3, {7, 9, 11}, {7, 9, 11}, {}, {}, {}, 2, 1, 1, 32, dt));
    // strides / lse gradient
    Case pk = mk("2d 13x17 K5x5 packed qkv", 2, {13, 17}, {5, 5}, {}, {}, {}, 2, 2, 2, 64, dt);
    pk.packed = true;
    cs.push_back(pk);
    Case gl = mk("1d L300 K17 s4 + dlse", 1, {300}, {17}, {}, {4}, {}, 2, 2, 2, 128, dt);
    gl.use_dlse = true;
    cs.push_back(gl);
    Case gl3 = mk("3d 7x9x11 K3x5x5 packed + dlse", 3, {7, 9, 11}, {3, 5, 5}, {}, {}, {}, 2, 2, 2, 128, dt);
    gl3.use_dlse = true;
    gl3.packed = true;
    cs.push_back(gl3);
  }
  return cs;
}

// ---------------------------------------------------------------------------------------
// Benchmark.

__global__ void fill_random(uint16_t* p, int64_t n, uint32_t seed, int is_bf16) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  uint32_t x = static_cast<uint32_t>(i) * 2654435761u ^ seed;
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  const float f = (static_cast<float>(x & 0xFFFFFF) / 16777216.f - 0.5f) * 3.4f;  // ~unit var
  p[i] = is_bf16 ? __bfloat16_as_ushort(__float2bfloat16_rn(f)) : __half_as_ushort(__float2half_rn(f));
}

void fill(uint16_t* p, int64_t n, uint32_t seed) {
  fill_random<<<static_cast<unsigned>((n + 255) / 256), 256>>>(p, n, seed, 1);
  CUDA_CHECK(cudaGetLastError());
}

struct BenchCase {
  const char* name;
  int rank;
  int64_t L[3], K[3];
  int B, H, D;
  double flex_fwd_ms, flex_bwd_ms;
};

template <typename F>
double time_median(F&& f, int warm, int iters) {
  for (int i = 0; i < warm; ++i) f();
  CUDA_CHECK(cudaDeviceSynchronize());
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int i = 0; i < iters; ++i) {
    CUDA_CHECK(cudaEventRecord(e0));
    f();
    CUDA_CHECK(cudaEventRecord(e1));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  CUDA_CHECK(cudaEventDestroy(e0));
  CUDA_CHECK(cudaEventDestroy(e1));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

int bench(const std::string& filter, bool fwd_only) {
  const BenchCase cases[] = {
      {"1D L32768 K2049 B2 H16 D128", 1, {32768, 1, 1}, {2049, 1, 1}, 2, 16, 128, 2.99, 8.17},
      {"2D 128x128 K13 B1 H16 D128", 2, {128, 128, 1}, {13, 13, 1}, 1, 16, 128, 0.906, 2.30},
      {"2D 128x128 K31 B1 H16 D128", 2, {128, 128, 1}, {31, 31, 1}, 1, 16, 128, 2.06, 5.22},
      {"2D 56x56 K7 B64 H4 D32", 2, {56, 56, 1}, {7, 7, 1}, 64, 4, 32, 1.28, 3.32},
      {"3D 16x32x32 K7 B2 H16 D64", 3, {16, 32, 32}, {7, 7, 7}, 2, 16, 64, 2.61, 6.38},
      {"3D 30x48x80 K18x24x24 B1 H24 D128", 3, {30, 48, 80}, {18, 24, 24}, 1, 24, 128, 279, 590},
  };
  std::printf("%-38s %10s %9s %8s | %10s %9s %8s | tiles q/k\n", "problem (bf16)", "fwd ms",
              "TF/s", "vs flex", "bwd ms", "TF/s", "vs flex");
  for (const BenchCase& bc : cases) {
    if (!filter.empty() && std::string(bc.name).find(filter) == std::string::npos) continue;
    Case c = mk(bc.name, bc.rank, {bc.L[0], bc.L[1], bc.L[2]}, {bc.K[0], bc.K[1], bc.K[2]}, {}, {},
                {}, bc.B, bc.H, bc.H, bc.D, DType::kBFloat16);
    const Geometry g = make_geometry(c);
    const int64_t nq = int64_t(bc.B) * g.N * bc.H * bc.D;
    uint16_t *q, *k, *v, *o, *dout, *dq, *dk, *dv;
    float* lse;
    CUDA_CHECK(cudaMalloc(&q, nq * 2));
    CUDA_CHECK(cudaMalloc(&k, nq * 2));
    CUDA_CHECK(cudaMalloc(&v, nq * 2));
    CUDA_CHECK(cudaMalloc(&o, nq * 2));
    CUDA_CHECK(cudaMalloc(&dout, nq * 2));
    CUDA_CHECK(cudaMalloc(&dq, nq * 2));
    CUDA_CHECK(cudaMalloc(&dk, nq * 2));
    CUDA_CHECK(cudaMalloc(&dv, nq * 2));
    CUDA_CHECK(cudaMalloc(&lse, sizeof(float) * bc.B * g.N * bc.H));
    fill(q, nq, 1);
    fill(k, nq, 2);
    fill(v, nq, 3);
    fill(dout, nq, 4);
    NaParams p;
    p.dtype = DType::kBFloat16;
    p.rank = bc.rank;
    p.batch = bc.B;
    for (int a = 0; a < bc.rank; ++a) p.axes[a] = g.ax[a];
    p.heads = p.kv_heads = bc.H;
    p.head_dim = bc.D;
    p.scale = 1.f / std::sqrt(float(bc.D));
    const TensorStrides s = contiguous(g, bc.H, bc.D), sl = contiguous(g, bc.H, 1);
    p.q = q; p.k = k; p.v = v; p.o = o; p.lse = lse; p.dout = dout;
    p.dq = dq; p.dk = dk; p.dv = dv;
    p.q_strides = p.k_strides = p.v_strides = p.o_strides = p.do_strides = s;
    p.dq_strides = p.dk_strides = p.dv_strides = s;
    p.lse_strides = p.dlse_strides = sl;
    p.workspace_bytes = effattn::cuda::na_backward_workspace_bytes(p);
    CUDA_CHECK(cudaMalloc(&p.workspace, p.workspace_bytes));
    const char* why = effattn::cuda::na_cuda_unsupported_reason(p, true);
    if (why) {
      std::printf("%-38s unsupported: %s\n", bc.name, why);
      continue;
    }
    const double fwd = time_median([&] { CUDA_CHECK(effattn::cuda::na_forward(p, nullptr)); }, 3, 20);
    const double bwd = fwd_only ? 0.0 : time_median([&] { CUDA_CHECK(effattn::cuda::na_backward(p, nullptr)); }, 3, 20);
    double window = 1;
    for (int a = 0; a < bc.rank; ++a) window *= double(bc.K[a]);
    const double flops = 4.0 * bc.B * bc.H * double(g.N) * window * bc.D;
    const effattn::cuda::NaTileShape tf = effattn::cuda::na_choose_tiles(p, 64, 64);
    std::printf("%-38s %10.3f %9.1f %7.2fx | %10.3f %9.1f %7.2fx | %dx%dx%d/%dx%dx%d\n", bc.name,
                fwd, flops / fwd * 1e-9, bc.flex_fwd_ms / fwd, bwd, 2.5 * flops / bwd * 1e-9,
                bc.flex_bwd_ms / bwd, 1 << tf.q_log2[0], 1 << tf.q_log2[1], 1 << tf.q_log2[2],
                1 << tf.k_log2[0], 1 << tf.k_log2[1], 1 << tf.k_log2[2]);
    std::fflush(stdout);
    for (void* ptr : {(void*)q, (void*)k, (void*)v, (void*)o, (void*)dout, (void*)dq, (void*)dk,
                      (void*)dv, (void*)lse, p.workspace})
      CUDA_CHECK(cudaFree(ptr));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  bool do_bench = false, fwd_only = false;
  std::string filter;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--bench")) do_bench = true;
    else if (!std::strcmp(argv[i], "--fwd-only")) fwd_only = true;
    else if (!std::strcmp(argv[i], "--filter") && i + 1 < argc) filter = argv[++i];
    else {
      std::fprintf(stderr, "usage: %s [--bench [--fwd-only]] [--filter SUBSTRING]\n", argv[0]);
      return 2;
    }
  }
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  std::printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
  {
    // Hopper forward, 1D without dilation, D 64 / 128: TMA producer unless EFFATTN_SM90_TMA=0,
    // persistent CTAs with EFFATTN_SM90_PERSIST=1.
    const bool tma_on = effattn::cuda::sm90_tma_enabled();
    const bool per_on = tma_on && effattn::cuda::sm90_persist_enabled();
    std::printf("SM90 forward 1D producer: %s%s\n", tma_on ? "tma" : "cp.async", per_on ? " + persistent" : "");
  }
  {
    // Hopper head dims 64 / 128: fused dK/dV/dQ backward unless EFFATTN_SM90_BWD=split; at
    // head dim 128 with 128-key CTAs on 1D (default), everywhere (fused128) or nowhere (fused).
    const bool on1d = effattn::cuda::sm90_bwd_fused128(true), on2d = effattn::cuda::sm90_bwd_fused128(false);
    const char* path = !effattn::cuda::sm90_bwd_fused() ? "split"
                       : on2d                           ? "fused128 (D128, every rank; fused at D64)"
                       : on1d                           ? "fused128 on 1D D128, fused elsewhere"
                                                        : "fused";
    // fused128's dQ: tile-contiguous accumulator + one bulk reduction per warpgroup and tile
    // (default) or red.global atomics (EFFATTN_SM90_DQ=atomics).
    std::printf("SM90 backward path: %s; fused128 dQ: %s\n", path,
                effattn::cuda::sm90_bwd_dq_tiled() ? "tile-contiguous bulk reductions" : "red.global atomics");
  }
  if (do_bench) return bench(filter, fwd_only);

  int passed = 0, failed = 0;
  uint64_t seed = 1234;
  for (const Case& c : all_cases()) {
    if (!filter.empty() && c.name.find(filter) == std::string::npos) continue;
    if (run_case(c, seed++)) ++passed; else ++failed;
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
