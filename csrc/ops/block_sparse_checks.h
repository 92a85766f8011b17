// Argument checks of the block-sparse attention ops (DESIGN.md §5, §8). Every check runs
// before any kernel and names the offending argument and the allowed range. Map values
// (kv_num_blocks, kv_indices) are checked with tensor ops on the maps' own device, so only a
// few scalars cross to the host; the CUDA binding can reuse these checks unchanged.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>
#include <vector>

namespace effattn {

// One packed sequence: query rows [q_start, q_start + q_len) and key rows
// [k_start, k_start + k_len) of the token axis flattened over the batch (row b·N + n for a
// dense batch, the cu_seqlens ranges of batch row 0 for a packed one), and the batch index
// of its block maps (0 when the maps broadcast over the batch).
struct BlockSparseSequence {
  int64_t q_start = 0, q_len = 0;
  int64_t k_start = 0, k_len = 0;
  int64_t map_batch = 0;
};

// q [B, Nq, H, D], k/v [B, Nk, H_kv, D], kv_num_blocks [Bm, Hm, Mq], kv_indices
// [Bm, Hm, Mq, max_blocks] (Bm ∈ {1, num_seqs}, Hm ∈ {1, H}).
// (Torch-free on purpose: it can move to include/effattn/ once the CUDA kernels need it.)
struct BlockSparseProblem {
  int64_t batch = 0;
  int64_t q_tokens = 0;  // Nq
  int64_t k_tokens = 0;  // Nk
  int64_t heads = 0;     // H
  int64_t kv_heads = 0;  // H_kv
  int64_t head_dim = 0;  // D
  int64_t block_q = 0;
  int64_t block_k = 0;
  int64_t map_batch = 0;   // Bm
  int64_t map_heads = 0;   // Hm
  int64_t map_q_blocks = 0;  // Mq of the maps
  int64_t max_blocks = 0;
  int64_t k_blocks = 0;  // key blocks of the longest key sequence: ceil(max k_len / block_k)
  bool is_causal = false;
  bool varlen = false;
  double scale = 1.0;
  std::vector<BlockSparseSequence> seqs;

  int64_t group_size() const { return heads / kv_heads; }
  int64_t map_head(int64_t h) const { return map_heads == 1 ? 0 : h; }
};

// Validates q, k, v, the block maps (shapes, int32, device, values: 0 <= kv_num_blocks <=
// max_blocks, live kv_indices in [0, Mk) of their sequence and not repeated within a row),
// block sizes (64 or 128), scale and cu_seqlens (both or neither; B == 1; start at 0,
// non-decreasing, end at Nq / Nk) and returns the problem (scale resolved: 1/sqrt(D)).
BlockSparseProblem check_block_sparse_inputs(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& kv_num_blocks,
    const at::Tensor& kv_indices, int64_t block_q, int64_t block_k, bool is_causal,
    std::optional<double> scale, const std::optional<at::Tensor>& cu_seqlens_q,
    const std::optional<at::Tensor>& cu_seqlens_k);

// The extra tensors of `block_sparse_attn_backward`.
void check_block_sparse_backward_inputs(const BlockSparseProblem& problem, const at::Tensor& q,
                                        const at::Tensor& grad_out,
                                        const std::optional<at::Tensor>& grad_lse,
                                        const at::Tensor& out, const at::Tensor& lse);

}  // namespace effattn
