// Torch binding of the lightning-attention ops: checks, then the device's kernel.
// Autograd (for lightning_attn, through lightning_attn_backward) and the fake kernels are
// registered from python/effattn/lightning.py.
#include <torch/library.h>

#include "../cpu/lightning_cpu.h"
#include "lightning_checks.h"

namespace effattn {
namespace {

using at::Tensor;

std::tuple<Tensor, std::optional<Tensor>> lightning_attn_cpu(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slope, double scale,
    const std::optional<Tensor>& initial_state, bool output_final_state,
    const std::optional<Tensor>& cu_seqlens) {
  const LightningProblem p = check_lightning_inputs(q, k, v, slope, scale, initial_state, cu_seqlens);
  auto [out, final_state] = cpu::lightning_forward(p, q, k, v, slope, initial_state, cu_seqlens);
  if (!output_final_state) return {out, std::nullopt};
  return {out, final_state};
}

std::tuple<Tensor, Tensor, Tensor, std::optional<Tensor>, std::optional<Tensor>>
lightning_attn_backward_cpu(const Tensor& grad_out, const std::optional<Tensor>& grad_final_state,
                            const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slope,
                            double scale, const std::optional<Tensor>& initial_state,
                            const std::optional<Tensor>& cu_seqlens, bool compute_slope_grad) {
  const LightningProblem p = check_lightning_inputs(q, k, v, slope, scale, initial_state, cu_seqlens);
  check_lightning_backward_inputs(p, q, v, grad_out, grad_final_state);
  auto [dq, dk, dv, ds0, dslope] = cpu::lightning_backward(
      p, grad_out, grad_final_state, q, k, v, slope, initial_state, cu_seqlens, compute_slope_grad);
  std::optional<Tensor> d_initial;
  std::optional<Tensor> d_slope;
  if (initial_state.has_value()) d_initial = ds0;
  if (compute_slope_grad) d_slope = dslope;
  return {dq, dk, dv, d_initial, d_slope};
}

Tensor lightning_decode_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slope,
                            Tensor& state, double scale) {
  const LightningProblem p = check_lightning_decode_inputs(q, k, v, slope, state, scale);
  return cpu::lightning_decode(p, q, k, v, slope, state);
}

}  // namespace

TORCH_LIBRARY_IMPL(effattn, CPU, m) {
  m.impl("lightning_attn", &lightning_attn_cpu);
  m.impl("lightning_attn_backward", &lightning_attn_backward_cpu);
  m.impl("lightning_decode", &lightning_decode_cpu);
}

}  // namespace effattn
