// Argument checks for the neighborhood-attention ops. Every check runs before any kernel
// and names the offending argument and the allowed range.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/List.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Optional.h>

#include "effattn/na_problem.h"

namespace effattn {

// Validates q, k, v and the window arguments of an `na{rank}d` op and returns the
// problem they describe (scale resolved: default 1/sqrt(head_dim)).
NaProblem check_na_inputs(int rank, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          c10::IntArrayRef kernel_size, c10::IntArrayRef dilation,
                          c10::IntArrayRef stride, const c10::List<bool>& is_causal,
                          std::optional<double> scale);

// Validates the extra tensors of a backward call against the forward inputs.
void check_na_backward_inputs(const NaProblem& problem, const at::Tensor& q,
                              const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse,
                              const at::Tensor& out, const at::Tensor& lse);

}  // namespace effattn
