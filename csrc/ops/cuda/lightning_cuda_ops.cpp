// Torch binding of the CUDA lightning-attention kernels (include/effattn/lightning_cuda.h):
// checks (shared with the CPU op), allocation, the stream, and the launch. Built only with
// EFFATTN_WITH_CUDA.
//
// Cost note: check_lightning_inputs reads slope (slope >= 0) and cu_seqlens (start at 0,
// non-decreasing, end at N) on the host, i.e. one device -> host synchronisation per call
// when those tensors live on the GPU; the launcher needs cu_seqlens on the host anyway (it
// plans the per-sequence segments from the lengths).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "../lightning_checks.h"
#include "effattn/lightning_cuda.h"

namespace effattn {
namespace {

using at::Tensor;

void check_cuda_dtype(const Tensor& q, const char* op) {
  TORCH_CHECK_NOT_IMPLEMENTED(q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16,
                              "effattn ", op, " on CUDA supports float16 and bfloat16, got ",
                              q.scalar_type(), " (use the CPU op or cast)");
}

// What the CUDA kernels support, checked right after the argument checks.
void check_cuda_support(const LightningProblem& p, const Tensor& q, const char* op) {
  check_cuda_dtype(q, op);
  TORCH_CHECK_NOT_IMPLEMENTED(p.dim_k == p.dim_v && (p.dim_k == 64 || p.dim_k == 128),
                              "effattn ", op, " on CUDA supports head dims D == E in {64, 128}, got D = ",
                              p.dim_k, ", E = ", p.dim_v, " (use the CPU op)");
}

// Last axis contiguous, 16-byte aligned, other strides multiples of 8; else one copy.
Tensor kernel_ready(const Tensor& t) {
  bool ok = t.stride(-1) == 1 && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0;
  for (int64_t d = 0; ok && d + 1 < t.dim(); ++d) {
    if (t.stride(d) % 8 != 0 && t.size(d) > 1) ok = false;
  }
  return ok ? t : t.contiguous();
}

cuda::LightningStrides strides_of(const Tensor& t) {
  cuda::LightningStrides s;
  s.batch = t.stride(0);
  s.token = t.stride(1);
  s.head = t.stride(2);
  // Size-1 axes may carry any stride; the kernels never step along them.
  if (t.size(0) == 1) s.batch = 0;
  if (t.size(1) == 1) s.token = 0;
  if (t.size(2) == 1) s.head = 0;
  return s;
}

struct Common {
  cuda::LightningParams params;
  Tensor q, k, v, slope, initial_state;
  std::vector<int64_t> cu_host;
};

Common prepare(const LightningProblem& p, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
               const Tensor& slope_in, const std::optional<Tensor>& initial_state,
               const std::optional<Tensor>& cu_seqlens, const char* op) {
  check_cuda_support(p, q_in, op);
  Common c;
  cuda::LightningParams& params = c.params;
  params.dtype = q_in.scalar_type() == at::kHalf ? cuda::LightningDType::kFloat16
                                                 : cuda::LightningDType::kBFloat16;
  params.batch = p.batch;
  params.tokens = p.tokens;
  params.heads = p.heads;
  params.dim_k = p.dim_k;
  params.dim_v = p.dim_v;
  params.num_seqs = p.num_states;
  params.scale = static_cast<float>(p.scale);
  c.q = kernel_ready(q_in);
  c.k = kernel_ready(k_in);
  c.v = kernel_ready(v_in);
  c.slope = slope_in.to(at::kFloat).contiguous();
  params.slope = c.slope.data_ptr<float>();
  params.q = c.q.data_ptr();
  params.k = c.k.data_ptr();
  params.v = c.v.data_ptr();
  params.q_strides = strides_of(c.q);
  params.k_strides = strides_of(c.k);
  params.v_strides = strides_of(c.v);
  if (initial_state.has_value()) {
    c.initial_state = initial_state->to(at::kFloat).contiguous();
    params.initial_state = c.initial_state.data_ptr<float>();
  }
  if (cu_seqlens.has_value()) {
    const Tensor cu = cu_seqlens->to(at::kCPU, at::kLong).contiguous();  // device -> host sync
    c.cu_host.assign(cu.data_ptr<int64_t>(), cu.data_ptr<int64_t>() + cu.numel());
    params.cu_seqlens_host = c.cu_host.data();
  }
  return c;
}

void check_supported(const cuda::LightningParams& params, bool backward, const char* op) {
  const char* reason = cuda::lightning_cuda_unsupported_reason(params, backward);
  TORCH_CHECK_NOT_IMPLEMENTED(reason == nullptr, "effattn ", op, " on CUDA: ", reason);
}

Tensor workspace_for(cuda::LightningParams& params, const Tensor& like) {
  const size_t bytes = cuda::lightning_workspace_bytes(params);
  Tensor ws = at::empty({static_cast<int64_t>(bytes > 0 ? bytes : 16)}, like.options().dtype(at::kByte));
  params.workspace = ws.data_ptr();
  params.workspace_bytes = ws.numel();
  return ws;
}

void check_launch(cudaError_t status, const char* what) {
  TORCH_CHECK(status == cudaSuccess, "effattn ", what, " launch failed: ", cudaGetErrorString(status));
}

std::tuple<Tensor, std::optional<Tensor>> lightning_attn_cuda(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slope, double scale,
    const std::optional<Tensor>& initial_state, bool output_final_state,
    const std::optional<Tensor>& cu_seqlens) {
  const LightningProblem p = check_lightning_inputs(q, k, v, slope, scale, initial_state, cu_seqlens);
  check_cuda_support(p, q, "lightning_attn");
  const c10::cuda::CUDAGuard guard(q.device());
  Common c = prepare(p, q, k, v, slope, initial_state, cu_seqlens, "lightning_attn");
  Tensor out = at::empty(v.sizes(), v.options().memory_format(at::MemoryFormat::Contiguous));
  Tensor final_state;
  c.params.o = out.data_ptr();
  c.params.o_strides = strides_of(out);
  if (output_final_state) {
    final_state = at::empty({p.num_states, p.heads, p.dim_k, p.dim_v}, q.options().dtype(at::kFloat));
    c.params.final_state = final_state.data_ptr<float>();
  }
  check_supported(c.params, false, "lightning_attn");
  const Tensor ws = workspace_for(c.params, q);
  check_launch(cuda::lightning_forward(c.params, c10::cuda::getCurrentCUDAStream()), "lightning_forward");
  if (!output_final_state) return {out, std::nullopt};
  return {out, final_state};
}

std::tuple<Tensor, Tensor, Tensor, std::optional<Tensor>, std::optional<Tensor>>
lightning_attn_backward_cuda(const Tensor& grad_out, const std::optional<Tensor>& grad_final_state,
                             const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& slope,
                             double scale, const std::optional<Tensor>& initial_state,
                             const std::optional<Tensor>& cu_seqlens, bool compute_slope_grad) {
  const LightningProblem p = check_lightning_inputs(q, k, v, slope, scale, initial_state, cu_seqlens);
  check_lightning_backward_inputs(p, q, v, grad_out, grad_final_state);
  TORCH_CHECK_NOT_IMPLEMENTED(!compute_slope_grad,
                              "effattn lightning_attn: the gradient for slope on CUDA is not "
                              "implemented (use a slope that does not require grad, or the CPU op)");
  check_cuda_support(p, q, "lightning_attn_backward");
  const c10::cuda::CUDAGuard guard(q.device());
  Common c = prepare(p, q, k, v, slope, initial_state, cu_seqlens, "lightning_attn_backward");
  const Tensor dout = kernel_ready(grad_out.to(q.scalar_type()));
  Tensor dfinal;
  if (grad_final_state.has_value()) {
    dfinal = grad_final_state->to(at::kFloat).contiguous();
    c.params.d_final_state = dfinal.data_ptr<float>();
  }
  Tensor dq = at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous));
  Tensor dk = at::empty(k.sizes(), k.options().memory_format(at::MemoryFormat::Contiguous));
  Tensor dv = at::empty(v.sizes(), v.options().memory_format(at::MemoryFormat::Contiguous));
  std::optional<Tensor> d_initial;
  if (initial_state.has_value()) {
    Tensor ds0 = at::empty({p.num_states, p.heads, p.dim_k, p.dim_v}, q.options().dtype(at::kFloat));
    c.params.d_initial_state = ds0.data_ptr<float>();
    d_initial = ds0.to(initial_state->scalar_type());
  }
  c.params.dout = dout.data_ptr();
  c.params.do_strides = strides_of(dout);
  c.params.dq = dq.data_ptr();
  c.params.dk = dk.data_ptr();
  c.params.dv = dv.data_ptr();
  c.params.dq_strides = strides_of(dq);
  c.params.dk_strides = strides_of(dk);
  c.params.dv_strides = strides_of(dv);
  check_supported(c.params, true, "lightning_attn_backward");
  const Tensor ws = workspace_for(c.params, q);
  check_launch(cuda::lightning_backward(c.params, c10::cuda::getCurrentCUDAStream()), "lightning_backward");
  return {dq, dk, dv, d_initial, std::nullopt};
}

Tensor lightning_decode_cuda(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                             const Tensor& slope_in, Tensor& state, double scale) {
  const LightningProblem p = check_lightning_decode_inputs(q_in, k_in, v_in, slope_in, state, scale);
  check_cuda_dtype(q_in, "lightning_decode");
  const c10::cuda::CUDAGuard guard(q_in.device());
  cuda::LightningDecodeParams params;
  params.dtype = q_in.scalar_type() == at::kHalf ? cuda::LightningDType::kFloat16
                                                 : cuda::LightningDType::kBFloat16;
  params.batch = p.batch;
  params.heads = p.heads;
  params.dim_k = p.dim_k;
  params.dim_v = p.dim_v;
  params.scale = static_cast<float>(p.scale);
  const char* reason = cuda::lightning_decode_unsupported_reason(params);
  if (reason == nullptr || std::string(reason) == "missing pointer") reason = nullptr;
  TORCH_CHECK_NOT_IMPLEMENTED(reason == nullptr, "effattn lightning_decode on CUDA: ", reason);
  const Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const Tensor slope = slope_in.to(at::kFloat).contiguous();
  // The kernel updates a contiguous, 16-byte aligned state; otherwise work on a copy.
  const bool direct = state.is_contiguous() && reinterpret_cast<uintptr_t>(state.data_ptr()) % 16 == 0;
  Tensor work = direct ? state : state.contiguous();
  Tensor out = at::empty(v.sizes(), v.options());
  if (p.batch == 0) return out;
  params.slope = slope.data_ptr<float>();
  params.q = q.data_ptr();
  params.k = k.data_ptr();
  params.v = v.data_ptr();
  params.o = out.data_ptr();
  params.state = work.data_ptr<float>();
  reason = cuda::lightning_decode_unsupported_reason(params);
  TORCH_CHECK_NOT_IMPLEMENTED(reason == nullptr, "effattn lightning_decode on CUDA: ", reason);
  check_launch(cuda::lightning_decode(params, c10::cuda::getCurrentCUDAStream()), "lightning_decode");
  if (!direct) state.copy_(work);
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(effattn, CUDA, m) {
  m.impl("lightning_attn", &lightning_attn_cuda);
  m.impl("lightning_attn_backward", &lightning_attn_backward_cuda);
  m.impl("lightning_decode", &lightning_decode_cuda);
}

}  // namespace effattn
