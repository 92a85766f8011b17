// The CPU kernels compute in fp32, or fp64 for fp64 inputs (fp16/bf16 are upcast once).
#pragma once

#include <ATen/ATen.h>

namespace effattn::cpu {

inline at::ScalarType compute_type(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// t in the compute type, contiguous (a no-op when it already is).
inline at::Tensor as_compute(const at::Tensor& t, at::ScalarType type) {
  return t.to(type).contiguous();
}

}  // namespace effattn::cpu
