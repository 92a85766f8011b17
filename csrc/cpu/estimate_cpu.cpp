// Quantized QK estimation on the CPU. The estimated score of query i and key c is
//   S̃_ic = scale · (sq_i · sk_c · Σ_d q8_id k8_cd + μq·(k_c − μk) + q_i·μk),
// exactly q_i·k_c up to the quantization of the smoothed q̃ = q − μq and k̃ = k − μk (the two
// bias terms are computed in full precision). A key block is kept when one of its live
// entries reaches S̃ ≥ lse_i + log τ_h, where lse_i is the exact log-sum-exp of row i over
// its always-kept keys (sink, local window, diagonal block), i.e. exp(S̃ − m_i)/l_i ≥ τ_h.
#include "estimate_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "vector_math.h"

namespace effattn::cpu {
namespace {

// Key c is causally visible from query i (or always, without causality).
inline bool visible(const EstimateParams& p, int64_t i, int64_t c) { return !p.is_causal || c <= i; }

// Key c is in query i's always-kept region: sink, local window, or i's diagonal key block.
inline bool always_kept(const EstimateParams& p, int64_t i, int64_t c) {
  const int64_t distance = p.is_causal ? i - c : std::abs(i - c);
  return c < p.sink_tokens || distance < p.local_tokens || c / p.block_k == i / p.block_k;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> smooth_quantize(const at::Tensor& x,
                                                                int64_t quant_block, int64_t bits) {
  const double qmax = static_cast<double>((1 << (bits - 1)) - 1);
  const at::Tensor xf = x.to(at::kFloat);
  const at::Tensor mean = xf.mean(1);  // [B, H, D]
  // Contiguous: the outputs must not inherit a permuted input's strides (the fake kernel
  // promises contiguous tensors).
  const at::Tensor centered = (xf - mean.unsqueeze(1)).contiguous();
  const int64_t B = x.size(0), N = x.size(1), H = x.size(2), D = x.size(3);
  const int64_t M = (N + quant_block - 1) / quant_block;
  // amax per (batch, quantization block, head): pad N to M * quant_block with zeros.
  at::Tensor padded = at::constant_pad_nd(centered.abs(), {0, 0, 0, 0, 0, M * quant_block - N});
  at::Tensor amax = padded.view({B, M, quant_block, H, D}).amax({2, 4});  // [B, M, H]
  at::Tensor scale = (amax / qmax).clamp_min(1e-12);
  at::Tensor per_token = scale.repeat_interleave(quant_block, 1).narrow(1, 0, N).unsqueeze(-1);
  at::Tensor quant = at::round(centered / per_token).clamp(-qmax, qmax).to(at::kChar);
  return {quant, scale, mean};
}

std::tuple<at::Tensor, at::Tensor> estimate_block_mask(
    const EstimateParams& p, const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& q_quant_in,
    const at::Tensor& q_scale_in, const at::Tensor& q_mean_in, const at::Tensor& k_quant_in,
    const at::Tensor& k_scale_in, const at::Tensor& k_mean_in, const at::Tensor& log_threshold_in) {
  const int64_t B = q_in.size(0), N = q_in.size(1), H = q_in.size(2), D = q_in.size(3);
  const int64_t Hkv = k_in.size(2), G = H / Hkv;
  const int64_t Mq = (N + p.block_q - 1) / p.block_q, Mk = (N + p.block_k - 1) / p.block_k;
  const at::Tensor q = q_in.to(at::kFloat).contiguous(), k = k_in.to(at::kFloat).contiguous();
  const at::Tensor q8 = q_quant_in.contiguous(), k8 = k_quant_in.contiguous();
  const at::Tensor q_scale = q_scale_in.contiguous(), k_scale = k_scale_in.contiguous();
  const at::Tensor q_mean = q_mean_in.to(at::kFloat).contiguous();
  const at::Tensor k_mean = k_mean_in.to(at::kFloat).contiguous();
  const at::Tensor log_threshold = log_threshold_in.to(at::kFloat).contiguous();
  // Exact bias terms: key bias μq·(k_c − μk) per query head, query bias q_i·μk.
  const at::Tensor k_centered = k - k_mean.unsqueeze(1);                               // [B, N, Hkv, D]
  const at::Tensor q_mean_g = q_mean.view({B, Hkv, G, D});
  const at::Tensor key_bias = at::einsum("bnkd,bkgd->bnkg", {k_centered, q_mean_g})
                                  .reshape({B, N, H}).contiguous();                       // [B, N, H]
  const at::Tensor query_bias = at::einsum("bnkgd,bkd->bnkg", {q.view({B, N, Hkv, G, D}), k_mean})
                                    .reshape({B, N, H}).contiguous();                     // [B, N, H]

  at::Tensor num_blocks = at::zeros({B, H, Mq}, q_in.options().dtype(at::kInt));
  at::Tensor indices = at::zeros({B, H, Mq, Mk}, q_in.options().dtype(at::kInt));
  const float* qp = q.const_data_ptr<float>();
  const float* kp = k.const_data_ptr<float>();
  const int8_t* q8p = q8.const_data_ptr<int8_t>();
  const int8_t* k8p = k8.const_data_ptr<int8_t>();
  const float* qsp = q_scale.const_data_ptr<float>();
  const float* ksp = k_scale.const_data_ptr<float>();
  const float* kbp = key_bias.const_data_ptr<float>();
  const float* qbp = query_bias.const_data_ptr<float>();
  const float* ltp = log_threshold.const_data_ptr<float>();
  int32_t* nbp = num_blocks.mutable_data_ptr<int32_t>();
  int32_t* idp = indices.mutable_data_ptr<int32_t>();
  const float scale = static_cast<float>(p.scale);
  const int64_t Ms = q_scale.size(1);

  at::parallel_for(0, B * H * Mq, 1, [&](int64_t begin, int64_t end) {
    std::vector<char> keep(Mk);
    std::vector<float> bound(p.block_q);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t qb = task % Mq, h = (task / Mq) % H, b = task / (Mq * H), hk = h / G;
      const int64_t row0 = qb * p.block_q, row1 = std::min(N, row0 + p.block_q);
      auto q_row = [&](int64_t i) { return ((b * N + i) * H + h); };
      auto k_row = [&](int64_t c) { return ((b * N + c) * Hkv + hk); };
      std::fill(keep.begin(), keep.end(), 0);
      // Exact statistics over each row's always-kept keys; those blocks are always kept.
      for (int64_t i = row0; i < row1; ++i) {
        double m = -std::numeric_limits<double>::infinity(), l = 0;
        for (int64_t c = 0; c < N; ++c) {
          if (!visible(p, i, c) || !always_kept(p, i, c)) continue;
          keep[c / p.block_k] = 1;
          const double s = scale * static_cast<double>(dot(qp + q_row(i) * D, kp + k_row(c) * D, D));
          if (s > m) {
            l = l * std::exp(m - s) + 1;
            m = s;
          } else {
            l += std::exp(s - m);
          }
        }
        bound[i - row0] = static_cast<float>(m + std::log(l)) + ltp[h];
      }
      // Estimated entries of the other blocks.
      for (int64_t kb = 0; kb < Mk; ++kb) {
        if (keep[kb]) continue;
        const int64_t col0 = kb * p.block_k, col1 = std::min(N, col0 + p.block_k);
        for (int64_t i = row0; i < row1 && !keep[kb]; ++i) {
          const int8_t* qi = q8p + q_row(i) * D;
          const float sq = qsp[(b * Ms + i / p.quant_block) * H + h];
          for (int64_t c = col0; c < col1; ++c) {
            if (!visible(p, i, c)) break;
            int32_t acc = 0;
            const int8_t* kc = k8p + k_row(c) * D;
            for (int64_t d = 0; d < D; ++d) acc += static_cast<int32_t>(qi[d]) * kc[d];
            const float sk = ksp[(b * Ms + c / p.quant_block) * Hkv + hk];
            const float est = scale * (sq * sk * static_cast<float>(acc) + kbp[(b * N + c) * H + h] +
                                       qbp[(b * N + i) * H + h]);
            if (est >= bound[i - row0]) {
              keep[kb] = 1;
              break;
            }
          }
        }
      }
      int32_t n = 0;
      int32_t* row_indices = idp + task * Mk;
      for (int64_t kb = 0; kb < Mk; ++kb)
        if (keep[kb]) row_indices[n++] = static_cast<int32_t>(kb);
      nbp[task] = n;
    }
  });
  return {num_blocks, indices};
}

}  // namespace effattn::cpu
