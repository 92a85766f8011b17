// CUDA smooth_quantize (include/effattn/estimate_cuda.h): the per-head mean over the sequence
// (fp64 column sums in fixed order, so the result does not depend on scheduling), then per
// (batch, quantization block, head) the amax of |x - mean| and the int8 values, computed with
// the CPU op's fp32 operations (x - mean, / scale, round half to even).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "effattn/estimate_cuda.h"

namespace effattn {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kSumRows = 256;  // tokens per partial column sum

// The CPU op works on x.to(float): fp64 is rounded to fp32 first.
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(double v) { return __double2float_rn(v); }

int64_t sum_rows(int64_t tokens) {  // grid.y <= 65535 partial sums per batch
  const int64_t min_rows = (tokens + 65534) / 65535;
  return min_rows > kSumRows ? min_rows : kSumRows;
}

// partial[b, chunk, col] = sum over the chunk's tokens of x[b, n, col] (col = h * D + d).
template <typename T>
__global__ void __launch_bounds__(kThreads) column_sum_kernel(const T* __restrict__ x,
                                                              double* __restrict__ partial,
                                                              int64_t tokens, int64_t cols,
                                                              int64_t rows_per_chunk) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (col >= cols) return;
  const int64_t chunk = blockIdx.y, b = blockIdx.z;
  const int64_t n0 = chunk * rows_per_chunk;
  const int64_t n1 = n0 + rows_per_chunk < tokens ? n0 + rows_per_chunk : tokens;
  const T* p = x + (b * tokens + n0) * cols + col;
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;  // four chains: loads in flight
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4, p += 4 * cols) {
    s0 += to_f32(p[0]);
    s1 += to_f32(p[cols]);
    s2 += to_f32(p[2 * cols]);
    s3 += to_f32(p[3 * cols]);
  }
  for (; n < n1; ++n, p += cols) s0 += to_f32(p[0]);
  partial[(b * gridDim.y + chunk) * cols + col] = (s0 + s1) + (s2 + s3);
}

// One CTA per 32 columns of one batch: 8 threads per column sum every 8th chunk, then one
// adds the 8 partials in a fixed order (deterministic, and enough loads in flight).
__global__ void __launch_bounds__(kThreads) mean_kernel(const double* __restrict__ partial,
                                                        float* __restrict__ mean, int64_t tokens,
                                                        int64_t cols, int64_t chunks) {
  __shared__ double part[kThreads / 32][32];
  const int lane = threadIdx.x & 31, slice = threadIdx.x >> 5;
  const int64_t col = static_cast<int64_t>(blockIdx.x) * 32 + lane, b = blockIdx.y;
  double s = 0;
  if (col < cols)
    for (int64_t c = slice; c < chunks; c += kThreads / 32) s += partial[(b * chunks + c) * cols + col];
  part[slice][lane] = s;
  __syncthreads();
  if (slice != 0 || col >= cols) return;
  double total = 0;
  for (int i = 0; i < kThreads / 32; ++i) total += part[i][lane];
  mean[b * cols + col] = static_cast<float>(total / static_cast<double>(tokens));
}

// One warp per (batch, quantization block, head): amax, scale, then the int8 values. The
// second read of the block hits L1/L2.
template <typename T>
__global__ void __launch_bounds__(kThreads) quantize_kernel(const T* __restrict__ x,
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
    bool nan = false;  // amax propagates NaN, as torch.amax does
    for (int64_t t = t0; t < t1; ++t) {
      const T* row = x + ((b * N + t) * H + h) * D;
      for (int64_t d = lane; d < D; d += 32) {
        const float a = fabsf(__fsub_rn(to_f32(row[d]), mu[d]));
        nan |= a != a;
        amax = fmaxf(amax, a);
      }
    }
    for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
    nan = __any_sync(0xffffffffu, nan);
    float s = nan ? __int_as_float(0x7fc00000) : __fdiv_rn(amax, 127.f);
    s = s != s ? s : fmaxf(s, 1e-12f);  // clamp_min(1e-12) keeps NaN
    if (lane == 0) scale_out[(b * blocks + m) * H + h] = s;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t base = ((b * N + t) * H + h) * D;
      for (int64_t d = lane; d < D; d += 32) {
        const float c = __fsub_rn(to_f32(x[base + d]), mu[d]);
        float r = rintf(__fdiv_rn(c, s));  // half to even, like torch.round
        r = fminf(fmaxf(r, -127.f), 127.f);
        xq[base + d] = static_cast<int8_t>(static_cast<int>(r));
      }
    }
  }
}

template <typename T>
cudaError_t run(const SmoothQuantizeParams& p, cudaStream_t stream) {
  const T* x = static_cast<const T*>(p.x);
  const int64_t cols = p.heads * p.head_dim;
  const int64_t rows = sum_rows(p.tokens);
  const int64_t chunks = (p.tokens + rows - 1) / rows;
  double* partial = static_cast<double*>(p.workspace);
  const dim3 sum_grid(static_cast<unsigned>((cols + kThreads - 1) / kThreads),
                      static_cast<unsigned>(chunks), static_cast<unsigned>(p.batch));
  column_sum_kernel<T><<<sum_grid, kThreads, 0, stream>>>(x, partial, p.tokens, cols, rows);
  const dim3 mean_grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>(p.batch));
  mean_kernel<<<mean_grid, kThreads, 0, stream>>>(partial, p.mean, p.tokens, cols, chunks);
  const int64_t blocks = (p.tokens + p.quant_block - 1) / p.quant_block;
  const int64_t units = p.batch * blocks * p.heads;
  int64_t grid = (units + kThreads / 32 - 1) / (kThreads / 32);
  if (grid > (int64_t(1) << 20)) grid = int64_t(1) << 20;  // grid-stride beyond that
  quantize_kernel<T><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(x, p.mean, p.x_quant,
                                                                            p.scale, p, blocks);
  return cudaGetLastError();
}

}  // namespace

const char* smooth_quantize_cuda_unsupported_reason(const SmoothQuantizeParams& p) {
  if (p.batch < 1 || p.batch > 65535) return "batch must be in [1, 65535]";
  if (p.tokens < 1) return "x must have at least one token";
  if (p.heads < 1 || p.head_dim < 1) return "heads and head_dim must be >= 1";
  if (p.heads * p.head_dim > (int64_t(1) << 31) - kThreads) return "heads * head_dim is too large";
  if (p.quant_block < 1) return "quant_block must be >= 1";
  if (p.x == nullptr || p.x_quant == nullptr || p.scale == nullptr || p.mean == nullptr)
    return "x, x_quant, scale and mean must be non-null";
  if (p.workspace == nullptr || reinterpret_cast<uintptr_t>(p.workspace) % 256 != 0 ||
      p.workspace_bytes < smooth_quantize_workspace_bytes(p))
    return "workspace missing, misaligned or smaller than smooth_quantize_workspace_bytes";
  return nullptr;
}

size_t smooth_quantize_workspace_bytes(const SmoothQuantizeParams& p) {
  const int64_t rows = sum_rows(p.tokens > 0 ? p.tokens : 1);
  const int64_t chunks = (p.tokens + rows - 1) / rows;
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
