#include "lightning_checks.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <mutex>
#include <vector>

#include "common_checks.h"

namespace effattn {
namespace {

void check_qkv_common(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                      const char* layout_q, const char* layout_v) {
  check_qkv_dtype_device(q, k, v);
  TORCH_CHECK(q.sizes() == k.sizes(), "q and k must have the same shape ", layout_q,
              " (same head dim D), got ", q.sizes(), " and ", k.sizes());
  TORCH_CHECK(v.sizes().slice(0, v.dim() - 1) == q.sizes().slice(0, q.dim() - 1),
              "v must have shape ", layout_v, " matching q ", q.sizes(),
              " on every axis but the last, got ", v.sizes());
  TORCH_CHECK(q.size(-1) >= 1 && v.size(-1) >= 1, "head dims must be at least 1, got D = ",
              q.size(-1), " and E = ", v.size(-1));
}

// slope >= 0 everywhere, remembered per (tensor, version) off the CPU: a decode loop or a model
// passes one slope tensor on every call, and reading a GPU tensor's values waits for the device
// (and is impossible while a CUDA graph is being captured). A write to the tensor bumps its
// version; a freed tensor's entry expires with it (weak reference). Inference tensors keep no
// version: always read.
bool slope_values_ok(const at::Tensor& slope) {
  if (slope.device().is_cpu() || slope.is_inference()) return slope.ge(0).all().item<bool>();
  struct Checked {
    c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> impl;
    uint32_t version;
  };
  static std::mutex mutex;
  static std::vector<Checked> checked;
  c10::TensorImpl* const impl = slope.unsafeGetTensorImpl();
  const uint32_t version = impl->version_counter().current_version();
  {
    const std::lock_guard<std::mutex> lock(mutex);
    for (const Checked& c : checked) {
      if (c.version == version && c.impl.lock().get() == impl) return true;
    }
  }
  if (!slope.ge(0).all().item<bool>()) return false;
  const std::lock_guard<std::mutex> lock(mutex);
  std::vector<Checked> live;
  for (Checked& c : checked) {
    if (!c.impl.expired() && live.size() < 63) live.push_back(std::move(c));
  }
  live.push_back({c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl>(slope.getIntrusivePtr()),
                  version});
  checked = std::move(live);
  return true;
}

void check_slope(const at::Tensor& slope, const at::Tensor& q, int64_t heads) {
  TORCH_CHECK(slope.dim() == 1 && slope.size(0) == heads, "slope must have shape [H] = [", heads,
              "], got ", slope.sizes());
  TORCH_CHECK(slope.scalar_type() == at::kFloat || slope.scalar_type() == at::kDouble,
              "slope must be float32 (or float64), got ", slope.scalar_type());
  TORCH_CHECK(slope.device() == q.device(), "slope must be on the device of q (", q.device(),
              "), got ", slope.device());
  // Values: the decay exp(-slope) must lie in [0, 1]. NaN fails `>= 0` too.
  TORCH_CHECK(heads == 0 || slope_values_ok(slope),
              "slope must be >= 0 (decay exp(-slope) in [0, 1]), got a minimum of ",
              slope.min().item<double>());
}

void check_state(const char* name, const at::Tensor& state, const at::Tensor& q,
                 int64_t num_states, int64_t heads, int64_t dim_k, int64_t dim_v) {
  const at::ScalarType want = lightning_state_dtype(q.scalar_type());
  const std::vector<int64_t> shape{num_states, heads, dim_k, dim_v};
  TORCH_CHECK(state.sizes() == at::IntArrayRef(shape), name, " must have shape [num_states, H, D, E] = ",
              at::IntArrayRef(shape), ", got ", state.sizes());
  TORCH_CHECK(state.scalar_type() == want, name, " must be ", want, " (states are float32, ",
              "float64 for float64 inputs), got ", state.scalar_type());
  TORCH_CHECK(state.device() == q.device(), name, " must be on the device of q (", q.device(),
              "), got ", state.device());
}

void check_scale(double scale) {
  TORCH_CHECK(std::isfinite(scale), "scale must be finite, got ", scale);
}

}  // namespace

at::ScalarType lightning_state_dtype(at::ScalarType input_dtype) {
  return input_dtype == at::kDouble ? at::kDouble : at::kFloat;
}

LightningProblem check_lightning_inputs(const at::Tensor& q, const at::Tensor& k,
                                        const at::Tensor& v, const at::Tensor& slope, double scale,
                                        const std::optional<at::Tensor>& initial_state,
                                        const std::optional<at::Tensor>& cu_seqlens) {
  TORCH_CHECK(q.dim() == 4, "q must have rank 4 ([B, N, H, D]), got shape ", q.sizes());
  TORCH_CHECK(k.dim() == 4, "k must have rank 4 ([B, N, H, D]), got shape ", k.sizes());
  TORCH_CHECK(v.dim() == 4, "v must have rank 4 ([B, N, H, E]), got shape ", v.sizes());
  check_qkv_common(q, k, v, "[B, N, H, D]", "[B, N, H, E]");
  check_scale(scale);

  LightningProblem p;
  p.batch = q.size(0);
  p.tokens = q.size(1);
  p.heads = q.size(2);
  p.dim_k = q.size(3);
  p.dim_v = v.size(3);
  p.scale = scale;
  p.num_states = p.batch;
  check_slope(slope, q, p.heads);

  if (cu_seqlens.has_value()) {
    const at::Tensor& cu = *cu_seqlens;
    TORCH_CHECK(cu.dim() == 1 && cu.size(0) >= 2,
                "cu_seqlens must have shape [num_seqs + 1] with num_seqs >= 1, got ", cu.sizes());
    TORCH_CHECK(cu.scalar_type() == at::kInt || cu.scalar_type() == at::kLong,
                "cu_seqlens must be int32 or int64, got ", cu.scalar_type());
    TORCH_CHECK(cu.device() == q.device(), "cu_seqlens must be on the device of q (", q.device(),
                "), got ", cu.device());
    TORCH_CHECK(p.batch == 1, "with cu_seqlens the batch size B must be 1 (sequences packed "
                "along N), got B = ", p.batch);
    const at::Tensor values = cu.to(at::kCPU, at::kLong).contiguous();
    const int64_t* c = values.const_data_ptr<int64_t>();
    const int64_t n = values.numel();
    TORCH_CHECK(c[0] == 0, "cu_seqlens must start at 0, got ", c[0]);
    for (int64_t i = 1; i < n; ++i) {
      TORCH_CHECK(c[i] >= c[i - 1], "cu_seqlens must be non-decreasing, got cu_seqlens[", i - 1,
                  "] = ", c[i - 1], " > cu_seqlens[", i, "] = ", c[i]);
    }
    TORCH_CHECK(c[n - 1] == p.tokens, "cu_seqlens must end at N = ", p.tokens, ", got ", c[n - 1]);
    p.varlen = true;
    p.num_states = n - 1;
  }
  if (initial_state.has_value()) {
    check_state("initial_state", *initial_state, q, p.num_states, p.heads, p.dim_k, p.dim_v);
  }
  return p;
}

void check_lightning_backward_inputs(const LightningProblem& problem, const at::Tensor& q,
                                     const at::Tensor& v, const at::Tensor& grad_out,
                                     const std::optional<at::Tensor>& grad_final_state) {
  TORCH_CHECK(grad_out.sizes() == v.sizes(), "grad_out must have the shape of the output [B, N, H, E] = ",
              v.sizes(), ", got ", grad_out.sizes());
  TORCH_CHECK(grad_out.device() == q.device(), "grad_out must be on the device of q (",
              q.device(), "), got ", grad_out.device());
  TORCH_CHECK(at::isFloatingType(grad_out.scalar_type()), "grad_out must be floating point, got ",
              grad_out.scalar_type());
  if (grad_final_state.has_value()) {
    const std::vector<int64_t> shape{problem.num_states, problem.heads, problem.dim_k,
                                     problem.dim_v};
    TORCH_CHECK(grad_final_state->sizes() == at::IntArrayRef(shape),
                "grad_final_state must have shape [num_states, H, D, E] = ", at::IntArrayRef(shape),
                ", got ", grad_final_state->sizes());
    TORCH_CHECK(grad_final_state->device() == q.device(),
                "grad_final_state must be on the device of q (", q.device(), ")");
    TORCH_CHECK(at::isFloatingType(grad_final_state->scalar_type()),
                "grad_final_state must be floating point, got ", grad_final_state->scalar_type());
  }
}

LightningProblem check_lightning_decode_inputs(const at::Tensor& q, const at::Tensor& k,
                                               const at::Tensor& v, const at::Tensor& slope,
                                               const at::Tensor& state, double scale) {
  TORCH_CHECK(q.dim() == 3 || (q.dim() == 4 && q.size(1) == 1),
              "q must have shape [B, H, D] or [B, 1, H, D] (one token per sequence), got ",
              q.sizes());
  TORCH_CHECK(k.dim() == q.dim(), "k must have the rank of q (", q.dim(), "), got shape ",
              k.sizes());
  TORCH_CHECK(v.dim() == q.dim(), "v must have the rank of q (", q.dim(), "), got shape ",
              v.sizes());
  check_qkv_common(q, k, v, q.dim() == 3 ? "[B, H, D]" : "[B, 1, H, D]",
                   q.dim() == 3 ? "[B, H, E]" : "[B, 1, H, E]");
  check_scale(scale);
  LightningProblem p;
  p.batch = q.size(0);
  p.tokens = 1;
  p.heads = q.size(-2);
  p.dim_k = q.size(-1);
  p.dim_v = v.size(-1);
  p.num_states = p.batch;
  p.scale = scale;
  check_slope(slope, q, p.heads);
  TORCH_CHECK(state.dim() == 4, "state must have rank 4 ([B, H, D, E]), got shape ", state.sizes());
  check_state("state", state, q, p.batch, p.heads, p.dim_k, p.dim_v);
  return p;
}

}  // namespace effattn
