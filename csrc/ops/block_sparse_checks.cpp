#include "block_sparse_checks.h"

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "block_map_cache.h"
#include "common_checks.h"

namespace effattn {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

void check_block_size(const char* name, int64_t size) {
  TORCH_CHECK(size == 64 || size == 128, name, " must be 64 or 128, got ", size);
}

// Host copy of a cu_seqlens tensor after its shape/dtype/device/value checks.
std::vector<int64_t> check_cu_seqlens(const char* name, const at::Tensor& cu, const at::Tensor& q,
                                      int64_t tokens, const char* tokens_name) {
  TORCH_CHECK(cu.dim() == 1 && cu.size(0) >= 2, name,
              " must have shape [num_seqs + 1] with num_seqs >= 1, got ", cu.sizes());
  TORCH_CHECK(cu.scalar_type() == at::kInt || cu.scalar_type() == at::kLong, name,
              " must be int32 or int64, got ", cu.scalar_type());
  TORCH_CHECK(cu.device() == q.device(), name, " must be on the device of q (", q.device(),
              "), got ", cu.device());
  const at::Tensor values = cu.to(at::kCPU, at::kLong).contiguous();
  const int64_t* c = values.const_data_ptr<int64_t>();
  std::vector<int64_t> out(c, c + values.numel());
  TORCH_CHECK(out[0] == 0, name, " must start at 0, got ", out[0]);
  for (size_t i = 1; i < out.size(); ++i) {
    TORCH_CHECK(out[i] >= out[i - 1], name, " must be non-decreasing, got ", name, "[", i - 1,
                "] = ", out[i - 1], " > ", name, "[", i, "] = ", out[i]);
  }
  TORCH_CHECK(out.back() == tokens, name, " must end at ", tokens_name, " = ", tokens, ", got ",
              out.back());
  return out;
}

// Value checks of the maps, with tensor ops on their device: the three conditions are
// reduced on the device and cross to the host together (one sync); only a failing check
// computes its error message (more syncs, on the error path).
void check_map_values(const BlockSparseProblem& p, const at::Tensor& kv_num_blocks,
                      const at::Tensor& kv_indices) {
  if (kv_num_blocks.numel() == 0) return;
  const int64_t mb = p.max_blocks;
  const at::Tensor num = kv_num_blocks.to(at::kLong);
  const at::Tensor bad_num = num.lt(0).logical_or(num.gt(mb));
  // Out-of-range counts make `live` meaningless: the later checks are only read when
  // bad_num is clear (they are computed anyway, to keep to one sync).
  const at::Tensor& idx = kv_indices;  // int32, compared without a widened copy
  const auto opts = num.options();
  // live[b, h, m, j]: entry j of row (b, h, m) is read (j < kv_num_blocks[b, h, m]).
  at::Tensor live = at::arange(mb, opts).lt(num.unsqueeze(-1));
  // Key blocks per row: Mk of the row's sequence. Rows past a packed sequence's last query
  // block are never read; they are marked with bound -1 and skipped.
  at::Tensor bound;
  const int64_t rows = p.map_q_blocks;
  if (!p.varlen) {
    bound = at::full({1, 1, rows, 1}, ceil_div(p.k_tokens, p.block_k), opts);
  } else {
    const int64_t nseq = static_cast<int64_t>(p.seqs.size());
    std::vector<int64_t> host(nseq * rows);
    for (int64_t s = 0; s < nseq; ++s) {
      const int64_t mq = ceil_div(p.seqs[s].q_len, p.block_q);
      const int64_t mk = ceil_div(p.seqs[s].k_len, p.block_k);
      for (int64_t m = 0; m < rows; ++m) host[s * rows + m] = m < mq ? mk : -1;
    }
    bound = at::tensor(host, at::TensorOptions().dtype(at::kLong))
                .reshape({nseq, 1, rows, 1})
                .to(num.device());
    live = live.logical_and(bound.ge(0));
  }
  const at::Tensor bad_idx = live.logical_and(idx.lt(0).logical_or(idx.ge(bound)));
  // A key block listed twice in one row would be counted twice: reject it. Rows listing their
  // live blocks in increasing order (block_mask_to_indices, the estimator, FlexAttention's
  // BlockMask) cannot repeat one; only maps with an unordered row pay for a sort (and a
  // second sync).
  at::Tensor unordered;
  if (mb > 1) {
    unordered = live.narrow(-1, 1, mb - 1)
                    .logical_and(idx.narrow(-1, 1, mb - 1).le(idx.narrow(-1, 0, mb - 1)));
  }
  std::vector<at::Tensor> flags = {bad_num.any(), bad_idx.any()};
  if (unordered.defined()) flags.push_back(unordered.any());
  const at::Tensor host_flags = at::stack(flags).to(at::kCPU);
  const bool* f = host_flags.const_data_ptr<bool>();
  at::Tensor sorted, dup;
  bool has_dup = false;
  if (!f[0] && !f[1] && unordered.defined() && f[2]) {
    const at::Tensor filler = at::arange(mb, opts).add(p.k_blocks + 1);
    sorted = std::get<0>(at::where(live, idx.to(at::kLong), filler).sort(-1));
    dup = sorted.narrow(-1, 1, mb - 1).eq(sorted.narrow(-1, 0, mb - 1));
    has_dup = dup.any().item<bool>();
  }

  if (f[0]) {
    const at::Tensor pos = bad_num.nonzero().select(0, 0).to(at::kCPU);
    const int64_t b = pos[0].item<int64_t>(), h = pos[1].item<int64_t>(), m = pos[2].item<int64_t>();
    TORCH_CHECK(false, "kv_num_blocks must be in [0, max_blocks] = [0, ", mb, "] (max_blocks = ",
                "kv_indices.size(-1)), got kv_num_blocks[", b, ", ", h, ", ", m, "] = ",
                num.index({b, h, m}).item<int64_t>());
  }
  if (f[1]) {
    const at::Tensor pos = bad_idx.nonzero().select(0, 0).to(at::kCPU);
    const int64_t b = pos[0].item<int64_t>(), h = pos[1].item<int64_t>();
    const int64_t m = pos[2].item<int64_t>(), j = pos[3].item<int64_t>();
    const int64_t mk = bound.index({p.varlen ? b : 0, 0, m, 0}).item<int64_t>();
    const int64_t value =
        idx.index({p.map_batch == 1 ? 0 : b, p.map_heads == 1 ? 0 : h, m, j}).item<int64_t>();
    TORCH_CHECK(false, "kv_indices must hold key-block indices in [0, Mk) = [0, ", mk,
                ") (Mk = ceil(", p.varlen ? "sequence key length" : "Nk", " / block_k)) in its first ",
                "kv_num_blocks entries, got kv_indices[", p.map_batch == 1 ? 0 : b, ", ",
                p.map_heads == 1 ? 0 : h, ", ", m, ", ", j, "] = ", value,
                p.varlen ? " for sequence " + std::to_string(b) : std::string());
  }
  if (has_dup) {
    const at::Tensor pos = dup.nonzero().select(0, 0).to(at::kCPU);
    const int64_t b = pos[0].item<int64_t>(), h = pos[1].item<int64_t>();
    const int64_t m = pos[2].item<int64_t>(), j = pos[3].item<int64_t>();
    TORCH_CHECK(false, "kv_indices must not repeat a key block within a row, got key block ",
                sorted.index({b, h, m, j}).item<int64_t>(), " twice in kv_indices[",
                p.map_batch == 1 ? 0 : b, ", ", p.map_heads == 1 ? 0 : h, ", ", m, "]");
  }
}

}  // namespace

BlockSparseProblem check_block_sparse_inputs(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& kv_num_blocks,
    const at::Tensor& kv_indices, int64_t block_q, int64_t block_k, bool is_causal,
    std::optional<double> scale, const std::optional<at::Tensor>& cu_seqlens_q,
    const std::optional<at::Tensor>& cu_seqlens_k) {
  TORCH_CHECK(q.dim() == 4, "q must have rank 4 ([B, Nq, H, D]), got shape ", q.sizes());
  TORCH_CHECK(k.dim() == 4, "k must have rank 4 ([B, Nk, H_kv, D]), got shape ", k.sizes());
  TORCH_CHECK(v.dim() == 4, "v must have rank 4 ([B, Nk, H_kv, D]), got shape ", v.sizes());
  TORCH_CHECK(k.sizes() == v.sizes(), "k and v must have the same shape, got ", k.sizes(),
              " and ", v.sizes());
  check_qkv_dtype_device(q, k, v);
  TORCH_CHECK(q.size(0) == k.size(0), "q and k must have the same batch size, got ", q.size(0),
              " and ", k.size(0));
  TORCH_CHECK(q.size(3) == k.size(3), "q and k must have the same head dim, got ", q.size(3),
              " and ", k.size(3));
  TORCH_CHECK(q.size(3) >= 1, "head dim must be at least 1, got ", q.size(3));
  TORCH_CHECK(k.size(2) >= 1 && q.size(2) % k.size(2) == 0, "the number of query heads (",
              q.size(2), ") must be a multiple of the number of key/value heads (", k.size(2), ")");
  check_block_size("block_q", block_q);
  check_block_size("block_k", block_k);

  BlockSparseProblem p;
  p.batch = q.size(0);
  p.q_tokens = q.size(1);
  p.k_tokens = k.size(1);
  p.heads = q.size(2);
  p.kv_heads = k.size(2);
  p.head_dim = q.size(3);
  p.block_q = block_q;
  p.block_k = block_k;
  p.is_causal = is_causal;
  const double s = scale.has_value() ? *scale : 1.0 / std::sqrt(static_cast<double>(p.head_dim));
  TORCH_CHECK(std::isfinite(s), "scale must be finite, got ", s);
  p.scale = s;

  // Sequences.
  TORCH_CHECK(cu_seqlens_q.has_value() == cu_seqlens_k.has_value(),
              "cu_seqlens_q and cu_seqlens_k must be given together (packed variable-length "
              "batch) or both left out");
  int64_t num_seqs = p.batch;
  if (cu_seqlens_q.has_value()) {
    TORCH_CHECK(p.batch == 1, "with cu_seqlens_q/cu_seqlens_k the batch size B must be 1 "
                "(sequences packed along N), got B = ", p.batch);
    TORCH_CHECK(cu_seqlens_q->dim() == 1 && cu_seqlens_k->dim() == 1 &&
                    cu_seqlens_q->size(0) == cu_seqlens_k->size(0),
                "cu_seqlens_q and cu_seqlens_k must both have shape [num_seqs + 1], got ",
                cu_seqlens_q->sizes(), " and ", cu_seqlens_k->sizes());
    const std::vector<int64_t> cq = check_cu_seqlens("cu_seqlens_q", *cu_seqlens_q, q, p.q_tokens, "Nq");
    const std::vector<int64_t> ck = check_cu_seqlens("cu_seqlens_k", *cu_seqlens_k, q, p.k_tokens, "Nk");
    p.varlen = true;
    num_seqs = static_cast<int64_t>(cq.size()) - 1;
    for (int64_t i = 0; i < num_seqs; ++i) {
      p.seqs.push_back({cq[i], cq[i + 1] - cq[i], ck[i], ck[i + 1] - ck[i], i});
    }
  } else {
    for (int64_t b = 0; b < p.batch; ++b) {
      p.seqs.push_back({b * p.q_tokens, p.q_tokens, b * p.k_tokens, p.k_tokens, b});
    }
  }

  // Map shapes, dtypes, devices.
  const char* batch_name = p.varlen ? "num_seqs" : "B";
  TORCH_CHECK(kv_num_blocks.dim() == 3, "kv_num_blocks must have rank 3 ([B|1, H|1, Mq]), got shape ",
              kv_num_blocks.sizes());
  TORCH_CHECK(kv_indices.dim() == 4,
              "kv_indices must have rank 4 ([B|1, H|1, Mq, max_blocks]), got shape ",
              kv_indices.sizes());
  TORCH_CHECK(kv_num_blocks.scalar_type() == at::kInt, "kv_num_blocks must be int32, got ",
              kv_num_blocks.scalar_type());
  TORCH_CHECK(kv_indices.scalar_type() == at::kInt, "kv_indices must be int32, got ",
              kv_indices.scalar_type());
  TORCH_CHECK(kv_num_blocks.device() == q.device() && kv_indices.device() == q.device(),
              "kv_num_blocks and kv_indices must be on the device of q (", q.device(), "), got ",
              kv_num_blocks.device(), " and ", kv_indices.device());
  TORCH_CHECK(kv_indices.sizes().slice(0, 3) == kv_num_blocks.sizes(),
              "kv_indices must have shape [*kv_num_blocks.shape, max_blocks] = [",
              kv_num_blocks.size(0), ", ", kv_num_blocks.size(1), ", ", kv_num_blocks.size(2),
              ", max_blocks], got ", kv_indices.sizes());
  p.map_batch = kv_num_blocks.size(0);
  p.map_heads = kv_num_blocks.size(1);
  p.map_q_blocks = kv_num_blocks.size(2);
  p.max_blocks = kv_indices.size(3);
  TORCH_CHECK(p.map_batch == 1 || p.map_batch == num_seqs, "kv_num_blocks.size(0) must be 1 or ",
              batch_name, " = ", num_seqs, ", got ", p.map_batch);
  TORCH_CHECK(p.map_heads == 1 || p.map_heads == p.heads, "kv_num_blocks.size(1) must be 1 or H = ",
              p.heads, ", got ", p.map_heads);
  if (p.map_batch == 1) {
    for (auto& seq : p.seqs) seq.map_batch = 0;
  }
  int64_t max_q_len = 0, max_k_len = 0;
  for (const auto& seq : p.seqs) {
    max_q_len = std::max(max_q_len, seq.q_len);
    max_k_len = std::max(max_k_len, seq.k_len);
  }
  p.k_blocks = ceil_div(max_k_len, block_k);
  if (p.varlen) {
    TORCH_CHECK(p.map_q_blocks >= ceil_div(max_q_len, block_q),
                "kv_num_blocks.size(2) must be at least ceil(longest query sequence / block_q) = "
                "ceil(", max_q_len, " / ", block_q, ") = ", ceil_div(max_q_len, block_q), ", got ",
                p.map_q_blocks);
  } else {
    TORCH_CHECK(p.map_q_blocks == ceil_div(p.q_tokens, block_q),
                "kv_num_blocks.size(2) must be Mq = ceil(Nq / block_q) = ceil(", p.q_tokens, " / ",
                block_q, ") = ", ceil_div(p.q_tokens, block_q), ", got ", p.map_q_blocks);
  }
  // Identity and version are taken before the checks: a change made while they run is a miss
  // next time, never a pair recorded as valid that was not checked.
  const BlockMapKeyPtr key = block_map_key(p, kv_num_blocks, kv_indices);
  if (!block_maps_known_valid(key)) {
    check_map_values(p, kv_num_blocks, kv_indices);
    remember_valid_block_maps(key);
  }
  return p;
}

void check_block_sparse_backward_inputs(const BlockSparseProblem& problem, const at::Tensor& q,
                                        const at::Tensor& grad_out,
                                        const std::optional<at::Tensor>& grad_lse,
                                        const at::Tensor& out, const at::Tensor& lse) {
  (void)problem;
  TORCH_CHECK(grad_out.sizes() == q.sizes(), "grad_out must have the shape of q ", q.sizes(),
              ", got ", grad_out.sizes());
  TORCH_CHECK(out.sizes() == q.sizes(), "out must have the shape of q ", q.sizes(), ", got ",
              out.sizes());
  const auto lse_shape = q.sizes().slice(0, 3);
  TORCH_CHECK(lse.sizes() == lse_shape, "lse must have shape [B, Nq, H] = ", lse_shape, ", got ",
              lse.sizes());
  TORCH_CHECK(grad_out.device() == q.device() && out.device() == q.device() &&
                  lse.device() == q.device(),
              "grad_out, out and lse must be on the device of q (", q.device(), ")");
  TORCH_CHECK(at::isFloatingType(grad_out.scalar_type()), "grad_out must be floating point, got ",
              grad_out.scalar_type());
  if (grad_lse.has_value()) {
    TORCH_CHECK(grad_lse->sizes() == lse_shape, "grad_lse must have shape [B, Nq, H] = ",
                lse_shape, ", got ", grad_lse->sizes());
    TORCH_CHECK(grad_lse->device() == q.device(), "grad_lse must be on the device of q (",
                q.device(), ")");
  }
}

}  // namespace effattn
