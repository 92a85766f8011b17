#include "na_checks.h"

#include <c10/util/Exception.h>

#include <cmath>

#include "common_checks.h"

namespace effattn {
namespace {

const char* kAxisNames[kMaxRank] = {"0", "1", "2"};

void check_list_length(const char* name, size_t size, int rank) {
  TORCH_CHECK(static_cast<int>(size) == rank, name, " must have ", rank,
              " entries (one per token axis), got ", size);
}

}  // namespace

NaProblem check_na_inputs(int rank, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          c10::IntArrayRef kernel_size, c10::IntArrayRef dilation,
                          c10::IntArrayRef stride, const c10::List<bool>& is_causal,
                          std::optional<double> scale) {
  const int64_t ndim = rank + 3;
  TORCH_CHECK(q.dim() == ndim, "q must have rank ", ndim, " ([B, ", rank,
              " token axes, H, D]), got shape ", q.sizes());
  TORCH_CHECK(k.dim() == ndim, "k must have rank ", ndim, ", got shape ", k.sizes());
  TORCH_CHECK(v.dim() == ndim, "v must have rank ", ndim, ", got shape ", v.sizes());
  TORCH_CHECK(k.sizes() == v.sizes(), "k and v must have the same shape, got ", k.sizes(),
              " and ", v.sizes());
  check_qkv_dtype_device(q, k, v);
  for (int64_t d = 0; d <= rank; ++d) {
    TORCH_CHECK(q.size(d) == k.size(d), "q and k must agree on the batch and token axes, got ",
                q.sizes(), " and ", k.sizes());
  }
  TORCH_CHECK(q.size(-1) == k.size(-1), "q and k must have the same head dim, got ", q.size(-1),
              " and ", k.size(-1));
  TORCH_CHECK(q.size(-1) >= 1, "head dim must be at least 1, got ", q.size(-1));
  TORCH_CHECK(k.size(-2) >= 1 && q.size(-2) % k.size(-2) == 0,
              "the number of query heads (", q.size(-2),
              ") must be a multiple of the number of key/value heads (", k.size(-2), ")");
  check_list_length("kernel_size", kernel_size.size(), rank);
  check_list_length("dilation", dilation.size(), rank);
  check_list_length("stride", stride.size(), rank);
  check_list_length("is_causal", is_causal.size(), rank);

  NaProblem p;
  p.rank = rank;
  p.batch = q.size(0);
  p.heads = q.size(-2);
  p.kv_heads = k.size(-2);
  p.head_dim = q.size(-1);
  for (int a = 0; a < rank; ++a) {
    const int64_t length = q.size(1 + a);
    const int64_t kernel = kernel_size[a];
    const int64_t dil = dilation[a];
    const int64_t str = stride[a];
    TORCH_CHECK(dil >= 1, "dilation[", kAxisNames[a], "] must be >= 1, got ", dil);
    TORCH_CHECK(kernel >= 2, "kernel_size[", kAxisNames[a], "] must be >= 2, got ", kernel);
    TORCH_CHECK(kernel <= length / dil, "kernel_size[", kAxisNames[a], "] * dilation[",
                kAxisNames[a], "] must be <= the input length ", length, " on that axis, got ",
                kernel, " * ", dil);
    TORCH_CHECK(str >= 1 && str <= kernel, "stride[", kAxisNames[a],
                "] must be in [1, kernel_size] = [1, ", kernel, "], got ", str);
    p.axis[a] = AxisParams{length, kernel, dil, str, is_causal.get(a)};
  }
  const double s = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(p.head_dim));
  TORCH_CHECK(std::isfinite(s), "scale must be finite, got ", s);
  p.scale = s;
  return p;
}

void check_na_backward_inputs(const NaProblem& problem, const at::Tensor& q,
                              const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse,
                              const at::Tensor& out, const at::Tensor& lse) {
  TORCH_CHECK(grad_out.sizes() == q.sizes(), "grad_out must have the shape of q ", q.sizes(),
              ", got ", grad_out.sizes());
  TORCH_CHECK(out.sizes() == q.sizes(), "out must have the shape of q ", q.sizes(), ", got ",
              out.sizes());
  const auto lse_shape = q.sizes().slice(0, problem.rank + 2);
  TORCH_CHECK(lse.sizes() == lse_shape, "lse must have shape ", lse_shape, ", got ", lse.sizes());
  TORCH_CHECK(grad_out.device() == q.device() && out.device() == q.device() &&
                  lse.device() == q.device(),
              "grad_out, out and lse must be on the device of q (", q.device(), ")");
  if (grad_lse.has_value()) {
    TORCH_CHECK(grad_lse->sizes() == lse_shape, "grad_lse must have shape ", lse_shape, ", got ",
                grad_lse->sizes());
    TORCH_CHECK(grad_lse->device() == q.device(), "grad_lse must be on the device of q");
  }
}

}  // namespace effattn
