// Checks every attention op makes on its q, k, v, with one wording everywhere.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace effattn {

// Same floating-point dtype and same device for q, k and v.
inline void check_qkv_dtype_device(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(),
              "q, k and v must have the same dtype, got ", q.scalar_type(), ", ",
              k.scalar_type(), " and ", v.scalar_type());
  TORCH_CHECK(at::isFloatingType(q.scalar_type()),
              "q must be a floating-point tensor (float16, bfloat16, float32 or float64), got ",
              q.scalar_type());
  TORCH_CHECK(q.device() == k.device() && q.device() == v.device(),
              "q, k and v must be on the same device, got ", q.device(), ", ", k.device(),
              " and ", v.device());
}

}  // namespace effattn
