// Torch binding of the CUDA quantized QK estimation (include/effattn/estimate_cuda.h): the
// checks shared with the CPU op (csrc/ops/estimate_ops.cpp), what the CUDA kernels support,
// allocation, the stream and the launch. Built only with EFFATTN_WITH_CUDA.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "../../cpu/estimate_cpu.h"
#include "effattn/estimate_cuda.h"

namespace effattn {

using at::Tensor;

// Defined in csrc/ops/estimate_ops.cpp (the CPU binding): the argument checks of both ops.
void check_smooth_quantize_inputs(const Tensor& x, int64_t quant_block, int64_t bits);
EstimateParams check_estimate_inputs(
    const Tensor& q, const Tensor& k, const Tensor& q_quant, const Tensor& q_scale,
    const Tensor& q_mean, const Tensor& k_quant, const Tensor& k_scale, const Tensor& k_mean,
    const Tensor& log_threshold, int64_t block_q, int64_t block_k, int64_t quant_block,
    int64_t sink_tokens, int64_t local_tokens, bool is_causal, std::optional<double> scale);

namespace {

// Contiguous with a 16-byte aligned base (cp.async); anything else is copied once.
Tensor kernel_ready(const Tensor& t) {
  const Tensor c = t.contiguous();
  return reinterpret_cast<uintptr_t>(c.data_ptr()) % 16 == 0 ? c : c.clone();
}

Tensor workspace(size_t bytes, const Tensor& like) {
  return at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
}

void check_launch(cudaError_t status, const char* what) {
  TORCH_CHECK(status == cudaSuccess, "effattn ", what, " launch failed: ", cudaGetErrorString(status));
}

cuda::EstimateDType dtype_of(const Tensor& t) {
  switch (t.scalar_type()) {
    case at::kHalf: return cuda::EstimateDType::kFloat16;
    case at::kBFloat16: return cuda::EstimateDType::kBFloat16;
    case at::kFloat: return cuda::EstimateDType::kFloat32;
    default: return cuda::EstimateDType::kFloat64;
  }
}

std::tuple<Tensor, Tensor, Tensor> smooth_quantize_cuda(const Tensor& x_in, int64_t quant_block,
                                                        int64_t bits) {
  check_smooth_quantize_inputs(x_in, quant_block, bits);
  TORCH_CHECK_NOT_IMPLEMENTED(x_in.size(3) >= 1, "effattn smooth_quantize on CUDA needs head dim >= 1");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const Tensor x = x_in.contiguous();
  const int64_t B = x.size(0), N = x.size(1), H = x.size(2), D = x.size(3);
  const int64_t M = (N + quant_block - 1) / quant_block;
  const auto opts = x.options().memory_format(at::MemoryFormat::Contiguous);
  Tensor quant = at::empty(x.sizes(), opts.dtype(at::kChar));
  Tensor scale = at::empty({B, M, H}, opts.dtype(at::kFloat));
  Tensor mean = at::empty({B, H, D}, opts.dtype(at::kFloat));
  if (x.numel() == 0) return {quant, scale, mean};  // B == 0 or H == 0: nothing to compute
  cuda::SmoothQuantizeParams p;
  p.dtype = dtype_of(x);
  p.batch = B;
  p.tokens = N;
  p.heads = H;
  p.head_dim = D;
  p.quant_block = quant_block;
  p.x = x.data_ptr();
  p.x_quant = quant.data_ptr<int8_t>();
  p.scale = scale.data_ptr<float>();
  p.mean = mean.data_ptr<float>();
  const Tensor ws = workspace(cuda::smooth_quantize_workspace_bytes(p), x);
  p.workspace = ws.data_ptr();
  p.workspace_bytes = ws.numel();
  const char* reason = cuda::smooth_quantize_cuda_unsupported_reason(p);
  TORCH_CHECK_NOT_IMPLEMENTED(reason == nullptr, "effattn smooth_quantize on CUDA: ", reason);
  check_launch(cuda::smooth_quantize(p, c10::cuda::getCurrentCUDAStream()), "smooth_quantize");
  return {quant, scale, mean};
}

std::tuple<Tensor, Tensor> estimate_block_mask_cuda(
    const Tensor& q_in, const Tensor& k_in, const Tensor& q_quant, const Tensor& q_scale,
    const Tensor& q_mean, const Tensor& k_quant, const Tensor& k_scale, const Tensor& k_mean,
    const Tensor& log_threshold, int64_t block_q, int64_t block_k, int64_t quant_block,
    int64_t sink_tokens, int64_t local_tokens, bool is_causal, std::optional<double> scale) {
  const EstimateParams ep =
      check_estimate_inputs(q_in, k_in, q_quant, q_scale, q_mean, k_quant, k_scale, k_mean, log_threshold,
                            block_q, block_k, quant_block, sink_tokens, local_tokens, is_causal, scale);
  TORCH_CHECK_NOT_IMPLEMENTED(q_in.scalar_type() == at::kHalf || q_in.scalar_type() == at::kBFloat16,
                              "effattn estimate_block_mask on CUDA supports float16 and bfloat16 q/k, got ",
                              q_in.scalar_type(), " (use the CPU op or cast)");
  const int64_t B = q_in.size(0), N = q_in.size(1), H = q_in.size(2), D = q_in.size(3);
  TORCH_CHECK_NOT_IMPLEMENTED(D == 32 || D == 64 || D == 128,
                              "effattn estimate_block_mask on CUDA supports head dims 32, 64 and 128, got ",
                              D, " (use the CPU op)");
  const c10::cuda::CUDAGuard guard(q_in.device());
  const int64_t mq = (N + block_q - 1) / block_q, mk = (N + block_k - 1) / block_k;
  const auto opts = q_in.options().dtype(at::kInt).memory_format(at::MemoryFormat::Contiguous);
  Tensor num_blocks = at::empty({B, H, mq}, opts);
  Tensor indices = at::empty({B, H, mq, mk}, opts);
  if (B == 0 || H == 0 || N == 0) return {num_blocks, indices};  // empty maps

  const Tensor q = kernel_ready(q_in), k = kernel_ready(k_in);
  const Tensor q8 = kernel_ready(q_quant), k8 = kernel_ready(k_quant);
  const Tensor qs = q_scale.contiguous(), ks = k_scale.contiguous();
  const Tensor qm = q_mean.contiguous(), km = k_mean.contiguous();
  const Tensor lt = log_threshold.to(at::kFloat).contiguous();
  cuda::EstimateCudaParams p;
  p.dtype = dtype_of(q);
  p.batch = B;
  p.tokens = N;
  p.heads = H;
  p.kv_heads = k.size(2);
  p.head_dim = D;
  p.block_q = ep.block_q;
  p.block_k = ep.block_k;
  p.quant_block = ep.quant_block;
  p.sink_tokens = ep.sink_tokens;
  p.local_tokens = ep.local_tokens;
  p.is_causal = ep.is_causal;
  p.scale = static_cast<float>(ep.scale);  // the CPU op rounds it to fp32 too
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.q_quant = q8.data_ptr<int8_t>();
  p.k_quant = k8.data_ptr<int8_t>();
  p.q_scale = qs.data_ptr<float>();
  p.k_scale = ks.data_ptr<float>();
  p.q_mean = qm.data_ptr<float>();
  p.k_mean = km.data_ptr<float>();
  p.log_threshold = lt.data_ptr<float>();
  p.kv_num_blocks = num_blocks.data_ptr<int32_t>();
  p.kv_indices = indices.data_ptr<int32_t>();
  const Tensor ws = workspace(cuda::estimate_workspace_bytes(p), q);
  p.workspace = ws.data_ptr();
  p.workspace_bytes = ws.numel();
  const char* reason = cuda::estimate_cuda_unsupported_reason(p);
  TORCH_CHECK_NOT_IMPLEMENTED(reason == nullptr, "effattn estimate_block_mask on CUDA: ", reason);
  check_launch(cuda::estimate_block_mask(p, c10::cuda::getCurrentCUDAStream()), "estimate_block_mask");
  return {num_blocks, indices};
}

}  // namespace

TORCH_LIBRARY_IMPL(effattn, CUDA, m) {
  m.impl("smooth_quantize", &smooth_quantize_cuda);
  m.impl("estimate_block_mask", &estimate_block_mask_cuda);
}

}  // namespace effattn
