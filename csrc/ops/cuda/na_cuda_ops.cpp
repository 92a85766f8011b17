// Torch binding of the CUDA neighborhood-attention core (include/effattn/na_cuda.h):
// checks, allocation, the stream, and the launch. Built only with EFFATTN_WITH_CUDA.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../na_checks.h"
#include "effattn/na_cuda.h"

namespace effattn {
namespace {

using at::Tensor;
using c10::IntArrayRef;

// Heads-last tensors with a contiguous D axis and 16-byte aligned rows, as the kernels'
// cp.async loads need; anything else is copied once.
Tensor kernel_ready(const Tensor& t) {
  const bool ok = t.stride(-1) == 1 && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 &&
                  [&] {
                    for (int64_t d = 0; d + 1 < t.dim(); ++d)
                      if (t.stride(d) % 8 != 0 && t.size(d) > 1) return false;
                    return true;
                  }();
  return ok ? t : t.contiguous();
}

// Element strides of a heads-last tensor ([B, *tokens, H(, D)]).
cuda::TensorStrides strides_of(const Tensor& t, int rank) {
  cuda::TensorStrides s;
  s.batch = t.stride(0);
  for (int a = 0; a < rank; ++a) s.token[a] = t.stride(1 + a);
  s.head = t.stride(rank + 1);
  return s;
}

cuda::NaParams make_params(const NaProblem& p, const Tensor& q) {
  TORCH_CHECK(q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16,
              "effattn CUDA neighborhood attention supports float16 and bfloat16, got ",
              q.scalar_type(), " (use the CPU op or cast)");
  cuda::NaParams params;
  params.dtype = q.scalar_type() == at::kHalf ? cuda::DType::kFloat16 : cuda::DType::kBFloat16;
  params.rank = p.rank;
  params.batch = p.batch;
  for (int a = 0; a < p.rank; ++a) params.axes[a] = p.axis[a];
  params.heads = p.heads;
  params.kv_heads = p.kv_heads;
  params.head_dim = p.head_dim;
  params.scale = static_cast<float>(p.scale);
  return params;
}

// Runs once every pointer and stride is set, before the launch.
void check_supported(const cuda::NaParams& params, bool backward) {
  const char* reason = cuda::na_cuda_unsupported_reason(params, backward);
  TORCH_CHECK_NOT_IMPLEMENTED(reason == nullptr, "effattn CUDA neighborhood attention: ", reason);
}

void check_launch(cudaError_t status, const char* what) {
  TORCH_CHECK(status == cudaSuccess, "effattn ", what, " launch failed: ", cudaGetErrorString(status));
}

template <int Rank>
std::tuple<Tensor, Tensor> na_forward_cuda(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                           IntArrayRef kernel_size, IntArrayRef dilation,
                                           IntArrayRef stride, const c10::List<bool>& is_causal,
                                           std::optional<double> scale) {
  const NaProblem p = check_na_inputs(Rank, q_in, k_in, v_in, kernel_size, dilation, stride, is_causal, scale);
  cuda::NaParams params = make_params(p, q_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const Tensor q = kernel_ready(q_in), k = kernel_ready(k_in), v = kernel_ready(v_in);
  Tensor out = at::empty(q.sizes(), q.options());
  Tensor lse = at::empty(q.sizes().slice(0, Rank + 2), q.options().dtype(at::kFloat));
  if (q.numel() == 0) return {out, lse};
  params.q = q.data_ptr();
  params.k = k.data_ptr();
  params.v = v.data_ptr();
  params.o = out.data_ptr();
  params.lse = lse.data_ptr<float>();
  params.q_strides = strides_of(q, Rank);
  params.k_strides = strides_of(k, Rank);
  params.v_strides = strides_of(v, Rank);
  params.o_strides = strides_of(out, Rank);
  params.lse_strides = strides_of(lse, Rank);
  check_supported(params, false);
  check_launch(cuda::na_forward(params, c10::cuda::getCurrentCUDAStream()), "na_forward");
  return {out, lse};
}

template <int Rank>
std::tuple<Tensor, Tensor, Tensor> na_backward_cuda(
    const Tensor& grad_out_in, const std::optional<Tensor>& grad_lse_in, const Tensor& q_in,
    const Tensor& k_in, const Tensor& v_in, const Tensor& out_in, const Tensor& lse_in,
    IntArrayRef kernel_size, IntArrayRef dilation, IntArrayRef stride,
    const c10::List<bool>& is_causal, std::optional<double> scale) {
  const NaProblem p = check_na_inputs(Rank, q_in, k_in, v_in, kernel_size, dilation, stride, is_causal, scale);
  check_na_backward_inputs(p, q_in, grad_out_in, grad_lse_in, out_in, lse_in);
  cuda::NaParams params = make_params(p, q_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  const Tensor q = kernel_ready(q_in), k = kernel_ready(k_in), v = kernel_ready(v_in);
  const Tensor out = kernel_ready(out_in.to(q.scalar_type()));
  const Tensor grad_out = kernel_ready(grad_out_in.to(q.scalar_type()));
  const Tensor lse = lse_in.to(at::kFloat).contiguous();
  Tensor grad_lse;
  if (grad_lse_in.has_value()) grad_lse = grad_lse_in->to(at::kFloat).contiguous();
  Tensor dq = at::empty(q.sizes(), q.options());
  Tensor dk = at::empty(k.sizes(), k.options());
  Tensor dv = at::empty(v.sizes(), v.options());
  if (q.numel() == 0) return {dq, dk.zero_(), dv.zero_()};
  params.q = q.data_ptr();
  params.k = k.data_ptr();
  params.v = v.data_ptr();
  params.o = const_cast<void*>(out.data_ptr());
  params.lse = const_cast<float*>(lse.data_ptr<float>());
  params.dout = grad_out.data_ptr();
  params.dlse = grad_lse.defined() ? grad_lse.data_ptr<float>() : nullptr;
  params.dq = dq.data_ptr();
  params.dk = dk.data_ptr();
  params.dv = dv.data_ptr();
  params.q_strides = strides_of(q, Rank);
  params.k_strides = strides_of(k, Rank);
  params.v_strides = strides_of(v, Rank);
  params.o_strides = strides_of(out, Rank);
  params.lse_strides = strides_of(lse, Rank);
  params.do_strides = strides_of(grad_out, Rank);
  if (grad_lse.defined()) params.dlse_strides = strides_of(grad_lse, Rank);
  params.dq_strides = strides_of(dq, Rank);
  params.dk_strides = strides_of(dk, Rank);
  params.dv_strides = strides_of(dv, Rank);
  const size_t bytes = cuda::na_backward_workspace_bytes(params);
  Tensor workspace = at::empty({static_cast<int64_t>(bytes)}, q.options().dtype(at::kByte));
  params.workspace = workspace.data_ptr();
  params.workspace_bytes = bytes;
  check_supported(params, true);
  check_launch(cuda::na_backward(params, c10::cuda::getCurrentCUDAStream()), "na_backward");
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(effattn, CUDA, m) {
  m.impl("na1d_forward", &na_forward_cuda<1>);
  m.impl("na2d_forward", &na_forward_cuda<2>);
  m.impl("na3d_forward", &na_forward_cuda<3>);
  m.impl("na1d_backward", &na_backward_cuda<1>);
  m.impl("na2d_backward", &na_backward_cuda<2>);
  m.impl("na3d_backward", &na_backward_cuda<3>);
}

}  // namespace effattn
