// Exact CPU lightning attention (DESIGN.md §7): the token recurrence
//   S_t = λ S_{t-1} + k_tᵀ v_t,   o_t = scale · q_t S_t,   λ = exp(-slope_h),
// O(N·D·E) per (sequence, head), parallel over (sequence, head) with at::parallel_for.
// fp64 inputs are computed in fp64; everything else in fp32 (state accumulation fp32).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#include "../ops/lightning_checks.h"

namespace effattn::cpu {

// Returns (out [B, N, H, E] in q's dtype, final_state [num_states, H, D, E] in the state dtype).
std::tuple<at::Tensor, at::Tensor> lightning_forward(const LightningProblem& problem,
                                                     const at::Tensor& q, const at::Tensor& k,
                                                     const at::Tensor& v, const at::Tensor& slope,
                                                     const std::optional<at::Tensor>& initial_state,
                                                     const std::optional<at::Tensor>& cu_seqlens);

// Returns (dq, dk, dv, d_initial_state, d_slope). d_initial_state (state dtype) is always
// computed (it is the gradient with respect to a zero initial state when none was given);
// d_slope ([H], slope's dtype) is computed only when compute_slope_grad, else undefined.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lightning_backward(
    const LightningProblem& problem, const at::Tensor& grad_out,
    const std::optional<at::Tensor>& grad_final_state, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& slope, const std::optional<at::Tensor>& initial_state,
    const std::optional<at::Tensor>& cu_seqlens, bool compute_slope_grad);

// One decode step for every (batch, head): state ← λ state + kᵀv (in place), returns
// scale · q state in q's shape and dtype.
at::Tensor lightning_decode(const LightningProblem& problem, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const at::Tensor& slope,
                            at::Tensor& state);

}  // namespace effattn::cpu
