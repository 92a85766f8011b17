// Standalone self-test of the CUDA lightning-attention kernels (torch-free): random inputs,
// poisoned outputs, comparison with an fp64 CPU recurrence for o, the final state, dq, dk, dv
// and d_initial_state, and decode against one recurrence step. One line per case, then
// "N passed, M failed". `--bench` adds timings (forward, backward, decode bandwidth).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

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
  // Cheap uniform values (sd-matched), no host copy kept: for the large benchmark tensors.
  void fast_random(size_t n, double sd, bool half) {
    std::vector<uint16_t> b(n);
    uint64_t x = rng();
    const float amp = static_cast<float>(sd * 1.7320508);
    for (size_t i = 0; i < n; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      b[i] = to_bits(amp * (static_cast<float>(x >> 40) * (2.0f / 16777216.0f) - 1.0f), half);
    }
    CHECK_CUDA(cudaMalloc(&dev, n * 2));
    CHECK_CUDA(cudaMemcpy(dev, b.data(), n * 2, cudaMemcpyHostToDevice));
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

bool run_case(const Case& c) {
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
  const char* why = effattn::cuda::lightning_cuda_unsupported_reason(p, true);
  if (why) {
    std::printf("FAIL unsupported: %s\n", why);
    return false;
  }
  p.workspace_bytes = effattn::cuda::lightning_workspace_bytes(p);
  CHECK_CUDA(cudaMalloc(&p.workspace, std::max<size_t>(p.workspace_bytes, 16)));
  CHECK_CUDA(effattn::cuda::lightning_forward(p, 0));
  CHECK_CUDA(effattn::cuda::lightning_backward(p, 0));
  CHECK_CUDA(cudaDeviceSynchronize());
  const Reference R = reference(c, q.val, k.val, v.val, dout.val, slope, c.init ? &s0.host : nullptr,
                                dfin.host, scale);
  const double tol = half ? 1e-2 : 2e-2;
  struct Item {
    const char* name;
    double err;
  };
  std::vector<Item> errs = {{"o", rel_err(o.fetch(tok * E, half), R.o)},
                            {"final", rel_err(fin.fetch(st), R.fin)},
                            {"dq", rel_err(dq.fetch(tok * D, half), R.dq)},
                            {"dk", rel_err(dk.fetch(tok * D, half), R.dk)},
                            {"dv", rel_err(dv.fetch(tok * E, half), R.dv)}};
  if (c.init) errs.push_back({"ds0", rel_err(ds0.fetch(st), R.ds0)});
  bool ok = true;
  std::string line;
  char buf[64];
  for (const auto& it : errs) {
    std::snprintf(buf, sizeof(buf), " %s %.2e", it.name, it.err);
    line += buf;
    if (!(it.err <= tol)) ok = false;
  }
  std::printf("%s %s D%d B%d N%d H%d init=%d varlen=%d seg=%lld:%s\n", ok ? "PASS" : "FAIL",
              half ? "f16 " : "bf16", D, c.B, N, H, c.init ? 1 : 0, c.cu.empty() ? 0 : 1,
              static_cast<long long>(c.seg_chunks), line.c_str());
  cudaFree(p.workspace);
  cudaFree(slope_dev);
  return ok;
}

bool run_decode_case(bool half, int D, int E, int B, int H) {
  const size_t st = static_cast<size_t>(B) * H * D * E;
  Half16 q, k, v, o;
  q.random(static_cast<size_t>(B) * H * D, 1.0, half);
  k.random(static_cast<size_t>(B) * H * D, 1.0, half);
  v.random(static_cast<size_t>(B) * H * E, 1.0, half);
  o.poisoned(static_cast<size_t>(B) * H * E);
  F32 state;
  state.random(st, 1.0);
  std::vector<float> s_in = state.host;
  std::vector<float> slope(H);
  for (int h = 0; h < H; ++h) slope[h] = 0.05f * h;
  float* slope_dev;
  CHECK_CUDA(cudaMalloc(&slope_dev, H * 4));
  CHECK_CUDA(cudaMemcpy(slope_dev, slope.data(), H * 4, cudaMemcpyHostToDevice));
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
  CHECK_CUDA(effattn::cuda::lightning_decode(p, 0));
  CHECK_CUDA(cudaDeviceSynchronize());
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
  const double eo = rel_err(o.fetch(ro.size(), half), ro), es = rel_err(state.fetch(st), rs);
  const bool ok = eo <= 1e-2 && es <= 1e-5;
  std::printf("%s decode %s D%d E%d B%d H%d: o %.2e state %.2e\n", ok ? "PASS" : "FAIL",
              half ? "f16 " : "bf16", D, E, B, H, eo, es);
  cudaFree(slope_dev);
  return ok;
}

template <typename F>
float time_ms(F&& f, int reps) {
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  for (int i = 0; i < 3; ++i) f();
  CHECK_CUDA(cudaEventRecord(a));
  for (int i = 0; i < reps; ++i) f();
  CHECK_CUDA(cudaEventRecord(b));
  CHECK_CUDA(cudaEventSynchronize(b));
  float ms = 0;
  CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / reps;
}

void bench_attn(int B, int H, int N, int D) {
  const size_t tok = static_cast<size_t>(B) * N * H;
  Half16 q, k, v, o, dout, dq, dk, dv;
  q.fast_random(tok * D, 0.1, false);
  k.fast_random(tok * D, 0.1, false);
  v.fast_random(tok * D, 0.1, false);
  dout.fast_random(tok * D, 0.1, false);
  o.poisoned(tok * D);
  dq.poisoned(tok * D);
  dk.poisoned(tok * D);
  dv.poisoned(tok * D);
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
  p.o = o.dev;
  p.dout = dout.dev;
  p.dq = dq.dev;
  p.dk = dk.dev;
  p.dv = dv.dev;
  p.q_strides = p.k_strides = p.v_strides = p.o_strides = strides(N, H, D);
  p.do_strides = p.dq_strides = p.dk_strides = p.dv_strides = strides(N, H, D);
  p.workspace_bytes = effattn::cuda::lightning_workspace_bytes(p);
  CHECK_CUDA(cudaMalloc(&p.workspace, std::max<size_t>(p.workspace_bytes, 16)));
  const float f = time_ms([&] { CHECK_CUDA(effattn::cuda::lightning_forward(p, 0)); }, 20);
  const float bwd = time_ms([&] { CHECK_CUDA(effattn::cuda::lightning_backward(p, 0)); }, 10);
  const double bytes = 4.0 * tok * D * 2;
  std::printf("BENCH B%d H%d N%d D%d bf16: fwd %.3f ms (%.2f TB/s of q,k,v,o), bwd %.3f ms\n", B, H, N, D,
              f, bytes / f / 1e9, bwd);
  cudaFree(p.workspace);
  cudaFree(slope_dev);
}

void bench_decode(int B, int H, int D) {
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
  const float ms = time_ms([&] { CHECK_CUDA(effattn::cuda::lightning_decode(p, 0)); }, 50);
  std::printf("BENCH decode B%d H%d D%d: %.4f ms, %.2f TB/s (state read + write)\n", B, H, D, ms,
              2.0 * st * 4 / ms / 1e9);
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
  int passed = 0, failed = 0;
  for (const Case& c : cases) (run_case(c) ? passed : failed)++;
  for (int half = 0; half < 2; ++half)
    for (int D : {64, 128})
      for (int E : {64, 128}) (run_decode_case(half != 0, D, E, 3, 5) ? passed : failed)++;
  if (bench) {
    bench_attn(4, 32, 8192, 128);
    bench_attn(1, 32, 65536, 128);
    bench_attn(8, 16, 4096, 64);
    bench_decode(64, 64, 128);
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
