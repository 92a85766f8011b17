// Argument checks of the lightning-attention ops (DESIGN.md §7, §8). Every check runs before
// any kernel and names the offending argument and the allowed range. The CUDA binding
// reuses them unchanged.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

namespace effattn {

// One lightning-attention problem: q, k [B, N, H, D], v [B, N, H, E], states
// [num_states, H, D, E]. Without cu_seqlens there is one sequence per batch row
// (num_states == B); with cu_seqlens, B == 1 and num_states == len(cu_seqlens) - 1.
// (Torch-free on purpose: it can move to include/effattn/ once the CUDA kernels need it.)
struct LightningProblem {
  int64_t batch = 0;
  int64_t tokens = 0;
  int64_t heads = 0;
  int64_t dim_k = 0;  // D
  int64_t dim_v = 0;  // E
  int64_t num_states = 0;
  bool varlen = false;
  double scale = 1.0;
};

// The dtype of states (initial/final/decode): float64 for float64 inputs, else float32.
at::ScalarType lightning_state_dtype(at::ScalarType input_dtype);

// q, k, v, slope (values >= 0), scale, initial_state and cu_seqlens (values: start at 0,
// non-decreasing, end at N) of `lightning_attn`.
LightningProblem check_lightning_inputs(const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& slope, double scale,
                                        const std::optional<at::Tensor>& initial_state,
                                        const std::optional<at::Tensor>& cu_seqlens);

// The extra tensors of `lightning_attn_backward`.
void check_lightning_backward_inputs(const LightningProblem& problem, const at::Tensor& q,
                                     const at::Tensor& v, const at::Tensor& grad_out,
                                     const std::optional<at::Tensor>& grad_final_state);

// `lightning_decode`: q, k [B, H, D] (or [B, 1, H, D]), v [B, H, E] (or [B, 1, H, E]),
// state [B, H, D, E] of the state dtype.
LightningProblem check_lightning_decode_inputs(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, const at::Tensor& slope,
                                               const at::Tensor& state, double scale);

}  // namespace effattn
