// Passes 1 and 4 of the CUDA estimation (include/effattn/estimate_cuda.h): the per-key record
// (key scale, exact key bias per query head, per-32-key bounds) and the compaction of the
// kept-block bitmask into kv_num_blocks / kv_indices.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "estimate_common.cuh"

namespace effattn {
namespace cuda {
namespace est {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr unsigned kAll = 0xffffffffu;

__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

__device__ __forceinline__ float warp_max(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(kAll, v, off));
  return v;
}
__device__ __forceinline__ float warp_min(float v) {
  for (int off = 16; off > 0; off >>= 1) v = fminf(v, __shfl_xor_sync(kAll, v, off));
  return v;
}

// One warp per (batch, kv head, 32-key group); lane = key. Writes the key scales, the exact key
// biases mu_q[h] . (k - mu_k) of the group's query heads (the CPU op's fp32 terms, summed in
// another order) and, per group, the bounds the pre-filter uses: max scale, and
// max bias + relative slack (+inf when the bound would not hold: a negative or NaN scale, a
// NaN bias).
//
// The warp first copies its 32 key rows to shared memory with coalesced 16-byte cp.async
// (rows padded by 16 bytes, so that lane = row reads are conflict-free), and mu_k and each
// query head's mu_q likewise; the lane then sums its own row, d = 0 .. D - 1 in order (the
// same fmaf chain as reading the row from global memory).
constexpr int kPrepWarps = 4;
constexpr int kPrepThreads = 32 * kPrepWarps;

template <int D>
struct PrepSmem {
  static constexpr int kRowBytes = 2 * D + 16;
  unsigned char keys[kGroupKeys * kRowBytes];
  float mu_k[D];
  float mu_q[D];
};

template <typename T, int D>
__global__ void __launch_bounds__(kPrepThreads) key_prep_kernel(const EstArgs a) {
  __shared__ __align__(16) PrepSmem<D> smem_all[kPrepWarps];
  constexpr int kRowBytes = PrepSmem<D>::kRowBytes;
  constexpr int kPieces = D / 8;  // 16-byte pieces per key row
  const int lane = threadIdx.x & 31, warp = threadIdx.x / 32;
  const int group32 = blockIdx.x * kPrepWarps + warp;
  if (group32 >= 2 * a.chunks) return;  // whole warps; no CTA barrier below
  PrepSmem<D>& sm = smem_all[warp];
  const int hk = blockIdx.y, b = blockIdx.z;
  const int N = a.geo.n;
  const int c = group32 * kGroupKeys + lane;
  const bool live = c < N;
  const T* k = static_cast<const T*>(a.k);
  for (int i = lane; i < kGroupKeys * kPieces; i += 32) {
    const int r = i / kPieces, p = i % kPieces;
    const int key = group32 * kGroupKeys + r;
    const bool ok = key < N;
    const T* src = k + ((static_cast<int64_t>(b) * N + (ok ? key : 0)) * a.kv_heads + hk) * D + 8 * p;
    cp_async_16(smem_u32(sm.keys + r * kRowBytes + 16 * p), src, ok);
  }
  const float* mu_k = a.k_mean + (static_cast<int64_t>(b) * a.kv_heads + hk) * D;
  for (int i = lane; i < D; i += 32) sm.mu_k[i] = mu_k[i];
  cp_async_commit();

  float* rec = a.aux + ((static_cast<int64_t>(b) * a.kv_heads + hk) * a.chunks + group32 / 2) *
                           a.rec_floats;
  const int slot = (group32 & 1) * kGroupKeys + lane;
  const int half = group32 & 1;

  const float sk =
      live ? a.k_scale[(static_cast<int64_t>(b) * a.scale_rows + c / a.quant_block) * a.kv_heads + hk]
           : 0.f;
  rec[slot] = sk;
  // Dead lanes give 0 to the max (bounds only need to cover live keys with scales >= 0).
  const float sk_max = warp_max(live ? sk : 0.f);
  const float sk_min = warp_min(live ? sk : INFINITY);
  const bool bad_scale = __any_sync(kAll, live && sk != sk) || sk_min < 0.f;
  if (lane == 0) rec[kRecStat + half] = sk_max;

  cp_async_wait<0>();
  const unsigned char* krow = sm.keys + lane * kRowBytes;
  for (int g = 0; g < a.group; ++g) {
    const float* mu_q = a.q_mean + (static_cast<int64_t>(b) * a.heads + hk * a.group + g) * D;
    __syncwarp();  // the previous head's mu_q reads are done (and, for g = 0, the copies visible)
    for (int i = lane; i < D; i += 32) sm.mu_q[i] = mu_q[i];
    __syncwarp();
    float bias = -INFINITY;
    if (live) {
      float s = 0.f;
#pragma unroll
      for (int d0 = 0; d0 < D; d0 += 8) {  // 16-byte reads of the key row
        const uint4 raw = *reinterpret_cast<const uint4*>(krow + 2 * d0);
        const T* v = reinterpret_cast<const T*>(&raw);
        const float4 mk0 = *reinterpret_cast<const float4*>(sm.mu_k + d0);
        const float4 mk1 = *reinterpret_cast<const float4*>(sm.mu_k + d0 + 4);
        const float4 mq0 = *reinterpret_cast<const float4*>(sm.mu_q + d0);
        const float4 mq1 = *reinterpret_cast<const float4*>(sm.mu_q + d0 + 4);
        const float mk[8] = {mk0.x, mk0.y, mk0.z, mk0.w, mk1.x, mk1.y, mk1.z, mk1.w};
        const float mq[8] = {mq0.x, mq0.y, mq0.z, mq0.w, mq1.x, mq1.y, mq1.z, mq1.w};
#pragma unroll
        for (int j = 0; j < 8; ++j) s = fmaf(__fsub_rn(to_f32(v[j]), mk[j]), mq[j], s);
      }
      bias = s;
    }
    float* hrec = rec + kRecFloats * (1 + g);
    hrec[slot] = bias;
    const float bias_max = warp_max(live ? bias : -INFINITY);
    const bool bad_bias = __any_sync(kAll, live && bias != bias);
    if (lane == 0) {
      float bound;
      if (bad_scale || bad_bias) bound = INFINITY;
      else if (bias_max == -INFINITY) bound = -INFINITY;  // no live key in the group
      else bound = bias_max + kBoundSlack * fabsf(bias_max);
      hrec[kRecStat + half] = bound;
    }
  }
}

// One warp per (batch, head, query block): the estimated bits plus the always-kept blocks,
// listed in increasing order, then zeros up to Mk (the CPU op's layout).
__global__ void __launch_bounds__(kThreads) compact_kernel(const EstArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + threadIdx.x / 32;
  if (row >= static_cast<int64_t>(a.batch) * a.heads * a.geo.mq) return;
  const int mk = a.geo.mk;
  const KeptBlocks kept = kept_blocks(a.geo, static_cast<int>(row % a.geo.mq));
  const uint32_t* bits = a.bits + row * a.words;
  int32_t* out = a.indices + row * mk;
  int n = 0;
  for (int base = 0; base < mk; base += 32) {
    const int kb = base + lane;
    const uint32_t word = bits[base >> 5];
    const bool keep = kb < mk && (((word >> lane) & 1u) != 0u || always_kept_block(kept, kb));
    const unsigned mask = __ballot_sync(kAll, keep);
    if (keep) out[n + __popc(mask & ((1u << lane) - 1u))] = kb;
    n += __popc(mask);
  }
  for (int p = n + lane; p < mk; p += 32) out[p] = 0;
  if (lane == 0) a.num_blocks[row] = n;
}

}  // namespace

template <int D>
void launch_key_prep_d(const EstArgs& a, bool f16, dim3 grid, cudaStream_t stream) {
  if (f16) key_prep_kernel<__half, D><<<grid, kPrepThreads, 0, stream>>>(a);
  else key_prep_kernel<__nv_bfloat16, D><<<grid, kPrepThreads, 0, stream>>>(a);
}

cudaError_t launch_key_prep(const EstArgs& a, bool f16, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((2 * a.chunks + kPrepWarps - 1) / kPrepWarps),
                  static_cast<unsigned>(a.kv_heads), static_cast<unsigned>(a.batch));
  switch (a.head_dim) {
    case 32: launch_key_prep_d<32>(a, f16, grid, stream); break;
    case 64: launch_key_prep_d<64>(a, f16, grid, stream); break;
    case 128: launch_key_prep_d<128>(a, f16, grid, stream); break;
    default: return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t launch_compact(const EstArgs& a, cudaStream_t stream) {
  const int64_t rows = static_cast<int64_t>(a.batch) * a.heads * a.geo.mq;
  compact_kernel<<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace est
}  // namespace cuda
}  // namespace effattn
