// Exact CPU block-sparse attention. Work is split with at::parallel_for over
//   forward, dQ   (query token, head) rows: each walks the key blocks its query block lists;
//   dK, dV        (key token, kv head) rows: each walks, for every query head of its group,
//                 the query blocks that list its key block (the transposed map, built once
//                 per call as a CSR array per (map batch, map head, key block)).
// Every pair (query i, key j) visited satisfies: j's block is listed for i's block, j < the
// sequence's key length, and with is_causal j <= i + (k_len - q_len) (bottom-right aligned).
// No atomics, no N×N memory; scores are recomputed from the saved LSE in the backward.
#include "block_sparse_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "compute_type.h"
#include "vector_math.h"

namespace effattn::cpu {
namespace {

// Rows per parallel task: aim for ~64k multiply-adds per task.
int64_t grain_for(int64_t work_per_row) {
  return std::max<int64_t>(1, 65536 / std::max<int64_t>(1, work_per_row));
}

// Host views of the maps and the per-token sequence lookup.
struct Maps {
  at::Tensor num_t, idx_t;
  const int32_t* num = nullptr;  // [Bm, Hm, Mq]
  const int32_t* idx = nullptr;  // [Bm, Hm, Mq, max_blocks]
  std::vector<int32_t> seq_of_q, seq_of_k;

  Maps(const BlockSparseProblem& p, const at::Tensor& kv_num_blocks, const at::Tensor& kv_indices)
      : num_t(kv_num_blocks.to(at::kCPU).contiguous()), idx_t(kv_indices.to(at::kCPU).contiguous()) {
    num = num_t.const_data_ptr<int32_t>();
    idx = idx_t.const_data_ptr<int32_t>();
    seq_of_q.resize(p.batch * p.q_tokens);
    seq_of_k.resize(p.batch * p.k_tokens);
    for (size_t s = 0; s < p.seqs.size(); ++s) {
      const auto& seq = p.seqs[s];
      std::fill_n(seq_of_q.begin() + seq.q_start, seq.q_len, static_cast<int32_t>(s));
      std::fill_n(seq_of_k.begin() + seq.k_start, seq.k_len, static_cast<int32_t>(s));
    }
  }

  // Offset of map row (map batch, map head, query block).
  static int64_t row(const BlockSparseProblem& p, int64_t mb, int64_t mh, int64_t qb) {
    return (mb * p.map_heads + mh) * p.map_q_blocks + qb;
  }
};

// Query blocks per key block: for map (mb, mh) and key block kb, the query blocks whose row
// lists kb are entries[offsets[c] .. offsets[c + 1]) with c = (mb * Hm + mh) * k_blocks + kb,
// in increasing order. Entries outside [0, k_blocks) (unread rows of packed sequences) are
// dropped; the checks guarantee that every read entry is in range.
struct TransposedMap {
  std::vector<int64_t> offsets;
  std::vector<int32_t> entries;

  TransposedMap(const BlockSparseProblem& p, const Maps& maps) {
    const int64_t cells = p.map_batch * p.map_heads * p.k_blocks;
    offsets.assign(cells + 1, 0);
    auto for_each_entry = [&](auto&& fn) {
      for (int64_t mb = 0; mb < p.map_batch; ++mb) {
        for (int64_t mh = 0; mh < p.map_heads; ++mh) {
          for (int64_t qb = 0; qb < p.map_q_blocks; ++qb) {
            const int64_t r = Maps::row(p, mb, mh, qb);
            const int64_t n = std::clamp<int64_t>(maps.num[r], 0, p.max_blocks);
            for (int64_t j = 0; j < n; ++j) {
              const int64_t kb = maps.idx[r * p.max_blocks + j];
              if (kb >= 0 && kb < p.k_blocks) fn((mb * p.map_heads + mh) * p.k_blocks + kb, qb);
            }
          }
        }
      }
    };
    for_each_entry([&](int64_t cell, int64_t) { ++offsets[cell + 1]; });
    for (int64_t c = 0; c < cells; ++c) offsets[c + 1] += offsets[c];
    entries.resize(offsets[cells]);
    std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
    for_each_entry([&](int64_t cell, int64_t qb) { entries[fill[cell]++] = static_cast<int32_t>(qb); });
  }
};

// Keys [0, end) of a sequence a query at local index i may see (is_causal: j <= i + k_len - q_len).
inline int64_t key_end(const BlockSparseProblem& p, const BlockSparseSequence& seq, int64_t i) {
  if (!p.is_causal) return seq.k_len;
  return std::clamp<int64_t>(i + seq.k_len - seq.q_len + 1, 0, seq.k_len);
}

// Calls fn(local key index) for every key the query at local index i of sequence `seq`,
// head h, attends to.
template <typename Fn>
inline void for_each_key(const BlockSparseProblem& p, const Maps& maps,
                         const BlockSparseSequence& seq, int64_t i, int64_t h, Fn&& fn) {
  const int64_t end = key_end(p, seq, i);
  if (end <= 0) return;
  const int64_t r = Maps::row(p, seq.map_batch, p.map_head(h), i / p.block_q);
  // Clamped and range-checked although the op's checks ran: maps remembered as checked
  // (block_map_cache.h) may have been changed behind PyTorch's back since; this stays in bounds.
  const int64_t n = std::clamp<int64_t>(maps.num[r], 0, p.max_blocks);
  const int32_t* list = maps.idx + r * p.max_blocks;
  for (int64_t e = 0; e < n; ++e) {
    if (list[e] < 0) continue;
    const int64_t j0 = static_cast<int64_t>(list[e]) * p.block_k;
    const int64_t j1 = std::min(j0 + p.block_k, end);
    for (int64_t j = j0; j < j1; ++j) fn(j);
  }
}

template <typename T>
void forward_kernel(const BlockSparseProblem& p, const Maps& maps, const T* q, const T* k,
                    const T* v, T* out, T* lse) {
  const int64_t H = p.heads, Hkv = p.kv_heads, D = p.head_dim, G = p.group_size();
  const T scale = static_cast<T>(p.scale);
  const int64_t rows = p.batch * p.q_tokens * H;
  // Live indices are unique and below k_blocks, so a row never lists more than k_blocks.
  const int64_t buffer = std::min(p.max_blocks, p.k_blocks) * p.block_k;
  at::parallel_for(0, rows, grain_for(2 * buffer * D), [&](int64_t begin, int64_t end) {
    std::vector<T> scores(buffer);
    std::vector<int64_t> keys(buffer);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t h = row % H, t = row / H;
      const BlockSparseSequence& seq = p.seqs[maps.seq_of_q[t]];
      const T* qr = q + row * D;
      int64_t n = 0;
      T m = -std::numeric_limits<T>::infinity();
      for_each_key(p, maps, seq, t - seq.q_start, h, [&](int64_t j) {
        if (n == buffer) return;  // only a map with a repeated block (unchecked) gets here
        const int64_t kr = (seq.k_start + j) * Hkv + h / G;
        const T s = dot(qr, k + kr * D, D) * scale;
        scores[n] = s;
        keys[n++] = kr;
        m = std::max(m, s);
      });
      T* o = out + row * D;
      std::fill(o, o + D, T(0));
      if (n == 0) {
        lse[row] = -std::numeric_limits<T>::infinity();
        continue;
      }
      T l = 0;
      for (int64_t e = 0; e < n; ++e) {
        const T w = std::exp(scores[e] - m);
        l += w;
        axpy(w, v + keys[e] * D, o, D);
      }
      for (int64_t d = 0; d < D; ++d) o[d] /= l;
      lse[row] = m + std::log(l);
    }
  });
}

template <typename T>
void grad_q_kernel(const BlockSparseProblem& p, const Maps& maps, const T* q, const T* k,
                   const T* v, const T* dout, const T* lse, const T* delta, T* dq) {
  const int64_t H = p.heads, Hkv = p.kv_heads, D = p.head_dim, G = p.group_size();
  const T scale = static_cast<T>(p.scale);
  const int64_t rows = p.batch * p.q_tokens * H;
  at::parallel_for(0, rows, grain_for(3 * std::min(p.max_blocks, p.k_blocks) * p.block_k * D), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t h = row % H, t = row / H;
      const BlockSparseSequence& seq = p.seqs[maps.seq_of_q[t]];
      const T* qr = q + row * D;
      const T* dor = dout + row * D;
      T* dqr = dq + row * D;
      std::fill(dqr, dqr + D, T(0));
      for_each_key(p, maps, seq, t - seq.q_start, h, [&](int64_t j) {
        const int64_t kr = ((seq.k_start + j) * Hkv + h / G) * D;
        const T prob = std::exp(dot(qr, k + kr, D) * scale - lse[row]);
        const T ds = prob * (dot(dor, v + kr, D) - delta[row]);
        axpy(ds, k + kr, dqr, D);
      });
      for (int64_t d = 0; d < D; ++d) dqr[d] *= scale;
    }
  });
}

template <typename T>
void grad_kv_kernel(const BlockSparseProblem& p, const Maps& maps, const TransposedMap& tmap,
                    const T* q, const T* k, const T* v, const T* dout, const T* lse,
                    const T* delta, T* dk, T* dv) {
  const int64_t H = p.heads, Hkv = p.kv_heads, D = p.head_dim, G = p.group_size();
  const T scale = static_cast<T>(p.scale);
  const int64_t rows = p.batch * p.k_tokens * Hkv;
  const int64_t avg_q_blocks =
      std::max<int64_t>(1, static_cast<int64_t>(tmap.entries.size()) /
                               std::max<int64_t>(1, p.map_batch * p.map_heads * p.k_blocks));
  at::parallel_for(0, rows, grain_for(4 * G * avg_q_blocks * p.block_q * D), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t hk = row % Hkv, t = row / Hkv;
      const BlockSparseSequence& seq = p.seqs[maps.seq_of_k[t]];
      const int64_t j = t - seq.k_start, kb = j / p.block_k;
      // Queries [first, q_len) may see key j (is_causal: i >= j - (k_len - q_len)).
      const int64_t first = p.is_causal ? std::max<int64_t>(0, j - (seq.k_len - seq.q_len)) : 0;
      const T* kr = k + row * D;
      const T* vr = v + row * D;
      T* dkr = dk + row * D;
      T* dvr = dv + row * D;
      std::fill(dkr, dkr + D, T(0));
      std::fill(dvr, dvr + D, T(0));
      for (int64_t h = hk * G; h < (hk + 1) * G; ++h) {
        const int64_t cell = (seq.map_batch * p.map_heads + p.map_head(h)) * p.k_blocks + kb;
        for (int64_t e = tmap.offsets[cell]; e < tmap.offsets[cell + 1]; ++e) {
          const int64_t qb = tmap.entries[e];
          const int64_t i0 = std::max(qb * p.block_q, first);
          const int64_t i1 = std::min((qb + 1) * p.block_q, seq.q_len);
          for (int64_t i = i0; i < i1; ++i) {
            const int64_t qi = (seq.q_start + i) * H + h;
            const T prob = std::exp(dot(q + qi * D, kr, D) * scale - lse[qi]);
            axpy(prob, dout + qi * D, dvr, D);
            const T ds = prob * (dot(dout + qi * D, vr, D) - delta[qi]);
            axpy(ds, q + qi * D, dkr, D);
          }
        }
      }
      for (int64_t d = 0; d < D; ++d) dkr[d] *= scale;
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> block_sparse_forward(const BlockSparseProblem& problem,
                                                        const at::Tensor& q, const at::Tensor& k,
                                                        const at::Tensor& v,
                                                        const at::Tensor& kv_num_blocks,
                                                        const at::Tensor& kv_indices) {
  const at::ScalarType type = compute_type(q);
  const at::Tensor qc = as_compute(q, type), kc = as_compute(k, type), vc = as_compute(v, type);
  at::Tensor out = at::empty(q.sizes(), qc.options());
  at::Tensor lse = at::empty(q.sizes().slice(0, 3), qc.options());
  if (q.numel() > 0) {
    const Maps maps(problem, kv_num_blocks, kv_indices);
    AT_DISPATCH_FLOATING_TYPES(type, "effattn_block_sparse_forward_cpu", [&] {
      forward_kernel<scalar_t>(problem, maps, qc.const_data_ptr<scalar_t>(),
                               kc.const_data_ptr<scalar_t>(), vc.const_data_ptr<scalar_t>(),
                               out.mutable_data_ptr<scalar_t>(), lse.mutable_data_ptr<scalar_t>());
    });
  } else {
    lse.fill_(-std::numeric_limits<double>::infinity());
  }
  return {out.to(q.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> block_sparse_backward(
    const BlockSparseProblem& problem, const at::Tensor& grad_out,
    const std::optional<at::Tensor>& grad_lse, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    const at::Tensor& kv_num_blocks, const at::Tensor& kv_indices) {
  const at::ScalarType type = compute_type(q);
  const at::Tensor qc = as_compute(q, type), kc = as_compute(k, type), vc = as_compute(v, type);
  const at::Tensor doc = as_compute(grad_out, type);
  const at::Tensor lsec = as_compute(lse, type);
  // delta_i = dO_i · O_i − dLSE_i: the row term of dS = P ∘ (dP − delta).
  at::Tensor delta = (doc * as_compute(out, type)).sum(-1);
  if (grad_lse.has_value()) delta = delta - grad_lse->to(type);
  delta = delta.contiguous();
  at::Tensor dq = at::zeros(q.sizes(), qc.options());
  at::Tensor dk = at::zeros(k.sizes(), qc.options());
  at::Tensor dv = at::zeros(v.sizes(), qc.options());
  if (q.numel() > 0 && k.numel() > 0) {
    const Maps maps(problem, kv_num_blocks, kv_indices);
    const TransposedMap tmap(problem, maps);
    AT_DISPATCH_FLOATING_TYPES(type, "effattn_block_sparse_backward_cpu", [&] {
      grad_q_kernel<scalar_t>(problem, maps, qc.const_data_ptr<scalar_t>(),
                              kc.const_data_ptr<scalar_t>(), vc.const_data_ptr<scalar_t>(),
                              doc.const_data_ptr<scalar_t>(), lsec.const_data_ptr<scalar_t>(),
                              delta.const_data_ptr<scalar_t>(), dq.mutable_data_ptr<scalar_t>());
      grad_kv_kernel<scalar_t>(problem, maps, tmap, qc.const_data_ptr<scalar_t>(),
                               kc.const_data_ptr<scalar_t>(), vc.const_data_ptr<scalar_t>(),
                               doc.const_data_ptr<scalar_t>(), lsec.const_data_ptr<scalar_t>(),
                               delta.const_data_ptr<scalar_t>(), dk.mutable_data_ptr<scalar_t>(),
                               dv.mutable_data_ptr<scalar_t>());
    });
  }
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type())};
}

}  // namespace effattn::cpu
