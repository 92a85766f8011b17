// Torch-free launcher API of the CUDA quantized QK estimation (DESIGN.md §6); the same results
// as the CPU ops in csrc/cpu/estimate_cpu.cpp.
//
// smooth_quantize: x [B, N, H, D] (fp16, bf16, fp32 or fp64, contiguous) -> x_quant int8
// [B, N, H, D], scale fp32 [B, ceil(N / quant_block), H], mean fp32 [B, H, D]. The mean is
// summed in fp64, so it can differ from the CPU op's by an ulp; given the mean, scale and
// x_quant are bit-identical to the CPU formula (round half to even of (x - mean) / scale).
//
// estimate_block_mask: q [B, N, H, D], k [B, N, H_kv, D] (fp16 or bf16, contiguous), the
// outputs of smooth_quantize for both, log_threshold fp32 [H] -> kv_num_blocks int32
// [B, H, Mq] and kv_indices int32 [B, H, Mq, Mk]: each row lists its kept key blocks in
// increasing order, then zeros (the CPU op's layout). Passes, all on one stream:
//   1. key prep: per key the scale and the exact key bias mu_q . (k - mu_k) of every query
//      head of its group, plus per 32-key group the maxima that bound them;
//   2. stats: exact softmax statistics (m, l) of every query row over its always-kept keys
//      (sink, local window, diagonal block) with fp16/bf16 tensor cores, one pass over those
//      keys; writes per row (q scale, query bias q . mu_k, bound = m + log l + log tau, and a
//      threshold for the integer pre-filter);
//   3. estimate: int8 mma.sync m16n8k32 Q8 K8^T over every key block that is not always kept;
//      per 64 x 32 tile an upper bound from the row maxima of the int32 products rejects the
//      tile, else the exact CPU formula decides; kept blocks go to a bitmask workspace;
//   4. compact: bitmask + always-kept blocks -> kv_num_blocks / kv_indices.
// Decisions equal the CPU op's except for entries within rounding of the threshold (ties):
// the bias terms and m + log l are summed in another order.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "effattn/macros.h"

namespace effattn {
namespace cuda {

enum class EstimateDType : int { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2, kFloat64 = 3 };

struct SmoothQuantizeParams {
  EstimateDType dtype = EstimateDType::kBFloat16;
  int64_t batch = 1, tokens = 0, heads = 1, head_dim = 64;
  int64_t quant_block = 1;  // tokens sharing one scale
  const void* x = nullptr;  // contiguous [B, N, H, D]
  int8_t* x_quant = nullptr;
  float* scale = nullptr;
  float* mean = nullptr;
  void* workspace = nullptr;  // >= smooth_quantize_workspace_bytes, 256-byte aligned
  size_t workspace_bytes = 0;
};

struct EstimateCudaParams {
  EstimateDType dtype = EstimateDType::kBFloat16;  // of q and k: fp16 or bf16
  int64_t batch = 1, tokens = 0, heads = 1, kv_heads = 1, head_dim = 64;
  int64_t block_q = 64, block_k = 64;  // 64 or 128
  int64_t quant_block = 1;
  int64_t sink_tokens = 0, local_tokens = 0;
  bool is_causal = true;
  float scale = 0.125f;
  // Contiguous inputs; q, k, q_quant, k_quant 16-byte aligned.
  const void* q = nullptr;
  const void* k = nullptr;
  const int8_t* q_quant = nullptr;
  const int8_t* k_quant = nullptr;
  const float* q_scale = nullptr;  // [B, ceil(N / quant_block), H]
  const float* k_scale = nullptr;  // [B, ceil(N / quant_block), H_kv]
  const float* q_mean = nullptr;   // [B, H, D]
  const float* k_mean = nullptr;   // [B, H_kv, D]
  const float* log_threshold = nullptr;  // [H]
  int32_t* kv_num_blocks = nullptr;      // [B, H, Mq]
  int32_t* kv_indices = nullptr;         // [B, H, Mq, Mk], every entry written
  void* workspace = nullptr;  // >= estimate_workspace_bytes, 256-byte aligned
  size_t workspace_bytes = 0;
};

// nullptr when supported, else a static message naming the problem.
const char* smooth_quantize_cuda_unsupported_reason(const SmoothQuantizeParams& p);
size_t smooth_quantize_workspace_bytes(const SmoothQuantizeParams& p);
cudaError_t smooth_quantize(const SmoothQuantizeParams& p, cudaStream_t stream);

const char* estimate_cuda_unsupported_reason(const EstimateCudaParams& p);
size_t estimate_workspace_bytes(const EstimateCudaParams& p);
cudaError_t estimate_block_mask(const EstimateCudaParams& p, cudaStream_t stream);

// ---- Block-map geometry, shared by the kernels and host-side checks ----------------------
// For query block qb (rows [r0, r1)), the key blocks the CPU op keeps without estimating
// form [0, sink_end) and [lo, hi]; every other visible key block is fully visible to every
// row of qb (causal: it ends before r0), so the estimation never needs an element mask
// except for rows >= N and, non-causal, keys >= N.
struct MapGeometry {
  int n = 0, block_q = 64, block_k = 64;
  int sink = 0, local = 0;  // clamped to [0, n]: larger values mean the same
  bool causal = true;
  int mq = 0, mk = 0;
};

struct KeptBlocks {
  int sink_end = 0;  // sink blocks [0, sink_end)
  int lo = 0, hi = 0;  // local window and diagonal blocks [lo, hi]
};

EFFATTN_HOST_DEVICE KeptBlocks kept_blocks(const MapGeometry& g, int qb) {
  const int r0 = qb * g.block_q;
  const int last = (r0 + g.block_q < g.n ? r0 + g.block_q : g.n) - 1;
  KeptBlocks k;
  // Sink keys c < sink, visible from some row (c <= last when causal).
  const int sink_keys = g.causal ? (g.sink < last + 1 ? g.sink : last + 1) : g.sink;
  k.sink_end = sink_keys > 0 ? (sink_keys - 1) / g.block_k + 1 : 0;
  // Local window: causal [i - local + 1, i], else (i - local, i + local); it contains i,
  // so with the diagonal blocks of r0..last the union is one range of blocks.
  const int lo_tok = g.local > 0 ? (r0 - g.local + 1 > 0 ? r0 - g.local + 1 : 0) : r0;
  int hi_tok = last;
  if (!g.causal && g.local > 0) hi_tok = last + g.local - 1 < g.n - 1 ? last + g.local - 1 : g.n - 1;
  k.lo = lo_tok / g.block_k;
  k.hi = hi_tok / g.block_k;
  return k;
}

// Key block kb is in the map regardless of the estimate.
EFFATTN_HOST_DEVICE bool always_kept_block(const KeptBlocks& k, int kb) {
  return kb < k.sink_end || (kb >= k.lo && kb <= k.hi);
}

// Key block kb needs the estimate (visible and not always kept).
EFFATTN_HOST_DEVICE bool estimated_block(const MapGeometry& g, const KeptBlocks& k, int kb) {
  if (always_kept_block(k, kb)) return false;
  return kb < k.lo || (!g.causal && kb > k.hi && kb < g.mk);
}

}  // namespace cuda
}  // namespace effattn
