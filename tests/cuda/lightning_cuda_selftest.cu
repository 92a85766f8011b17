// Standalone self-test of the CUDA lightning-attention kernels (torch-free): random inputs,
// poisoned outputs, comparison with an fp64 CPU recurrence for o, the final state, dq, dk, dv
// and d_initial_state, and decode against one recurrence step. Every case runs once per
// implementation (passes v1, v2, v3 (D = 128 only: sm_90a wgmma; elsewhere the launcher runs v2
// for it and a NOTE line says so); decode v1, v2, v3), each checked against the reference, and
// prints how far the newer results lie from v1's. One line per (case, implementation), then
// "N passed, M failed". `--bench` adds, per implementation, median timings of forward and
// backward on the ANCHORS.md problems (with the v2-vs-v1 difference on those problems) and
// the decode bandwidth.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "effattn/cuda/lightning_kernels.cuh"  // DTypeKernels::v3_usable
#include "effattn/lightning_cuda.h"

using effattn::cuda::LightningDecodeParams;
using effattn::cuda::LightningDType;
using effattn::cuda::LightningParams;
using effattn::cuda::LightningStrides;

#define CHECK_CUDA(x)                                                                       \
  do {                                                                                      \
    cudaError_t e_ = (x);                                                                   \
    if (e_ != cudaSuccess) {                                                                \
      std::fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorString(e_), __FILE__, \
                   __LINE__, #x);                                                           \
      std::exit(2);                                                                         \
    }                                                                                       \
  } while (0)

namespace {

std::mt19937_64 rng(1234);

uint16_t to_bits(float x, bool half) {
  if (half) {
    const __half_raw r = __half(__float2half_rn(x));
    return r.x;
  }
  const __nv_bfloat16_raw r = __nv_bfloat16(__float2bfloat16_rn(x));
  return r.x;
}

float from_bits(uint16_t b, bool half) {
  if (half) {
    __half_raw r;
    r.x = b;
    return __half2float(__half(r));
  }
  __nv_bfloat16_raw r;
  r.x = b;
  return __bfloat162float(__nv_bfloat16(r));
}

// n uniform values in [-amp, amp] (a hash of the index and the seed) as fp16 or bf16 bits.
__global__ void fill_uniform(uint16_t* dst, size_t n, uint64_t seed, float amp, bool half) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    const float val = amp * (static_cast<float>(x >> 40) * (2.0f / 16777216.0f) - 1.0f);
    dst[i] = half ? __half_as_ushort(__float2half_rn(val)) : __bfloat16_as_ushort(__float2bfloat16_rn(val));
  }
}

// A [rows, width] tensor of 16-bit values: host bits, their float values, a device copy.
struct Half16 {
  std::vector<uint16_t> bits;
  std::vector<double> val;
  void* dev = nullptr;
  void random(size_t n, double sd, bool half) {
    std::normal_distribution<double> nd(0.0, sd);
    bits.resize(n);
    val.resize(n);
    for (size_t i = 0; i < n; ++i) {
      bits[i] = to_bits(static_cast<float>(nd(rng)), half);
      val[i] = from_bits(bits[i], half);
    }
    CHECK_CUDA(cudaMalloc(&dev, n * 2));
    CHECK_CUDA(cudaMemcpy(dev, bits.data(), n * 2, cudaMemcpyHostToDevice));
  }
  // Cheap uniform values (sd-matched), generated on the device, no host copy: for the large
  // benchmark tensors.
  void fast_random(size_t n, double sd, bool half) {
    CHECK_CUDA(cudaMalloc(&dev, n * 2));
    fill_uniform<<<1024, 256>>>(static_cast<uint16_t*>(dev), n, rng(), static_cast<float>(sd * 1.7320508), half);
    CHECK_CUDA(cudaGetLastError());
  }
  void poisoned(size_t n) {
    CHECK_CUDA(cudaMalloc(&dev, n * 2));
    CHECK_CUDA(cudaMemset(dev, 0xFF, n * 2));
  }
  std::vector<double> fetch(size_t n, bool half) {
    bits.resize(n);
    CHECK_CUDA(cudaMemcpy(bits.data(), dev, n * 2, cudaMemcpyDeviceToHost));
    std::vector<double> out(n);
    for (size_t i = 0; i < n; ++i) out[i] = from_bits(bits[i], half);
    return out;
  }
  ~Half16() {
    if (dev) cudaFree(dev);
  }
};

struct F32 {
  std::vector<float> host;
  float* dev = nullptr;
  void random(size_t n, double sd) {
    std::normal_distribution<double> nd(0.0, sd);
    host.resize(n);
    for (auto& x : host) x = static_cast<float>(nd(rng));
    CHECK_CUDA(cudaMalloc(&dev, n * 4));
    CHECK_CUDA(cudaMemcpy(dev, host.data(), n * 4, cudaMemcpyHostToDevice));
  }
  void poisoned(size_t n) {
    CHECK_CUDA(cudaMalloc(&dev, n * 4));
    CHECK_CUDA(cudaMemset(dev, 0xFF, n * 4));
  }
  std::vector<double> fetch(size_t n) {
    host.resize(n);
    CHECK_CUDA(cudaMemcpy(host.data(), dev, n * 4, cudaMemcpyDeviceToHost));
    return std::vector<double>(host.begin(), host.end());
  }
  ~F32() {
    if (dev) cudaFree(dev);
  }
};

// rel L2 error (inf when any value is not finite).
double rel_err(const std::vector<double>& a, const std::vector<double>& r) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    num += (a[i] - r[i]) * (a[i] - r[i]);
    den += r[i] * r[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

struct Case {
  bool half;
  int D;
  int B, N, H;
  bool init;
  std::vector<int64_t> cu;  // empty: no varlen
  int64_t seg_chunks;
};

// fp64 recurrence (forward and backward) on the rounded inputs, mirroring csrc/cpu/lightning_cpu.cpp.
struct Reference {
  std::vector<double> o, fin, dq, dk, dv, ds0;
};

Reference reference(const Case& c, const std::vector<double>& q, const std::vector<double>& k,
                    const std::vector<double>& v, const std::vector<double>& dout,
                    const std::vector<float>& slope, const std::vector<float>* s0,
                    const std::vector<float>& dfin, double scale) {
  const int H = c.H, D = c.D, E = c.D, N = c.N;
  const int64_t S = c.cu.empty() ? c.B : static_cast<int64_t>(c.cu.size()) - 1;
  Reference R;
  const size_t tok = static_cast<size_t>(c.B) * N * H;
  R.o.assign(tok * E, 0);
  R.dq.assign(tok * D, 0);
  R.dk.assign(tok * D, 0);
  R.dv.assign(tok * E, 0);
  R.fin.assign(S * H * D * E, 0);
  R.ds0.assign(S * H * D * E, 0);
  std::vector<double> St(D * E), G(D * E);
  for (int64_t s = 0; s < S; ++s) {
    const int64_t b = c.cu.empty() ? s : 0, t0 = c.cu.empty() ? 0 : c.cu[s];
    const int64_t len = c.cu.empty() ? N : c.cu[s + 1] - c.cu[s];
    for (int h = 0; h < H; ++h) {
      const double l = std::exp(-static_cast<double>(slope[h]));
      const size_t so = (s * H + h) * static_cast<size_t>(D * E);
      for (int i = 0; i < D * E; ++i) St[i] = s0 ? (*s0)[so + i] : 0.0;
      for (int64_t t = t0; t < t0 + len; ++t) {
        const size_t row = (b * N + t) * H + h;
        for (int d = 0; d < D; ++d)
          for (int e = 0; e < E; ++e) St[d * E + e] = l * St[d * E + e] + k[row * D + d] * v[row * E + e];
        for (int e = 0; e < E; ++e) {
          double acc = 0;
          for (int d = 0; d < D; ++d) acc += q[row * D + d] * St[d * E + e];
          R.o[row * E + e] = scale * acc;
        }
        for (int d = 0; d < D; ++d) {
          double acc = 0;
          for (int e = 0; e < E; ++e) acc += St[d * E + e] * dout[row * E + e];
          R.dq[row * D + d] = scale * acc;
        }
      }
      for (int i = 0; i < D * E; ++i) R.fin[so + i] = St[i];
      for (int i = 0; i < D * E; ++i) G[i] = dfin[so + i];
      for (int64_t t = t0 + len - 1; t >= t0; --t) {
        const size_t row = (b * N + t) * H + h;
        for (int d = 0; d < D; ++d)
          for (int e = 0; e < E; ++e) G[d * E + e] += scale * q[row * D + d] * dout[row * E + e];
        for (int d = 0; d < D; ++d) {
          double acc = 0;
          for (int e = 0; e < E; ++e) acc += G[d * E + e] * v[row * E + e];
          R.dk[row * D + d] = acc;
        }
        for (int e = 0; e < E; ++e) {
          double acc = 0;
          for (int d = 0; d < D; ++d) acc += k[row * D + d] * G[d * E + e];
          R.dv[row * E + e] = acc;
        }
        for (int i = 0; i < D * E; ++i) G[i] *= l;
      }
      for (int i = 0; i < D * E; ++i) R.ds0[so + i] = G[i];
    }
  }
  return R;
}

LightningStrides strides(int N, int H, int X) {
  LightningStrides s;
  s.batch = static_cast<int64_t>(N) * H * X;
  s.token = static_cast<int64_t>(H) * X;
  s.head = X;
  return s;
}

const char* impl_name(int impl) { return impl == 1 ? "v1" : (impl == 2 ? "v2" : "v3"); }

// Runs forward + backward of case c with pass implementation `impl` into poisoned outputs and
// checks them against the reference; `first` (v1's results, fetched) gives the v2-v1 distance.
struct CaseResults {
  std::vector<double> o, fin, dq, dk, dv, ds0;
};

bool run_case(const Case& c, int& passed, int& failed) {
  const bool half = c.half;
  const int H = c.H, D = c.D, E = c.D, N = c.N;
  const int64_t S = c.cu.empty() ? c.B : static_cast<int64_t>(c.cu.size()) - 1;
  const size_t tok = static_cast<size_t>(c.B) * N * H;
  const size_t st = S * H * static_cast<size_t>(D * E);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  Half16 q, k, v, dout, o, dq, dk, dv;
  q.random(tok * D, 1.0, half);
  k.random(tok * D, 1.0, half);
  v.random(tok * E, 1.0, half);
  dout.random(tok * E, 1.0, half);
  o.poisoned(tok * E);
  dq.poisoned(tok * D);
  dk.poisoned(tok * D);
  dv.poisoned(tok * E);
  std::vector<float> slope(H);
  std::uniform_real_distribution<double> ud(0.0, 0.5);
  for (int h = 0; h < H; ++h) slope[h] = h == 0 ? 0.0f : static_cast<float>(ud(rng));
  float* slope_dev;
  CHECK_CUDA(cudaMalloc(&slope_dev, H * 4));
  CHECK_CUDA(cudaMemcpy(slope_dev, slope.data(), H * 4, cudaMemcpyHostToDevice));
  F32 s0, fin, dfin, ds0;
  if (c.init) s0.random(st, 0.5);
  dfin.random(st, 0.5);
  fin.poisoned(st);
  ds0.poisoned(st);

  LightningParams p;
  p.dtype = half ? LightningDType::kFloat16 : LightningDType::kBFloat16;
  p.batch = c.B;
  p.tokens = N;
  p.heads = H;
  p.dim_k = D;
  p.dim_v = E;
  p.num_seqs = S;
  p.cu_seqlens_host = c.cu.empty() ? nullptr : c.cu.data();
  p.scale = static_cast<float>(scale);
  p.slope = slope_dev;
  p.q = q.dev;
  p.k = k.dev;
  p.v = v.dev;
  p.o = o.dev;
  p.q_strides = p.k_strides = strides(N, H, D);
  p.v_strides = p.o_strides = strides(N, H, E);
  p.initial_state = c.init ? s0.dev : nullptr;
  p.final_state = fin.dev;
  p.dout = dout.dev;
  p.dq = dq.dev;
  p.dk = dk.dev;
  p.dv = dv.dev;
  p.do_strides = p.dv_strides = strides(N, H, E);
  p.dq_strides = p.dk_strides = strides(N, H, D);
  p.d_final_state = dfin.dev;
  p.d_initial_state = c.init ? ds0.dev : nullptr;
  p.segment_chunks = c.seg_chunks;
  const Reference R = reference(c, q.val, k.val, v.val, dout.val, slope, c.init ? &s0.host : nullptr,
                                dfin.host, scale);
  const double tol = half ? 1e-2 : 2e-2;
  CaseResults v1;
  bool all_ok = true;
  for (int impl = 1; impl <= 3; ++impl) {
    if (impl == 3 && D != 128) continue;  // the v3 pass exists for D = E = 128 only
    p.impl = impl;
    const char* why = effattn::cuda::lightning_cuda_unsupported_reason(p, true);
    if (why) {
      std::printf("FAIL %s unsupported: %s\n", impl_name(impl), why);
      ++failed;
      all_ok = false;
      continue;
    }
    CHECK_CUDA(cudaMemset(o.dev, 0xFF, tok * E * 2));
    CHECK_CUDA(cudaMemset(dq.dev, 0xFF, tok * D * 2));
    CHECK_CUDA(cudaMemset(dk.dev, 0xFF, tok * D * 2));
    CHECK_CUDA(cudaMemset(dv.dev, 0xFF, tok * E * 2));
    CHECK_CUDA(cudaMemset(fin.dev, 0xFF, st * 4));
    CHECK_CUDA(cudaMemset(ds0.dev, 0xFF, st * 4));
    p.workspace_bytes = effattn::cuda::lightning_workspace_bytes(p);
    CHECK_CUDA(cudaMalloc(&p.workspace, std::max<size_t>(p.workspace_bytes, 16)));
    CHECK_CUDA(effattn::cuda::lightning_forward(p, 0));
    CHECK_CUDA(effattn::cuda::lightning_backward(p, 0));
    CHECK_CUDA(cudaDeviceSynchronize());
    cudaFree(p.workspace);
    p.workspace = nullptr;
    CaseResults got{o.fetch(tok * E, half), fin.fetch(st), dq.fetch(tok * D, half),
                    dk.fetch(tok * D, half), dv.fetch(tok * E, half), {}};
    if (c.init) got.ds0 = ds0.fetch(st);
    struct Item {
      const char* name;
      const std::vector<double>* got;
      const std::vector<double>* ref;
      const std::vector<double>* old;
    };
    std::vector<Item> items = {{"o", &got.o, &R.o, &v1.o},       {"final", &got.fin, &R.fin, &v1.fin},
                               {"dq", &got.dq, &R.dq, &v1.dq},    {"dk", &got.dk, &R.dk, &v1.dk},
                               {"dv", &got.dv, &R.dv, &v1.dv}};
    if (c.init) items.push_back({"ds0", &got.ds0, &R.ds0, &v1.ds0});
    bool ok = true;
    std::string line;
    char buf[96];
    for (const auto& it : items) {
      const double err = rel_err(*it.got, *it.ref);
      if (impl == 1 || it.old->empty()) {
        std::snprintf(buf, sizeof(buf), " %s %.2e", it.name, err);
      } else {  // also how far from v1 (same rounding points, so far below the tolerance)
        std::snprintf(buf, sizeof(buf), " %s %.2e (vs v1 %.1e)", it.name, err, rel_err(*it.got, *it.old));
      }
      line += buf;
      if (!(err <= tol)) ok = false;
    }
    std::printf("%s %s %s D%d B%d N%d H%d init=%d varlen=%d seg=%lld:%s\n", ok ? "PASS" : "FAIL",
                impl_name(impl), half ? "f16 " : "bf16", D, c.B, N, H, c.init ? 1 : 0, c.cu.empty() ? 0 : 1,
                static_cast<long long>(c.seg_chunks), line.c_str());
    (ok ? passed : failed)++;
    all_ok = all_ok && ok;
    if (impl == 1) v1 = std::move(got);
  }
  cudaFree(slope_dev);
  return all_ok;
}

void run_decode_case(bool half, int D, int E, int B, int H, int& passed, int& failed) {
  const size_t st = static_cast<size_t>(B) * H * D * E;
  Half16 q, k, v, o;
  q.random(static_cast<size_t>(B) * H * D, 1.0, half);
  k.random(static_cast<size_t>(B) * H * D, 1.0, half);
  v.random(static_cast<size_t>(B) * H * E, 1.0, half);
  o.poisoned(static_cast<size_t>(B) * H * E);
  F32 state;
  state.random(st, 1.0);
  const std::vector<float> s_in = state.host;
  std::vector<float> slope(H);
  for (int h = 0; h < H; ++h) slope[h] = 0.05f * h;
  float* slope_dev;
  CHECK_CUDA(cudaMalloc(&slope_dev, H * 4));
  CHECK_CUDA(cudaMemcpy(slope_dev, slope.data(), H * 4, cudaMemcpyHostToDevice));
  std::vector<double> ro(static_cast<size_t>(B) * H * E), rs(st);
  for (int bh = 0; bh < B * H; ++bh) {
    const double l = std::exp(-static_cast<double>(slope[bh % H]));
    for (int d = 0; d < D; ++d)
      for (int e = 0; e < E; ++e) {
        const size_t i = (static_cast<size_t>(bh) * D + d) * E + e;
        rs[i] = l * s_in[i] + k.val[bh * D + d] * v.val[bh * E + e];
      }
    for (int e = 0; e < E; ++e) {
      double acc = 0;
      for (int d = 0; d < D; ++d) acc += q.val[bh * D + d] * rs[(static_cast<size_t>(bh) * D + d) * E + e];
      ro[bh * E + e] = 0.5 * acc;
    }
  }
  for (int impl = 1; impl <= 3; ++impl) {
    CHECK_CUDA(cudaMemcpy(state.dev, s_in.data(), st * 4, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemset(o.dev, 0xFF, static_cast<size_t>(B) * H * E * 2));
    LightningDecodeParams p;
    p.dtype = half ? LightningDType::kFloat16 : LightningDType::kBFloat16;
    p.batch = B;
    p.heads = H;
    p.dim_k = D;
    p.dim_v = E;
    p.scale = 0.5f;
    p.slope = slope_dev;
    p.q = q.dev;
    p.k = k.dev;
    p.v = v.dev;
    p.o = o.dev;
    p.state = state.dev;
    p.impl = impl;
    CHECK_CUDA(effattn::cuda::lightning_decode(p, 0));
    CHECK_CUDA(cudaDeviceSynchronize());
    const double eo = rel_err(o.fetch(ro.size(), half), ro), es = rel_err(state.fetch(st), rs);
    const bool ok = eo <= 1e-2 && es <= 1e-5;
    std::printf("%s decode %s %s D%d E%d B%d H%d: o %.2e state %.2e\n", ok ? "PASS" : "FAIL", impl_name(impl),
                half ? "f16 " : "bf16", D, E, B, H, eo, es);
    (ok ? passed : failed)++;
  }
  cudaFree(slope_dev);
}

// ---- benchmark -----------------------------------------------------------------------------------

// sums[0] += sum (a - b)^2, sums[1] += sum b^2 over n bf16 values.
__global__ void diff_sums(const uint16_t* a, const uint16_t* b, size_t n, double* sums) {
  double num = 0, den = 0;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const double x = __bfloat162float(__ushort_as_bfloat16(a[i]));
    const double y = __bfloat162float(__ushort_as_bfloat16(b[i]));
    num += (x - y) * (x - y);
    den += y * y;
  }
  for (int off = 16; off > 0; off >>= 1) {
    num += __shfl_xor_sync(0xffffffffu, num, off);
    den += __shfl_xor_sync(0xffffffffu, den, off);
  }
  if ((threadIdx.x & 31) == 0) {
    atomicAdd(sums, num);
    atomicAdd(sums + 1, den);
  }
}

// Relative L2 distance of two device bf16 arrays (inf when not finite).
double device_rel_err(const void* a, const void* b, size_t n) {
  double* sums;
  CHECK_CUDA(cudaMalloc(&sums, 16));
  CHECK_CUDA(cudaMemset(sums, 0, 16));
  diff_sums<<<1024, 256>>>(static_cast<const uint16_t*>(a), static_cast<const uint16_t*>(b), n, sums);
  CHECK_CUDA(cudaGetLastError());
  double h[2];
  CHECK_CUDA(cudaMemcpy(h, sums, 16, cudaMemcpyDeviceToHost));
  cudaFree(sums);
  if (!std::isfinite(h[0]) || !std::isfinite(h[1])) return INFINITY;
  return std::sqrt(h[0] / std::max(h[1], 1e-30));
}

// Median over `reps` timed calls (CUDA events around each), after 3 warm-up calls; the L2 is
// flushed before each call (as triton's do_bench does).
struct Flush {
  void* buf = nullptr;
  size_t bytes = size_t(256) << 20;
  Flush() { CHECK_CUDA(cudaMalloc(&buf, bytes)); }
  ~Flush() { cudaFree(buf); }
  void operator()() const { CHECK_CUDA(cudaMemsetAsync(buf, 0, bytes, 0)); }
};

template <typename F>
float median_ms(F&& f, int reps, const Flush& flush) {
  for (int i = 0; i < 3; ++i) f();
  std::vector<cudaEvent_t> ev(2 * reps);
  for (auto& e : ev) CHECK_CUDA(cudaEventCreate(&e));
  for (int i = 0; i < reps; ++i) {
    flush();
    CHECK_CUDA(cudaEventRecord(ev[2 * i]));
    f();
    CHECK_CUDA(cudaEventRecord(ev[2 * i + 1]));
  }
  CHECK_CUDA(cudaEventSynchronize(ev.back()));
  std::vector<float> ms(reps);
  for (int i = 0; i < reps; ++i) CHECK_CUDA(cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]));
  for (auto& e : ev) cudaEventDestroy(e);
  std::sort(ms.begin(), ms.end());
  return ms[reps / 2];
}

// One ANCHORS.md lightning problem: per pass implementation, median forward and backward times,
// and the distance of v2's o, dq, dk, dv from v1's (bf16, heads-last, no initial state).
void bench_attn(int B, int H, int N, int D, double fla_fwd, double fla_bwd, const Flush& flush) {
  const size_t tok = static_cast<size_t>(B) * N * H, n = tok * D;
  Half16 q, k, v, dout, out[3][4];  // out[impl][o, dq, dk, dv]
  q.fast_random(n, 0.1, false);
  k.fast_random(n, 0.1, false);
  v.fast_random(n, 0.1, false);
  dout.fast_random(n, 0.1, false);
  for (auto& set : out)
    for (auto& t : set) t.poisoned(n);
  std::vector<float> slope(H);
  for (int h = 0; h < H; ++h) slope[h] = 0.05f + 0.9f * h / H;
  float* slope_dev;
  CHECK_CUDA(cudaMalloc(&slope_dev, H * 4));
  CHECK_CUDA(cudaMemcpy(slope_dev, slope.data(), H * 4, cudaMemcpyHostToDevice));
  LightningParams p;
  p.batch = B;
  p.tokens = N;
  p.heads = H;
  p.dim_k = p.dim_v = D;
  p.num_seqs = B;
  p.scale = 1.0f;
  p.slope = slope_dev;
  p.q = q.dev;
  p.k = k.dev;
  p.v = v.dev;
  p.dout = dout.dev;
  p.q_strides = p.k_strides = p.v_strides = p.o_strides = strides(N, H, D);
  p.do_strides = p.dq_strides = p.dk_strides = p.dv_strides = strides(N, H, D);
  const double bytes = 4.0 * n * 2;  // read q, k, v and write o once
  float fwd[3], bwd[3];
  const int last_impl = D == 128 ? 3 : 2;  // v3: D = 128 only
  for (int impl = 1; impl <= last_impl; ++impl) {
    p.impl = impl;
    p.o = out[impl - 1][0].dev;
    p.dq = out[impl - 1][1].dev;
    p.dk = out[impl - 1][2].dev;
    p.dv = out[impl - 1][3].dev;
    p.workspace_bytes = effattn::cuda::lightning_workspace_bytes(p);
    CHECK_CUDA(cudaMalloc(&p.workspace, std::max<size_t>(p.workspace_bytes, 16)));
    fwd[impl - 1] = median_ms([&] { CHECK_CUDA(effattn::cuda::lightning_forward(p, 0)); }, 20, flush);
    bwd[impl - 1] = median_ms([&] { CHECK_CUDA(effattn::cuda::lightning_backward(p, 0)); }, 20, flush);
    CHECK_CUDA(cudaDeviceSynchronize());
    cudaFree(p.workspace);
    p.workspace = nullptr;
    std::printf("BENCH %s B%d H%d N%d D%d bf16: fwd %.3f ms (%.2f TB/s of q,k,v,o; fla/this %.2fx), "
                "bwd %.3f ms (fla/this %.2fx)\n",
                impl_name(impl), B, H, N, D, fwd[impl - 1], bytes / fwd[impl - 1] / 1e9,
                fla_fwd / fwd[impl - 1], bwd[impl - 1], fla_bwd / bwd[impl - 1]);
  }
  std::printf("BENCH v2 vs v1 B%d H%d N%d D%d: o %.1e dq %.1e dk %.1e dv %.1e; speed-up fwd %.2fx bwd %.2fx\n", B,
              H, N, D, device_rel_err(out[1][0].dev, out[0][0].dev, n),
              device_rel_err(out[1][1].dev, out[0][1].dev, n), device_rel_err(out[1][2].dev, out[0][2].dev, n),
              device_rel_err(out[1][3].dev, out[0][3].dev, n), fwd[0] / fwd[1], bwd[0] / bwd[1]);
  if (last_impl == 3) {
    std::printf("BENCH v3 vs v1 B%d H%d N%d D%d: o %.1e dq %.1e dk %.1e dv %.1e; speed-up fwd %.2fx bwd %.2fx "
                "(vs v2 %.2fx %.2fx)\n",
                B, H, N, D, device_rel_err(out[2][0].dev, out[0][0].dev, n),
                device_rel_err(out[2][1].dev, out[0][1].dev, n), device_rel_err(out[2][2].dev, out[0][2].dev, n),
                device_rel_err(out[2][3].dev, out[0][3].dev, n), fwd[0] / fwd[2], bwd[0] / bwd[2],
                fwd[1] / fwd[2], bwd[1] / bwd[2]);
  }
  cudaFree(slope_dev);
}

void bench_decode(int B, int H, int D, const Flush& flush) {
  const size_t st = static_cast<size_t>(B) * H * D * D;
  Half16 q, k, v, o;
  q.random(static_cast<size_t>(B) * H * D, 1.0, false);
  k.random(static_cast<size_t>(B) * H * D, 1.0, false);
  v.random(static_cast<size_t>(B) * H * D, 1.0, false);
  o.poisoned(static_cast<size_t>(B) * H * D);
  F32 state;
  state.random(st, 1.0);
  std::vector<float> slope(H, 0.1f);
  float* slope_dev;
  CHECK_CUDA(cudaMalloc(&slope_dev, H * 4));
  CHECK_CUDA(cudaMemcpy(slope_dev, slope.data(), H * 4, cudaMemcpyHostToDevice));
  LightningDecodeParams p;
  p.batch = B;
  p.heads = H;
  p.dim_k = p.dim_v = D;
  p.slope = slope_dev;
  p.q = q.dev;
  p.k = k.dev;
  p.v = v.dev;
  p.o = o.dev;
  p.state = state.dev;
  for (int impl = 1; impl <= 3; ++impl) {
    p.impl = impl;
    const float ms = median_ms([&] { CHECK_CUDA(effattn::cuda::lightning_decode(p, 0)); }, 50, flush);
    std::printf("BENCH decode %s B%d H%d D%d: %.4f ms, %.2f TB/s (state read + write; 70%% of the 4.27 TB/s "
                "copy ceiling = 2.99)\n",
                impl_name(impl), B, H, D, ms, 2.0 * st * 4 / ms / 1e9);
  }
  cudaFree(slope_dev);
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // one line at a time, also into a file
  bool bench = false;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--bench") bench = true;
  std::vector<Case> cases;
  for (int half = 0; half < 2; ++half) {
    for (int D : {64, 128}) {
      cases.push_back({half != 0, D, 2, 200, 3, true, {}, 0});
      cases.push_back({half != 0, D, 1, 333, 2, false, {}, 1});  // forced split, 1 chunk / segment
      cases.push_back({half != 0, D, 1, 700, 2, true, {}, 3});   // forced split, partial segments
      cases.push_back({half != 0, D, 1, 450, 2, true, {0, 0, 1, 64, 129, 450}, 0});
      cases.push_back({half != 0, D, 1, 450, 2, true, {0, 100, 100, 450}, 2});
    }
  }
  cases.push_back({false, 128, 1, 2000, 2, true, {}, 0});  // automatic split (few heads)
  cases.push_back({false, 64, 3, 63, 1, false, {}, 0});
  cases.push_back({false, 128, 2, 0, 2, true, {}, 0});      // empty sequences
  // v3: many ring wraps (33 chunks), a partial last chunk, unsplit and split with partial segments.
  cases.push_back({false, 128, 1, 2100, 1, true, {}, 100000});
  cases.push_back({true, 128, 2, 1000, 3, true, {}, 5});
  int passed = 0, failed = 0;
  if (!effattn::cuda::lightning::DTypeKernels<__nv_bfloat16>::v3_usable()) {
    std::printf("NOTE the v3 pass cannot run here (needs an sm_90a build on a Hopper GPU): "
                "the v3 lines below ran v2\n");
  }
  for (const Case& c : cases) run_case(c, passed, failed);
  for (int half = 0; half < 2; ++half)
    for (int D : {64, 128})
      for (int E : {64, 128}) run_decode_case(half != 0, D, E, 3, 5, passed, failed);
  if (bench) {
    const Flush flush;
    // fla 0.6.0 chunk_lightning_attn times of ANCHORS.md (same machine kind; ratios are indicative).
    bench_attn(4, 32, 8192, 128, 0.761, 2.52, flush);
    bench_attn(1, 32, 65536, 128, 2.15, 6.37, flush);
    bench_attn(8, 16, 4096, 64, 0.267, 1.00, flush);
    bench_decode(64, 64, 128, flush);
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
