// Torch binding of the neighborhood-attention ops: checks, then the device's kernel.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "../cpu/na_cpu.h"
#include "na_checks.h"

namespace effattn {
namespace {

using at::Tensor;
using c10::IntArrayRef;

template <int Rank>
std::tuple<Tensor, Tensor> na_forward_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
                                          IntArrayRef kernel_size, IntArrayRef dilation,
                                          IntArrayRef stride, const c10::List<bool>& is_causal,
                                          std::optional<double> scale) {
  const NaProblem p = check_na_inputs(Rank, q, k, v, kernel_size, dilation, stride, is_causal, scale);
  return cpu::na_forward(p, q, k, v);
}

template <int Rank>
std::tuple<Tensor, Tensor, Tensor> na_backward_cpu(
    const Tensor& grad_out, const std::optional<Tensor>& grad_lse, const Tensor& q, const Tensor& k,
    const Tensor& v, const Tensor& out, const Tensor& lse, IntArrayRef kernel_size,
    IntArrayRef dilation, IntArrayRef stride, const c10::List<bool>& is_causal,
    std::optional<double> scale) {
  const NaProblem p = check_na_inputs(Rank, q, k, v, kernel_size, dilation, stride, is_causal, scale);
  check_na_backward_inputs(p, q, grad_out, grad_lse, out, lse);
  return cpu::na_backward(p, grad_out, grad_lse, q, k, v, out, lse);
}

// `na{Rank}d` is the forward op without the LSE. It is composite: autograd and fake
// tensors go through `na{Rank}d_forward`, whose formulas are registered from Python.
template <int Rank>
Tensor na_composite(const Tensor& q, const Tensor& k, const Tensor& v, IntArrayRef kernel_size,
                    IntArrayRef dilation, IntArrayRef stride, const c10::List<bool>& is_causal,
                    std::optional<double> scale) {
  static const std::string name = "effattn::na" + std::to_string(Rank) + "d_forward";
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow(name.c_str(), "")
                       .typed<std::tuple<Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                         IntArrayRef, IntArrayRef, IntArrayRef,
                                                         const c10::List<bool>&, std::optional<double>)>();
  return std::get<0>(op.call(q, k, v, kernel_size, dilation, stride, is_causal, scale));
}

}  // namespace

TORCH_LIBRARY_IMPL(effattn, CPU, m) {
  m.impl("na1d_forward", &na_forward_cpu<1>);
  m.impl("na2d_forward", &na_forward_cpu<2>);
  m.impl("na3d_forward", &na_forward_cpu<3>);
  m.impl("na1d_backward", &na_backward_cpu<1>);
  m.impl("na2d_backward", &na_backward_cpu<2>);
  m.impl("na3d_backward", &na_backward_cpu<3>);
}

TORCH_LIBRARY_IMPL(effattn, CompositeImplicitAutograd, m) {
  m.impl("na1d", &na_composite<1>);
  m.impl("na2d", &na_composite<2>);
  m.impl("na3d", &na_composite<3>);
}

}  // namespace effattn
