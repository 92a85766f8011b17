// Exact CPU neighborhood attention (any rank, fp32/fp64; fp16/bf16 computed in fp32).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#include "effattn/na_problem.h"

namespace effattn::cpu {

// Returns (out, lse); out has q's dtype, lse is fp32 (fp64 for fp64 inputs).
std::tuple<at::Tensor, at::Tensor> na_forward(const NaProblem& problem, const at::Tensor& q,
                                              const at::Tensor& k, const at::Tensor& v);

// Returns (dq, dk, dv). grad_lse, when given, is the gradient flowing into lse.
std::tuple<at::Tensor, at::Tensor, at::Tensor> na_backward(
    const NaProblem& problem, const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse);

}  // namespace effattn::cpu
