// Exact CPU block-sparse attention (DESIGN.md §5; fp32/fp64, fp16/bf16 computed in fp32).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#include "../ops/block_sparse_checks.h"

namespace effattn::cpu {

// Returns (out [B, Nq, H, D] in q's dtype, lse [B, Nq, H] fp32, fp64 for fp64 inputs).
// A query with no live key gets out = 0 and lse = -inf.
std::tuple<at::Tensor, at::Tensor> block_sparse_forward(const BlockSparseProblem& problem,
                                                        const at::Tensor& q, const at::Tensor& k,
                                                        const at::Tensor& v,
                                                        const at::Tensor& kv_num_blocks,
                                                        const at::Tensor& kv_indices);

// Returns (dq, dk, dv). grad_lse, when given, is the gradient flowing into lse.
std::tuple<at::Tensor, at::Tensor, at::Tensor> block_sparse_backward(
    const BlockSparseProblem& problem, const at::Tensor& grad_out,
    const std::optional<at::Tensor>& grad_lse, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    const at::Tensor& kv_num_blocks, const at::Tensor& kv_indices);

}  // namespace effattn::cpu
