// Torch-free launcher API of CUDA block-sparse attention (DESIGN.md §1, §5): the SM80-class
// attention core (attn_fwd_sm80.cuh / attn_bwd_sm80.cuh) run with the block-list policy
// (cuda/block_list_policy.cuh). No second attention kernel.
//
// Layout: q/o/do/dq `[B, Nq, H, D]`, k/v/dk/dv `[B, Nk, H_kv, D]`, lse/dlse fp32 `[B, Nq, H]`;
// element strides (TensorStrides of na_cuda.h, token[0] = the N axis), last axis contiguous.
// GQA/MQA: query head h uses kv head h / (H / H_kv).
//
// Maps (device, int32): kv_num_blocks [Bm, Hm, Mq], kv_indices [Bm, Hm, Mq, max_blocks]
// (FlexAttention convention, Bm in {1, B or num_seqs}, Hm in {1, H}, broadcast axes given
// stride 0, entries past kv_num_blocks ignored, live entries valid and distinct), and the
// transposed map the backward needs: q_num_blocks [Bm, Hm, Mk], q_indices [Bm, Hm, Mk, Mq]
// (row n lists the query blocks whose kv_indices row lists key block n, first q_num_blocks
// entries). The last axis of kv_indices / q_indices must be contiguous.
//
// Packed variable-length batches: cu_seqlens_q / cu_seqlens_k (device int64 [num_seqs + 1])
// with batch == 1; the map batch axis then indexes sequences and block indices are local to
// each sequence; max_q_len / max_k_len give the longest sequences (grid sizes).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "effattn/na_cuda.h"  // DType, TensorStrides

namespace effattn {
namespace cuda {

struct MapStrides {  // element strides of a map's (batch, head, block) axes; 0 = broadcast
  int64_t batch = 0;
  int64_t head = 0;
  int64_t block = 0;
};

struct BlockSparseParams {
  DType dtype = DType::kBFloat16;
  int64_t batch = 1;     // B
  int64_t q_tokens = 0;  // Nq
  int64_t k_tokens = 0;  // Nk
  int64_t heads = 1;     // H
  int64_t kv_heads = 1;  // H_kv
  int64_t head_dim = 64;
  int64_t block_q = 128;  // 64 or 128
  int64_t block_k = 128;  // 64 or 128
  bool is_causal = false;
  float scale = 0.125f;

  // Varlen (nullptr: dense batch).
  const int64_t* cu_seqlens_q = nullptr;
  const int64_t* cu_seqlens_k = nullptr;
  int64_t num_seqs = 0;
  int64_t max_q_len = 0;
  int64_t max_k_len = 0;

  // Maps.
  const int32_t* kv_num_blocks = nullptr;
  const int32_t* kv_indices = nullptr;
  MapStrides kv_num_blocks_strides, kv_indices_strides;
  int64_t max_blocks = INT32_MAX;  // kv_indices.size(-1): the kernels clamp counts to it
  const int32_t* q_num_blocks = nullptr;  // backward only
  const int32_t* q_indices = nullptr;
  MapStrides q_num_blocks_strides, q_indices_strides;
  bool per_head_maps = false;  // Hm == H > 1 (the dK/dV pass then runs once per GQA member)

  // Forward.
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  float* lse = nullptr;  // forward: optional; backward: required input
  TensorStrides q_strides, k_strides, v_strides, o_strides, lse_strides;

  // Backward.
  const void* dout = nullptr;
  const float* dlse = nullptr;  // optional
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  TensorStrides do_strides, dlse_strides, dq_strides, dk_strides, dv_strides;
  void* workspace = nullptr;  // >= block_sparse_backward_workspace_bytes, 256-byte aligned
  size_t workspace_bytes = 0;
};

// nullptr when supported, else a static message naming the problem.
const char* block_sparse_cuda_unsupported_reason(const BlockSparseParams& p, bool backward);

// Bytes of workspace the backward needs: delta (fp32 [B, Nq, H]) and, for per-head maps under
// GQA, per-member dK/dV partials (2 x G x [B, Nk, H_kv, D] in the input dtype), and on Hopper
// with head dim 64 / 128 the fused backward's fp32 dQ accumulator [B, Nq, H, D] (unless
// EFFATTN_SM90_BWD=split) — tile-contiguous, [B, H, slots, 64, D] with slots = ceil(Nq / 64)
// (dense) or Nq / 64 + num_seqs (varlen), where the 128-key kernel uses it (head dim 128,
// block_k 128). Depends on the current device and the EFFATTN_SM90_* settings: query it on the
// launch device.
size_t block_sparse_backward_workspace_bytes(const BlockSparseParams& p);

// Forward: writes o (every valid row) and lse (when non-null). cudaErrorInvalidValue when
// unsupported.
cudaError_t block_sparse_forward(const BlockSparseParams& p, cudaStream_t stream);

// Backward: reads q, k, v, o, lse, dout (, dlse) and both maps; writes dq, dk, dv (all rows).
cudaError_t block_sparse_backward(const BlockSparseParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace effattn
