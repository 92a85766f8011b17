// Argument checks of the lightning-attention ops (DESIGN.md §7, §8). Every check runs before
// any kernel and names the offending argument and the allowed range. The CUDA binding
// reuses them unchanged.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <optional>

#include "effattn/lightning_problem.h"

namespace effattn {

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
