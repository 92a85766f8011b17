// Exact CPU path of the quantized QK estimation (DESIGN.md §6): smoothing + symmetric
// quantization, and the block map from the quantized scores against the exact softmax
// statistics of the always-kept regions.
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace effattn {

struct EstimateParams {
  int64_t block_q = 64, block_k = 64;
  int64_t quant_block = 1;  // tokens sharing one quantization scale (1: per token)
  int64_t sink_tokens = 0, local_tokens = 0;
  bool is_causal = true;
  double scale = 1.0;
};

namespace cpu {

// x [B, N, H, D] → (x_int8 [B, N, H, D], scale fp32 [B, ceil(N / quant_block), H],
// mean fp32 [B, H, D]): x − mean over N, then round(x / scale) with scale = amax / qmax.
std::tuple<at::Tensor, at::Tensor, at::Tensor> smooth_quantize(const at::Tensor& x,
                                                                int64_t quant_block, int64_t bits);

// (kv_num_blocks int32 [B, H, Mq], kv_indices int32 [B, H, Mq, Mk]).
std::tuple<at::Tensor, at::Tensor> estimate_block_mask(
    const EstimateParams& p, const at::Tensor& q, const at::Tensor& k, const at::Tensor& q_quant,
    const at::Tensor& q_scale, const at::Tensor& q_mean, const at::Tensor& k_quant,
    const at::Tensor& k_scale, const at::Tensor& k_mean, const at::Tensor& log_threshold);

}  // namespace cpu
}  // namespace effattn
