// Pass 2 of the CUDA estimation (include/effattn/estimate_cuda.h): exact softmax statistics of
// every query row over its always-kept keys (sink, local window, diagonal block), in one pass
// over those keys with fp16/bf16 tensor cores (fp32 accumulation), and the per-row record the
// int8 pass reads: (q scale, query bias q . mu_k, bound = m + log l + log tau, pre-filter
// threshold).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "effattn/cuda/sm80_ptx.cuh"
#include "estimate_common.cuh"

namespace effattn {
namespace cuda {
namespace est {
namespace {

// A CTA: kBlocks consecutive 64-row blocks of one (batch, query head), 4 warps x 16 rows each.
// Its blocks share most key chunks (local windows), so it streams the union of their chunk
// lists once; each warp takes exactly its own block's list, in the same order, so its (m, l)
// are those of a CTA per block. Per entry the kept test is an interval test (row_keep), and
// chunks that every row of the warp keeps whole skip it.
constexpr int kBlocks = 2;
constexpr int kRows = 64;                  // rows per block
constexpr int kThreads = 128 * kBlocks;    // 4 warps x 16 rows per block
constexpr unsigned kAll = 0xffffffffu;

template <typename T, int D>
struct StatsCfg {
  static constexpr int kRowBytes = D * 2;
  static constexpr int kTileBytes = kRows * kRowBytes;  // 64 rows (queries or keys)
  static constexpr int kQBytes = kBlocks * kTileBytes;  // the CTA's query rows
  static constexpr int kSmem = kQBytes + 2 * kTileBytes;  // Q + two key stages
  static constexpr int kPieces = kRows * kRowBytes / 16;
};

template <typename T>
__device__ __forceinline__ float elem(const unsigned char* p) {
  return __bfloat162float(*reinterpret_cast<const __nv_bfloat16*>(p));
}
template <>
__device__ __forceinline__ float elem<__half>(const unsigned char* p) {
  return __half2float(*reinterpret_cast<const __half*>(p));
}

// Merge two (max, sum) softmax partials; -inf max = empty.
__device__ __forceinline__ void merge(float& m, float& l, float m2, float l2) {
  const float mn = fmaxf(m, m2);
  if (mn == -INFINITY) return;
  l = (m == -INFINITY ? 0.f : l * expf(m - mn)) + (m2 == -INFINITY ? 0.f : l2 * expf(m2 - mn));
  m = mn;
}

// One chunk's scores s (this lane's rows i0, i0 + 8, keys cbase + nt * 8 + {0, 1}) into the
// lane's running (m, l). kMasked: entries the row does not keep are -inf; else every entry is
// kept (the caller checked). The floating-point operations are the same either way.
template <bool kMasked>
__device__ __forceinline__ void update_stats(float (&s)[8][4], float (&m)[2], float (&l)[2],
                                             const RowKeep (&rk)[2], int cbase, float scale) {
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float cmax = -INFINITY;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        // RN(s * scale) as the unfused FMUL of a plain multiply; -inf where not kept.
        float v = __fmul_rn(s[nt][2 * hf + e], scale);
        if constexpr (kMasked) {
          const int c = cbase + nt * 8 + e;  // branch-free: | and & do not short-circuit
          const bool kept = (c < rk[hf].sink_hi) | ((c >= rk[hf].lo) & (c <= rk[hf].hi));
          v = kept ? v : -INFINITY;
        }
        s[nt][2 * hf + e] = v;
        cmax = fmaxf(cmax, v);
      }
    const float mn = fmaxf(m[hf], cmax);
    if (mn != -INFINITY) {
      float sum = 0.f;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) sum += expf(s[nt][2 * hf] - mn) + expf(s[nt][2 * hf + 1] - mn);
      l[hf] = (m[hf] == -INFINITY ? 0.f : l[hf] * expf(m[hf] - mn)) + sum;
      m[hf] = mn;
    }
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) stats_kernel(const EstArgs a) {
  using Cfg = StatsCfg<T, D>;
  constexpr int kRB = Cfg::kRowBytes;
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* q_s = smem;
  unsigned char* k_s = smem + Cfg::kQBytes;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const MapGeometry g = a.geo;
  const int N = g.n, H = a.heads;
  const int h = blockIdx.y, b = blockIdx.z, hk = h / a.group;
  const int cta_r0 = blockIdx.x * (kBlocks * kRows);
  const T* q = static_cast<const T*>(a.q);
  const T* k = static_cast<const T*>(a.k);

  for (int i = tid; i < kBlocks * Cfg::kPieces; i += kThreads) {
    const int r = i / (kRB / 16), c = i % (kRB / 16);
    const bool ok = cta_r0 + r < N;
    const T* src = q + ((static_cast<int64_t>(b) * N + (ok ? cta_r0 + r : 0)) * H + h) * D + c * 8;
    cp_async_16(smem_u32(q_s + swz<kRB>(r, c)), src, ok);
  }
  cp_async_commit();

  // Chunk lists: this warp's block's, and the CTA's (their union, in increasing order).
  StatsChunks lists[kBlocks];
#pragma unroll
  for (int j = 0; j < kBlocks; ++j) lists[j] = stats_chunks(g, cta_r0 + j * kRows);
  const StatsChunks mine = stats_chunks(g, cta_r0 + (warp / 4) * kRows);  // == lists[warp / 4]
  auto next_chunk = [&](int c) {
    int x = kNoChunk;
#pragma unroll
    for (int j = 0; j < kBlocks; ++j) {
      const int y = stats_next(lists[j], c);
      x = y < x ? y : x;
    }
    return x;
  };
  // This thread's 16-byte pieces of a key tile: rows r0k + p * kRowStep, chunk ck (fixed).
  static_assert(Cfg::kPieces % kThreads == 0 && kThreads % (kRB / 16) == 0, "whole pieces per thread");
  constexpr int kPiecesPerThread = Cfg::kPieces / kThreads, kRowStep = kThreads / (kRB / 16);
  const int r0k = tid / (kRB / 16), ck = tid % (kRB / 16);
  const T* kbase = k + (static_cast<int64_t>(b) * N * a.kv_heads + hk) * D + ck * 8;
  const int64_t krow = static_cast<int64_t>(a.kv_heads) * D;
  // swz(r0k + p * kRowStep, ck) == swz(r0k, ck) + p * kRowStep * kRB: kRowStep is a multiple of
  // the swizzle's period in rows (checked in tests/cuda/estimate_prepass_check.cpp).
  const uint32_t k_dst = smem_u32(k_s) + swz<kRB>(r0k, ck);
  auto load_keys = [&](int stage, int chunk) {
#pragma unroll
    for (int p = 0; p < kPiecesPerThread; ++p) {
      const int key = chunk * kChunkKeys + r0k + p * kRowStep;
      const bool ok = key < N;
      cp_async_16(k_dst + stage * Cfg::kTileBytes + p * kRowStep * kRB, kbase + (ok ? key : 0) * krow, ok);
    }
  };
  int cur = next_chunk(0);
  if (cur != kNoChunk) load_keys(0, cur);
  cp_async_commit();
  cp_async_wait<1>();  // the Q tile
  __syncthreads();

  uint32_t qa[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks)
    ldmatrix_x4(qa[ks], smem_u32(q_s + swz<kRB>(warp * 16 + lda_row(lane), 2 * ks + lda_chunk(lane))));

  // Query bias q_i . mu_k in fp32 (the CPU op's einsum term), row by row over the warp.
  const float* mu_k = a.k_mean + (static_cast<int64_t>(b) * a.kv_heads + hk) * D;
  float mu[D / 32];
#pragma unroll
  for (int j = 0; j < D / 32; ++j) mu[j] = mu_k[lane + 32 * j];
  float qbias[2] = {0.f, 0.f};
  for (int r = 0; r < 16; ++r) {
    float s = 0.f;
#pragma unroll
    for (int j = 0; j < D / 32; ++j) {
      const int d = lane + 32 * j;
      s = fmaf(elem<T>(q_s + swz<kRB>(warp * 16 + r, d / 8) + (d % 8) * 2), mu[j], s);
    }
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(kAll, s, off);
    if ((lane >> 2) == (r & 7)) {  // scalar selects keep qbias in registers
      if (r < 8) qbias[0] = s;
      else qbias[1] = s;
    }
  }

  // Rows i0 and i0 + 8 of this lane; per-lane partial (max, sum) over its own columns.
  const int i0 = cta_r0 + warp * 16 + (lane >> 2);
  const RowKeep rk[2] = {row_keep(g, i0), row_keep(g, i0 + 8)};
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
  for (int it = 0; cur != kNoChunk; ++it) {
    const int nxt = next_chunk(cur + 1);
    if (nxt != kNoChunk) load_keys((it + 1) & 1, nxt);
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    if (stats_visits(mine, cur)) {  // warp-uniform
      const unsigned char* kt = k_s + (it & 1) * Cfg::kTileBytes;
      float s[8][4];
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] = 0.f;
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks) {
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          uint32_t bf[4];
          ldmatrix_x4(bf, smem_u32(kt + swz<kRB>(np * 16 + ldb_row(lane), 2 * ks + ldb_chunk(lane))));
          mma_16816<T>(s[2 * np], qa[ks], bf[0], bf[1]);
          mma_16816<T>(s[2 * np + 1], qa[ks], bf[2], bf[3]);
        }
      }
      const int c0 = cur * kChunkKeys;
      const int cbase = c0 + 2 * (lane & 3);
      if (__all_sync(kAll, row_keeps_chunk(rk[0], c0) && row_keeps_chunk(rk[1], c0)))
        update_stats<false>(s, m, l, rk, cbase, a.scale);
      else
        update_stats<true>(s, m, l, rk, cbase, a.scale);
    }
    __syncthreads();  // the next iteration refills the other stage
    cur = nxt;
  }

#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    for (int off = 1; off < 4; off <<= 1) {
      const float m2 = __shfl_xor_sync(kAll, m[hf], off);
      const float l2 = __shfl_xor_sync(kAll, l[hf], off);
      merge(m[hf], l[hf], m2, l2);
    }
    const int i = i0 + 8 * hf;
    if ((lane & 3) != 0 || i >= N) continue;
    const float bound = (m[hf] + logf(l[hf])) + a.log_threshold[h];
    const float sq =
        a.q_scale[(static_cast<int64_t>(b) * a.scale_rows + i / a.quant_block) * H + h];
    // Pre-filter threshold on t = sq sk acc + key bias (see estimate_int8.cu): t < thr implies
    // scale * (t + qbias) < bound with margin; -inf disables the pre-filter for the row.
    float thr = -INFINITY;
    if (a.scale > 0.f && sq >= 0.f) {
      const float lim = bound / a.scale;
      thr = lim - qbias[hf];
      if (isfinite(thr)) thr -= kBoundSlack * (fabsf(lim) + fabsf(qbias[hf]));
    }
    a.rowinfo[(static_cast<int64_t>(b) * H + h) * N + i] = make_float4(sq, qbias[hf], bound, thr);
  }
}

template <typename T, int D>
cudaError_t launch_stats_t(const EstArgs& a, cudaStream_t stream) {
  constexpr int kSmem = StatsCfg<T, D>::kSmem;
  const cudaError_t err =
      cudaFuncSetAttribute(stats_kernel<T, D>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>((a.geo.n + kBlocks * kRows - 1) / (kBlocks * kRows)),
                  static_cast<unsigned>(a.heads), static_cast<unsigned>(a.batch));
  stats_kernel<T, D><<<grid, kThreads, kSmem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_stats(const EstArgs& a, bool f16, cudaStream_t stream) {
  switch (a.head_dim) {
    case 32: return f16 ? launch_stats_t<__half, 32>(a, stream) : launch_stats_t<__nv_bfloat16, 32>(a, stream);
    case 64: return f16 ? launch_stats_t<__half, 64>(a, stream) : launch_stats_t<__nv_bfloat16, 64>(a, stream);
    case 128: return f16 ? launch_stats_t<__half, 128>(a, stream) : launch_stats_t<__nv_bfloat16, 128>(a, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace est
}  // namespace cuda
}  // namespace effattn
