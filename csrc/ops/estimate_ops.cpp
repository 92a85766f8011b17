// Torch binding of the quantized QK estimation ops (DESIGN.md §6): checks, then the CPU path.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <cmath>

#include "../cpu/estimate_cpu.h"

namespace effattn {
namespace {

using at::Tensor;

void check_qk(const Tensor& q, const Tensor& k) {
  TORCH_CHECK(q.dim() == 4, "q must have shape [B, N, H, D], got ", q.sizes());
  TORCH_CHECK(k.dim() == 4, "k must have shape [B, N, H_kv, D], got ", k.sizes());
  TORCH_CHECK(at::isFloatingType(q.scalar_type()) && q.scalar_type() == k.scalar_type(),
              "q and k must be floating-point tensors of one dtype, got ", q.scalar_type(), " and ",
              k.scalar_type());
  TORCH_CHECK(q.device() == k.device(), "q and k must be on the same device");
  TORCH_CHECK(q.size(0) == k.size(0) && q.size(1) == k.size(1) && q.size(3) == k.size(3),
              "q and k must agree on batch, sequence length (prefill: N_q == N_k) and head dim, got ",
              q.sizes(), " and ", k.sizes());
  TORCH_CHECK(k.size(2) >= 1 && q.size(2) % k.size(2) == 0, "the number of query heads (", q.size(2),
              ") must be a multiple of the number of key/value heads (", k.size(2), ")");
}

void check_bits(int64_t bits) {
  TORCH_CHECK_NOT_IMPLEMENTED(bits == 8, "bits must be 8 (int8); got ", bits,
                              ": int4 tensor-core MMA is emulated on Hopper (~54 TOPS measured vs "
                              "~1230 for int8), so only int8 is implemented");
}

}  // namespace

// The argument checks of both ops, shared with the CUDA binding
// (csrc/ops/cuda/estimate_cuda_ops.cpp declares them), so every device rejects the same inputs
// before any kernel runs.
void check_smooth_quantize_inputs(const Tensor& x, int64_t quant_block, int64_t bits) {
  TORCH_CHECK(x.dim() == 4, "x must have shape [B, N, H, D], got ", x.sizes());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "x must be a floating-point tensor");
  TORCH_CHECK(x.size(1) >= 1, "x must have at least one token");
  TORCH_CHECK(quant_block >= 1, "quant_block must be >= 1 (1: one scale per token), got ", quant_block);
  check_bits(bits);
}

EstimateParams check_estimate_inputs(
    const Tensor& q, const Tensor& k, const Tensor& q_quant, const Tensor& q_scale,
    const Tensor& q_mean, const Tensor& k_quant, const Tensor& k_scale, const Tensor& k_mean,
    const Tensor& log_threshold, int64_t block_q, int64_t block_k, int64_t quant_block,
    int64_t sink_tokens, int64_t local_tokens, bool is_causal, std::optional<double> scale) {
  check_qk(q, k);
  const int64_t B = q.size(0), N = q.size(1), H = q.size(2), Hkv = k.size(2), D = q.size(3);
  const int64_t Ms = (N + std::max<int64_t>(quant_block, 1) - 1) / std::max<int64_t>(quant_block, 1);
  TORCH_CHECK(block_q == 64 || block_q == 128, "block_q must be 64 or 128, got ", block_q);
  TORCH_CHECK(block_k == 64 || block_k == 128, "block_k must be 64 or 128, got ", block_k);
  TORCH_CHECK(quant_block >= 1, "quant_block must be >= 1, got ", quant_block);
  TORCH_CHECK(sink_tokens >= 0, "sink_tokens must be >= 0, got ", sink_tokens);
  TORCH_CHECK(local_tokens >= 0, "local_tokens must be >= 0, got ", local_tokens);
  TORCH_CHECK(is_causal || sink_tokens == 0,
              "sink_tokens must be 0 when is_causal=False (attention sinks are a causal notion)");
  TORCH_CHECK(D >= 1, "head dim must be at least 1");
  TORCH_CHECK(q_quant.scalar_type() == at::kChar && q_quant.sizes() == q.sizes(),
              "q_quant must be int8 with the shape of q");
  TORCH_CHECK(k_quant.scalar_type() == at::kChar && k_quant.sizes() == k.sizes(),
              "k_quant must be int8 with the shape of k");
  TORCH_CHECK(q_scale.scalar_type() == at::kFloat && q_scale.sizes() == at::IntArrayRef({B, Ms, H}),
              "q_scale must be float32 [B, ceil(N / quant_block), H] = [", B, ", ", Ms, ", ", H, "]");
  TORCH_CHECK(k_scale.scalar_type() == at::kFloat && k_scale.sizes() == at::IntArrayRef({B, Ms, Hkv}),
              "k_scale must be float32 [B, ceil(N / quant_block), H_kv] = [", B, ", ", Ms, ", ", Hkv, "]");
  TORCH_CHECK(q_mean.scalar_type() == at::kFloat && q_mean.sizes() == at::IntArrayRef({B, H, D}),
              "q_mean must be float32 [B, H, D]");
  TORCH_CHECK(k_mean.scalar_type() == at::kFloat && k_mean.sizes() == at::IntArrayRef({B, Hkv, D}),
              "k_mean must be float32 [B, H_kv, D]");
  TORCH_CHECK(log_threshold.dim() == 1 && log_threshold.size(0) == H,
              "log_threshold must have shape [H] = [", H, "], got ", log_threshold.sizes());
  for (const Tensor* t : {&q_quant, &q_scale, &q_mean, &k_quant, &k_scale, &k_mean, &log_threshold})
    TORCH_CHECK(t->device() == q.device(), "quantized tensors and log_threshold must be on q's device");
  EstimateParams p;
  p.block_q = block_q;
  p.block_k = block_k;
  p.quant_block = quant_block;
  p.sink_tokens = sink_tokens;
  p.local_tokens = local_tokens;
  p.is_causal = is_causal;
  p.scale = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(D));
  return p;
}

namespace {

std::tuple<Tensor, Tensor, Tensor> smooth_quantize(const Tensor& x, int64_t quant_block, int64_t bits) {
  check_smooth_quantize_inputs(x, quant_block, bits);
  return cpu::smooth_quantize(x, quant_block, bits);
}

std::tuple<Tensor, Tensor> estimate_block_mask(
    const Tensor& q, const Tensor& k, const Tensor& q_quant, const Tensor& q_scale,
    const Tensor& q_mean, const Tensor& k_quant, const Tensor& k_scale, const Tensor& k_mean,
    const Tensor& log_threshold, int64_t block_q, int64_t block_k, int64_t quant_block,
    int64_t sink_tokens, int64_t local_tokens, bool is_causal, std::optional<double> scale) {
  const EstimateParams p =
      check_estimate_inputs(q, k, q_quant, q_scale, q_mean, k_quant, k_scale, k_mean, log_threshold,
                            block_q, block_k, quant_block, sink_tokens, local_tokens, is_causal, scale);
  return cpu::estimate_block_mask(p, q, k, q_quant, q_scale, q_mean, k_quant, k_scale, k_mean,
                                  log_threshold);
}

}  // namespace

TORCH_LIBRARY_IMPL(effattn, CPU, m) {
  m.impl("smooth_quantize", &smooth_quantize);
  m.impl("estimate_block_mask", &estimate_block_mask);
}

}  // namespace effattn
