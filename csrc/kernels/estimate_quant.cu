// CUDA smooth_quantize (include/effattn/estimate_cuda.h): the per-head mean over the sequence
// (fp64 column sums in a fixed order, so the result does not depend on scheduling), then per
// (batch, quantization block, head) the amax of |x - mean| and the int8 values, computed with
// the CPU op's fp32 operations (x - mean, / scale, round half to even).
//
// Three launches, each a streaming pass (work split: estimate_quant_tiling.h):
//   1. column_sum_kernel: per 128-token chunk and column, the fp64 sum of the chunk's tokens
//      in token order, 16-byte loads, into a [B, chunks, H * D] workspace;
//   2. mean_kernel: per column, the chunk sums in a fixed order / N;
//   3. quantize_vec_kernel: a CTA sweeps rows of tokens with fixed columns per thread (one or
//      two 16-byte loads, the means in registers); the kLanes threads of a (token, head) reduce
//      the amax by shuffles; the int8 values come from one multiply by 1 / scale per value,
//      with the exact division only where that could round differently (quantize_vec).
//      Per-token scales (quant_block 1) read x once. Shapes it does not cover (a head of more
//      than 32 16-byte vectors or not a whole number of them, a misaligned x or x_quant) take
//      quantize_rows_kernel, one warp per (batch, quantization block, head).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "effattn/estimate_cuda.h"
#include "estimate_quant_tiling.h"

namespace effattn {
namespace cuda {
namespace {

using quant::kMeanSlices;
using quant::kSumRows;
using quant::kTileThreads;
using quant::RowTiling;
using quant::ThreadSlot;

constexpr int kThreads = 256;  // quantize_rows_kernel
constexpr unsigned kAll = 0xffffffffu;
static_assert(kTileThreads % 32 == 0, "row tiles are whole warps");

// The CPU op works on x.to(float): fp64 is rounded to fp32 first.
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(double v) { return __double2float_rn(v); }

template <typename T>
constexpr int vec_elems() { return 16 / static_cast<int>(sizeof(T)); }

// V elements of T at p (16-byte aligned when V * sizeof(T) == 16), as fp32.
template <typename T, int V>
__device__ __forceinline__ void load_f32(const T* p, float (&f)[V]) {
  if constexpr (V * sizeof(T) == 16) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int j = 0; j < V; ++j) f[j] = to_f32(e[j]);
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) f[j] = to_f32(p[j]);
  }
}

template <typename T>
__device__ __forceinline__ void unpack_f32(const uint4& raw, float (&f)[vec_elems<T>()]) {
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int j = 0; j < vec_elems<T>(); ++j) f[j] = to_f32(e[j]);
}

// V int8 values to p (V-byte aligned).
template <int V>
__device__ __forceinline__ void store_i8(int8_t* p, const int8_t (&q)[V]) {
  if constexpr (V == 16) {
    uint4 w;
    uint32_t* u = &w.x;
#pragma unroll
    for (int i = 0; i < 4; ++i)
      u[i] = (static_cast<uint32_t>(static_cast<uint8_t>(q[4 * i]))) |
             (static_cast<uint32_t>(static_cast<uint8_t>(q[4 * i + 1])) << 8) |
             (static_cast<uint32_t>(static_cast<uint8_t>(q[4 * i + 2])) << 16) |
             (static_cast<uint32_t>(static_cast<uint8_t>(q[4 * i + 3])) << 24);
    *reinterpret_cast<uint4*>(p) = w;
  } else if constexpr (V == 8) {
    uint2 w;
    w.x = (static_cast<uint32_t>(static_cast<uint8_t>(q[0]))) | (static_cast<uint32_t>(static_cast<uint8_t>(q[1])) << 8) |
          (static_cast<uint32_t>(static_cast<uint8_t>(q[2])) << 16) | (static_cast<uint32_t>(static_cast<uint8_t>(q[3])) << 24);
    w.y = (static_cast<uint32_t>(static_cast<uint8_t>(q[4]))) | (static_cast<uint32_t>(static_cast<uint8_t>(q[5])) << 8) |
          (static_cast<uint32_t>(static_cast<uint8_t>(q[6])) << 16) | (static_cast<uint32_t>(static_cast<uint8_t>(q[7])) << 24);
    *reinterpret_cast<uint2*>(p) = w;
  } else if constexpr (V == 4) {
    *reinterpret_cast<uint32_t*>(p) =
        (static_cast<uint32_t>(static_cast<uint8_t>(q[0]))) | (static_cast<uint32_t>(static_cast<uint8_t>(q[1])) << 8) |
        (static_cast<uint32_t>(static_cast<uint8_t>(q[2])) << 16) | (static_cast<uint32_t>(static_cast<uint8_t>(q[3])) << 24);
  } else if constexpr (V == 2) {
    *reinterpret_cast<uint16_t*>(p) = static_cast<uint16_t>(
        static_cast<uint32_t>(static_cast<uint8_t>(q[0])) | (static_cast<uint32_t>(static_cast<uint8_t>(q[1])) << 8));
  } else {
#pragma unroll
    for (int j = 0; j < V; ++j) p[j] = q[j];
  }
}

// ---- The CPU formula, element by element -------------------------------------------------
// |x - mean| into the running amax (fmaxf drops NaN; `nan` remembers it, as torch.amax
// propagates it).
__device__ __forceinline__ void amax_step(float c, float& amax, bool& nan) {
  const float a = fabsf(c);
  nan |= a != a;
  amax = fmaxf(amax, a);
}

__device__ __forceinline__ float scale_of(float amax, bool nan) {
  float s = nan ? __int_as_float(0x7fc00000) : __fdiv_rn(amax, 127.f);
  return s != s ? s : fmaxf(s, 1e-12f);  // clamp_min(1e-12) keeps NaN
}

__device__ __forceinline__ int8_t quantize_one(float c, float s) {
  float r = rintf(__fdiv_rn(c, s));  // half to even, like torch.round
  r = fminf(fmaxf(r, -127.f), 127.f);
  return static_cast<int8_t>(static_cast<int>(r));
}

// max that propagates NaN (PTX max.NaN, sm_80+). Over the |x - mean| of a unit, starting
// from 0: NaN if one is NaN, else their fmaxf maximum. So amax_nan below == amax_step's pair
// (amax, nan) folded into one value.
__device__ __forceinline__ float fmax_nan(float a, float b) {
  float d;
  asm("max.NaN.f32 %0, %1, %2;" : "=f"(d) : "f"(a), "f"(b));
  return d;
}

__device__ __forceinline__ float scale_of_nan(float amax_nan) {
  return scale_of(amax_nan, amax_nan != amax_nan);
}

// quantize_one(c[e], s) for E values with |c[e]| <= the amax s was made from, given
// rs = __frcp_rn(s), without a division per value: a = RN(c * rs) is within
// |c / s| (3u + u^2) <= 2.3e-5 of Q = RN(c / s) (u = 2^-24, |c / s| <= 127 (1 + u)), so when a
// is more than kRintMargin = 2^-14 = 6.1e-5 from every half-integer, Q lies strictly between
// the same two half-integers and rint(a) == rint(Q); and |a| <= 127 (1 + u)^3, so rint(a) needs
// no clamp. The other values (1.2e-4 of them; NaN and inf included) take quantize_one's exact
// quotient. Same int8 as quantize_one, bit for bit (tests/cuda/estimate_prepass_check.cpp
// checks the argument on the host, densely around the half-integers).
constexpr float kRintMargin = 1.f / 16384.f;
template <int E>
__device__ __forceinline__ void quantize_vec(const float (&c)[E], float s, float rs, int8_t (&q)[E]) {
  constexpr float kSafe = 0.5f - kRintMargin;
  float r[E];
  bool exact = false;
#pragma unroll
  for (int e = 0; e < E; ++e) {
    const float a = __fmul_rn(c[e], rs);
    r[e] = rintf(a);
    exact |= !(fabsf(__fsub_rn(a, r[e])) < kSafe);
  }
  if (exact) {  // rare: redo the test per value, the exact quotient where it fails
#pragma unroll
    for (int e = 0; e < E; ++e)
      if (!(fabsf(__fsub_rn(__fmul_rn(c[e], rs), r[e])) < kSafe)) r[e] = static_cast<float>(quantize_one(c[e], s));
  }
#pragma unroll
  for (int e = 0; e < E; ++e) q[e] = static_cast<int8_t>(static_cast<int>(r[e]));
}

// ---- Pass 1: column sums -------------------------------------------------------------------
// partial[b, chunk, col] = sum of x[b, n, col] over the chunk's tokens n, in increasing n
// (col = h * D + d). Thread: V columns of one chunk; four tokens' loads in flight.
template <typename T, int V>
__global__ void __launch_bounds__(kTileThreads, 3) column_sum_kernel(const T* __restrict__ x,
                                                                  double* __restrict__ partial,
                                                                  RowTiling tl, int64_t tokens,
                                                                  int64_t chunks) {
  const int64_t tile = blockIdx.x % tl.tiles, grp = blockIdx.x / tl.tiles, b = blockIdx.y;
  const ThreadSlot s = quant::thread_slot(tl, tile, threadIdx.x);
  const int64_t chunk = grp * tl.R + s.r;
  if (!s.live || chunk >= chunks) return;  // no barriers or shuffles below
  const int64_t cols = tl.nv * V;
  const int64_t n0 = chunk * kSumRows;
  const int64_t n1 = n0 + kSumRows < tokens ? n0 + kSumRows : tokens;
  const T* p = x + (b * tokens + n0) * cols + s.v * V;
  double acc[V];
#pragma unroll
  for (int e = 0; e < V; ++e) acc[e] = 0.0;
  int64_t n = n0;
  if constexpr (V * sizeof(T) == 16) {
    for (; n + 4 <= n1; n += 4, p += 4 * cols) {  // raw 16-byte rows: fewest registers
      uint4 raw[4];
#pragma unroll
      for (int u = 0; u < 4; ++u) raw[u] = *reinterpret_cast<const uint4*>(p + u * cols);
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        float f[V];
        unpack_f32<T>(raw[u], f);
#pragma unroll
        for (int e = 0; e < V; ++e) acc[e] += f[e];
      }
    }
  }
  for (; n < n1; ++n, p += cols) {
    float f[V];
    load_f32<T, V>(p, f);
#pragma unroll
    for (int e = 0; e < V; ++e) acc[e] += f[e];
  }
  double* out = partial + (b * chunks + chunk) * cols + s.v * V;
  if constexpr (V % 2 == 0) {
#pragma unroll
    for (int e = 0; e < V; e += 2) *reinterpret_cast<double2*>(out + e) = make_double2(acc[e], acc[e + 1]);
  } else {
#pragma unroll
    for (int e = 0; e < V; ++e) out[e] = acc[e];
  }
}

// ---- Pass 2: the mean ------------------------------------------------------------------------
// One CTA per 32 columns of one batch: slice i (warp i) sums chunks i, i + 32, ... in order,
// then one thread adds the 32 slices in order (deterministic; 32 warps of loads in flight).
__global__ void __launch_bounds__(32 * kMeanSlices) mean_kernel(const double* __restrict__ partial,
                                                                float* __restrict__ mean, int64_t tokens,
                                                                int64_t cols, int64_t chunks) {
  __shared__ double part[kMeanSlices][33];
  const int lane = threadIdx.x & 31, slice = threadIdx.x >> 5;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * 32 + lane, b = blockIdx.y;
  double s = 0;
  if (col < cols)
    for (int64_t c = slice; c < chunks; c += kMeanSlices) s += partial[(b * chunks + c) * cols + col];
  part[slice][lane] = s;
  __syncthreads();
  if (slice != 0 || col >= cols) return;
  double total = 0;
  for (int i = 0; i < kMeanSlices; ++i) total += part[i][lane];
  mean[b * cols + col] = static_cast<float>(total / static_cast<double>(tokens));
}

// ---- Pass 3: quantization ----------------------------------------------------------------
struct QuantVecArgs {
  RowTiling tl;  // over thread vectors of E = kVecs * V elements
  int64_t tokens = 0, cols = 0, heads = 0, blocks = 0, quant_block = 1;
};

// kVecs 16-byte vectors per thread (E elements), kLanes = D / E threads per head (a power of
// two <= 32). CTA group g (blockIdx.x / tiles) sweeps quantization blocks
// m = (g + k * groups) * R + r, k = 0, 1, ...; the kLanes lanes of a (block, head) combine their
// amax by xor shuffles. kOne (quant_block 1): the row stays in registers between amax and
// quantization, and the next two rows' loads are in flight while one is processed.
template <typename T, int kVecs>
struct RawVec {
  uint4 v[kVecs];
};

template <typename T, int kVecs>
__device__ __forceinline__ RawVec<T, kVecs> load_raw(const T* p) {
  RawVec<T, kVecs> r;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) r.v[i] = *reinterpret_cast<const uint4*>(p + i * vec_elems<T>());
  return r;
}

template <typename T, int kVecs>
__device__ __forceinline__ void unpack_raw(const RawVec<T, kVecs>& r, float (&f)[kVecs * vec_elems<T>()]) {
  constexpr int V = vec_elems<T>();
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const T* e = reinterpret_cast<const T*>(&r.v[i]);
#pragma unroll
    for (int j = 0; j < V; ++j) f[i * V + j] = to_f32(e[j]);
  }
}

template <int kLanes>
__device__ __forceinline__ float lanes_amax(float amax) {
#pragma unroll
  for (int off = kLanes / 2; off > 0; off >>= 1) amax = fmax_nan(amax, __shfl_xor_sync(kAll, amax, off));
  return amax;
}

template <typename T, int kVecs, int kLanes, bool kOne>
__global__ void __launch_bounds__(kTileThreads, 2) quantize_vec_kernel(const T* __restrict__ x,
                                                                    const float* __restrict__ mean,
                                                                    int8_t* __restrict__ xq,
                                                                    float* __restrict__ scale_out,
                                                                    QuantVecArgs a) {
  constexpr int E = kVecs * vec_elems<T>();
  const int lane = threadIdx.x & 31;
  const int64_t tile = blockIdx.x % a.tl.tiles, grp = blockIdx.x / a.tl.tiles, b = blockIdx.y;
  const int64_t groups = gridDim.x / a.tl.tiles;
  const ThreadSlot s = quant::thread_slot(a.tl, tile, threadIdx.x);
  const int64_t h = s.v / kLanes;
  const bool writer = s.live && (lane & (kLanes - 1)) == 0;
  float mu[E];
#pragma unroll
  for (int e = 0; e < E; ++e) mu[e] = s.live ? mean[b * a.cols + s.v * E + e] : 0.f;
  const int64_t step = groups * a.tl.R;
  // Every thread runs the same iterations (the shuffles need whole warps); `live` masks the rest.
  int64_t m = grp * a.tl.R + s.r;
  const T* xp = x + (b * a.tokens) * a.cols + s.v * E;         // + token * cols
  int8_t* qp = xq + (b * a.tokens) * a.cols + s.v * E;
  float* sp = scale_out + (b * a.blocks) * a.heads + h;        // + block * heads
  if constexpr (kOne) {
    const int64_t xstep = step * a.cols;
    xp += m * a.cols;
    qp += m * a.cols;
    sp += m * a.heads;
    // Two rows ahead in flight: rows m (cur), m + step (nx1), m + 2 step (loaded at the top).
    RawVec<T, kVecs> cur{}, nx1{};
    if (s.live && m < a.blocks) cur = load_raw<T, kVecs>(xp);
    if (s.live && m + step < a.blocks) nx1 = load_raw<T, kVecs>(xp + xstep);
    for (int64_t m0 = grp * a.tl.R; m0 < a.blocks; m0 += step, m += step) {
      const bool live = s.live && m < a.blocks;
      RawVec<T, kVecs> nx2{};
      if (s.live && m + 2 * step < a.blocks) nx2 = load_raw<T, kVecs>(xp + 2 * xstep);
      float f[E], c[E];
      unpack_raw<T, kVecs>(cur, f);
      float amax = 0.f;
#pragma unroll
      for (int e = 0; e < E; ++e) {
        c[e] = __fsub_rn(f[e], mu[e]);
        amax = fmax_nan(amax, fabsf(c[e]));
      }
      amax = lanes_amax<kLanes>(amax);
      const float sc = scale_of_nan(amax), rs = __frcp_rn(sc);
      if (live) {
        if (writer) *sp = sc;
        int8_t q[E];
        quantize_vec<E>(c, sc, rs, q);
        store_i8<E>(qp, q);
      }
      cur = nx1;
      nx1 = nx2;
      xp += xstep;
      qp += xstep;
      sp += step * a.heads;
    }
  } else {
    for (int64_t m0 = grp * a.tl.R; m0 < a.blocks; m0 += step, m += step) {
      const bool live = s.live && m < a.blocks;
      const int64_t t0 = m * a.quant_block;
      const int64_t t1 = !live ? t0 : (t0 + a.quant_block < a.tokens ? t0 + a.quant_block : a.tokens);
      float amax = 0.f;
      int64_t t = t0;
      for (; t + 2 <= t1; t += 2) {  // two rows' loads in flight
        const RawVec<T, kVecs> r0 = load_raw<T, kVecs>(xp + t * a.cols);
        const RawVec<T, kVecs> r1 = load_raw<T, kVecs>(xp + (t + 1) * a.cols);
        float f0[E], f1[E];
        unpack_raw<T, kVecs>(r0, f0);
        unpack_raw<T, kVecs>(r1, f1);
#pragma unroll
        for (int e = 0; e < E; ++e) amax = fmax_nan(amax, fabsf(__fsub_rn(f0[e], mu[e])));
#pragma unroll
        for (int e = 0; e < E; ++e) amax = fmax_nan(amax, fabsf(__fsub_rn(f1[e], mu[e])));
      }
      if (t < t1) {
        const RawVec<T, kVecs> r0 = load_raw<T, kVecs>(xp + t * a.cols);
        float f[E];
        unpack_raw<T, kVecs>(r0, f);
#pragma unroll
        for (int e = 0; e < E; ++e) amax = fmax_nan(amax, fabsf(__fsub_rn(f[e], mu[e])));
      }
      amax = lanes_amax<kLanes>(amax);
      const float sc = scale_of_nan(amax), rs = __frcp_rn(sc);
      if (writer && live) sp[m * a.heads] = sc;
      for (t = t0; t < t1; ++t) {  // the block again (L1 / L2)
        const RawVec<T, kVecs> r0 = load_raw<T, kVecs>(xp + t * a.cols);
        float f[E], c[E];
        unpack_raw<T, kVecs>(r0, f);
#pragma unroll
        for (int e = 0; e < E; ++e) c[e] = __fsub_rn(f[e], mu[e]);
        int8_t q[E];
        quantize_vec<E>(c, sc, rs, q);
        store_i8<E>(qp + t * a.cols, q);
      }
    }
  }
}

// Any shape: one warp per (batch, quantization block, head): amax, scale, then the int8
// values. The second read of the block hits L1/L2.
template <typename T>
__global__ void __launch_bounds__(kThreads) quantize_rows_kernel(const T* __restrict__ x,
                                                                 const float* __restrict__ mean,
                                                                 int8_t* __restrict__ xq,
                                                                 float* __restrict__ scale_out,
                                                                 SmoothQuantizeParams p,
                                                                 int64_t blocks) {
  const int lane = threadIdx.x & 31;
  const int64_t H = p.heads, D = p.head_dim, N = p.tokens;
  const int64_t units = p.batch * blocks * H;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * (kThreads / 32);
  for (int64_t u = static_cast<int64_t>(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
       u < units; u += stride) {
    const int64_t h = u % H, m = (u / H) % blocks, b = u / (H * blocks);
    const int64_t t0 = m * p.quant_block;
    const int64_t t1 = t0 + p.quant_block < N ? t0 + p.quant_block : N;
    const float* mu = mean + (b * H + h) * D;
    float amax = 0.f;
    bool nan = false;
    for (int64_t t = t0; t < t1; ++t) {
      const T* row = x + ((b * N + t) * H + h) * D;
      for (int64_t d = lane; d < D; d += 32) amax_step(__fsub_rn(to_f32(row[d]), mu[d]), amax, nan);
    }
    for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(kAll, amax, off));
    nan = __any_sync(kAll, nan);
    const float s = scale_of(amax, nan);
    if (lane == 0) scale_out[(b * blocks + m) * H + h] = s;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t base = ((b * N + t) * H + h) * D;
      for (int64_t d = lane; d < D; d += 32) xq[base + d] = quantize_one(__fsub_rn(to_f32(x[base + d]), mu[d]), s);
    }
  }
}

bool aligned(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

int sm_count() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || sms < 1) {
    (void)cudaGetLastError();
    return 132;
  }
  return sms;
}

template <typename T, int kVecs, int kLanes>
void launch_quantize(bool one, dim3 grid, cudaStream_t stream, const T* x, const SmoothQuantizeParams& p,
                     const QuantVecArgs& a) {
  if (one) quantize_vec_kernel<T, kVecs, kLanes, true><<<grid, kTileThreads, 0, stream>>>(x, p.mean, p.x_quant, p.scale, a);
  else quantize_vec_kernel<T, kVecs, kLanes, false><<<grid, kTileThreads, 0, stream>>>(x, p.mean, p.x_quant, p.scale, a);
}

template <typename T>
cudaError_t run(const SmoothQuantizeParams& p, cudaStream_t stream) {
  const T* x = static_cast<const T*>(p.x);
  const int64_t cols = p.heads * p.head_dim;
  const bool x16 = aligned(x, 16);

  // Column sums and the mean.
  const quant::SumPlan sp = quant::plan_column_sums(p.tokens, cols, sizeof(T), x16);
  double* partial = static_cast<double*>(p.workspace);
  const dim3 sum_grid(static_cast<unsigned>(sp.groups * sp.tl.tiles), static_cast<unsigned>(p.batch));
  if (sp.V > 1)
    column_sum_kernel<T, vec_elems<T>()><<<sum_grid, kTileThreads, 0, stream>>>(x, partial, sp.tl, p.tokens, sp.chunks);
  else
    column_sum_kernel<T, 1><<<sum_grid, kTileThreads, 0, stream>>>(x, partial, sp.tl, p.tokens, sp.chunks);
  const dim3 mean_grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>(p.batch));
  mean_kernel<<<mean_grid, 32 * kMeanSlices, 0, stream>>>(partial, p.mean, p.tokens, cols, sp.chunks);

  // Quantization.
  const quant::QuantPlan qp =
      quant::plan_quantize(p.batch, p.tokens, p.heads, p.head_dim, p.quant_block, sizeof(T), x16,
                           reinterpret_cast<uintptr_t>(p.x_quant), sm_count());
  if (qp.vec) {
    QuantVecArgs a;
    a.tl = qp.tl;
    a.tokens = p.tokens;
    a.cols = cols;
    a.heads = p.heads;
    a.blocks = qp.blocks;
    a.quant_block = p.quant_block;
    const dim3 grid(static_cast<unsigned>(qp.groups * qp.tl.tiles), static_cast<unsigned>(p.batch));
    const bool one = p.quant_block == 1;
    switch (qp.kVecs == 1 ? 0 : qp.kLanes) {
      case 0: launch_quantize<T, 1, 1>(one, grid, stream, x, p, a); break;
      case 1: launch_quantize<T, 2, 1>(one, grid, stream, x, p, a); break;
      case 2: launch_quantize<T, 2, 2>(one, grid, stream, x, p, a); break;
      case 4: launch_quantize<T, 2, 4>(one, grid, stream, x, p, a); break;
      case 8: launch_quantize<T, 2, 8>(one, grid, stream, x, p, a); break;
      default: launch_quantize<T, 2, 16>(one, grid, stream, x, p, a); break;
    }
  } else {
    const int64_t units = p.batch * qp.blocks * p.heads;
    int64_t grid = (units + kThreads / 32 - 1) / (kThreads / 32);
    if (grid > (int64_t(1) << 20)) grid = int64_t(1) << 20;  // grid-stride beyond that
    quantize_rows_kernel<T><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(x, p.mean, p.x_quant,
                                                                                 p.scale, p, qp.blocks);
  }
  return cudaGetLastError();
}

}  // namespace

const char* smooth_quantize_cuda_unsupported_reason(const SmoothQuantizeParams& p) {
  if (p.batch < 1 || p.batch > 65535) return "batch must be in [1, 65535]";
  if (p.tokens < 1) return "x must have at least one token";
  if (p.heads < 1 || p.head_dim < 1) return "heads and head_dim must be >= 1";
  if (p.heads * p.head_dim > (int64_t(1) << 31) - kThreads) return "heads * head_dim is too large";
  if (p.quant_block < 1) return "quant_block must be >= 1";
  // CTAs of the column sums: ceil(N / 128) chunks x column tiles on grid.x.
  if (quant::sum_chunks(p.tokens) * ((p.heads * p.head_dim + kTileThreads - 1) / kTileThreads) >
      (int64_t(1) << 31) - 1)
    return "tokens * heads * head_dim is too large";
  if (p.x == nullptr || p.x_quant == nullptr || p.scale == nullptr || p.mean == nullptr)
    return "x, x_quant, scale and mean must be non-null";
  if (p.workspace == nullptr || reinterpret_cast<uintptr_t>(p.workspace) % 256 != 0 ||
      p.workspace_bytes < smooth_quantize_workspace_bytes(p))
    return "workspace missing, misaligned or smaller than smooth_quantize_workspace_bytes";
  return nullptr;
}

size_t smooth_quantize_workspace_bytes(const SmoothQuantizeParams& p) {
  const int64_t chunks = quant::sum_chunks(p.tokens > 0 ? p.tokens : 1);
  return static_cast<size_t>(p.batch * chunks * p.heads * p.head_dim) * sizeof(double) + 256;
}

cudaError_t smooth_quantize(const SmoothQuantizeParams& p, cudaStream_t stream) {
  if (smooth_quantize_cuda_unsupported_reason(p) != nullptr) return cudaErrorInvalidValue;
  switch (p.dtype) {
    case EstimateDType::kFloat16: return run<__half>(p, stream);
    case EstimateDType::kBFloat16: return run<__nv_bfloat16>(p, stream);
    case EstimateDType::kFloat32: return run<float>(p, stream);
    case EstimateDType::kFloat64: return run<double>(p, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace effattn
