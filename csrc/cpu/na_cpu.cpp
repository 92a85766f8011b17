// Exact CPU neighborhood attention. Work is split over (batch, token, head) rows with
// at::parallel_for; each query touches only its window (O(window · D) per row), and the
// dK/dV pass walks each key's inverse neighborhood, so no step needs atomics or N×N memory.
#include "na_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "compute_type.h"
#include "na_neighbors.h"
#include "vector_math.h"

namespace effattn::cpu {
namespace {

// Rows per parallel task: aim for ~64k multiply-adds per task.
int64_t grain_for(const NaProblem& p, int64_t rows_per_item = 1) {
  const int64_t work = std::max<int64_t>(1, p.max_window() * p.head_dim * rows_per_item);
  return std::max<int64_t>(1, 65536 / work);
}

// Row (b, token, head) of a contiguous [B, N, heads, D] tensor.
struct RowIndex {
  int64_t tokens, heads;
  int64_t operator()(int64_t b, int64_t token, int64_t head) const {
    return (b * tokens + token) * heads + head;
  }
};

template <typename T>
void forward_kernel(const NaProblem& p, const T* q, const T* k, const T* v, T* out, T* lse) {
  const int64_t N = p.tokens(), H = p.heads, D = p.head_dim, G = p.group_size();
  const RowIndex kv_row{N, p.kv_heads};
  const GridStrides grid(p);
  const T scale = static_cast<T>(p.scale);
  at::parallel_for(0, p.batch * N * H, grain_for(p), [&](int64_t begin, int64_t end) {
    std::vector<T> scores(p.max_window());
    std::vector<int64_t> keys(p.max_window());
    for (int64_t row = begin; row < end; ++row) {
      const int64_t h = row % H, t = (row / H) % N, b = row / (H * N);
      int64_t c[kMaxRank];
      token_coords(p, t, c);
      const T* qr = q + row * D;
      int64_t n = 0;
      T m = -std::numeric_limits<T>::infinity();
      for_each_key(p, grid, c, [&](int64_t key) {
        const T s = dot(qr, k + kv_row(b, key, h / G) * D, D) * scale;
        scores[n] = s;
        keys[n++] = key;
        m = std::max(m, s);
      });
      T* o = out + row * D;
      std::fill(o, o + D, T(0));
      T l = 0;
      for (int64_t i = 0; i < n; ++i) {
        const T e = std::exp(scores[i] - m);
        l += e;
        axpy(e, v + kv_row(b, keys[i], h / G) * D, o, D);
      }
      for (int64_t d = 0; d < D; ++d) o[d] /= l;
      lse[row] = m + std::log(l);
    }
  });
}

template <typename T>
void grad_q_kernel(const NaProblem& p, const T* q, const T* k, const T* v, const T* dout,
                   const T* lse, const T* delta, T* dq) {
  const int64_t N = p.tokens(), H = p.heads, D = p.head_dim, G = p.group_size();
  const RowIndex kv_row{N, p.kv_heads};
  const GridStrides grid(p);
  const T scale = static_cast<T>(p.scale);
  at::parallel_for(0, p.batch * N * H, grain_for(p), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t h = row % H, t = (row / H) % N, b = row / (H * N);
      int64_t c[kMaxRank];
      token_coords(p, t, c);
      const T* qr = q + row * D;
      const T* dor = dout + row * D;
      T* dqr = dq + row * D;
      std::fill(dqr, dqr + D, T(0));
      for_each_key(p, grid, c, [&](int64_t key) {
        const int64_t kr = kv_row(b, key, h / G) * D;
        const T prob = std::exp(dot(qr, k + kr, D) * scale - lse[row]);
        const T ds = prob * (dot(dor, v + kr, D) - delta[row]);
        axpy(ds, k + kr, dqr, D);
      });
      for (int64_t d = 0; d < D; ++d) dqr[d] *= scale;
    }
  });
}

template <typename T>
void grad_kv_kernel(const NaProblem& p, const T* q, const T* k, const T* v, const T* dout,
                    const T* lse, const T* delta, T* dk, T* dv) {
  const int64_t N = p.tokens(), H = p.heads, Hkv = p.kv_heads, D = p.head_dim, G = p.group_size();
  const RowIndex q_row{N, H};
  const GridStrides grid(p);
  const InverseNeighbors inverse(p);
  const T scale = static_cast<T>(p.scale);
  at::parallel_for(0, p.batch * N * Hkv, grain_for(p, G), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t hk = row % Hkv, t = (row / Hkv) % N, b = row / (Hkv * N);
      int64_t c[kMaxRank];
      token_coords(p, t, c);
      const T* kr = k + row * D;
      const T* vr = v + row * D;
      T* dkr = dk + row * D;
      T* dvr = dv + row * D;
      std::fill(dkr, dkr + D, T(0));
      std::fill(dvr, dvr + D, T(0));
      for (int64_t h = hk * G; h < (hk + 1) * G; ++h) {
        inverse.for_each_query(grid, c, [&](int64_t query) {
          const int64_t qi = q_row(b, query, h);
          const T prob = std::exp(dot(q + qi * D, kr, D) * scale - lse[qi]);
          axpy(prob, dout + qi * D, dvr, D);
          const T ds = prob * (dot(dout + qi * D, vr, D) - delta[qi]);
          axpy(ds, q + qi * D, dkr, D);
        });
      }
      for (int64_t d = 0; d < D; ++d) dkr[d] *= scale;
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> na_forward(const NaProblem& problem, const at::Tensor& q,
                                              const at::Tensor& k, const at::Tensor& v) {
  const at::ScalarType type = compute_type(q);
  const at::Tensor qc = as_compute(q, type), kc = as_compute(k, type), vc = as_compute(v, type);
  at::Tensor out = at::empty(q.sizes(), qc.options());
  at::Tensor lse = at::empty(q.sizes().slice(0, problem.rank + 2), qc.options());
  AT_DISPATCH_FLOATING_TYPES(type, "effattn_na_forward_cpu", [&] {
    forward_kernel<scalar_t>(problem, qc.const_data_ptr<scalar_t>(), kc.const_data_ptr<scalar_t>(),
                             vc.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                             lse.mutable_data_ptr<scalar_t>());
  });
  return {out.to(q.scalar_type()), lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> na_backward(
    const NaProblem& problem, const at::Tensor& grad_out, const std::optional<at::Tensor>& grad_lse,
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse) {
  const at::ScalarType type = compute_type(q);
  const at::Tensor qc = as_compute(q, type), kc = as_compute(k, type), vc = as_compute(v, type);
  const at::Tensor doc = as_compute(grad_out, type);
  const at::Tensor lsec = as_compute(lse, type);
  // delta_i = dO_i · O_i − dLSE_i: the row term of dS = P ∘ (dP − delta).
  at::Tensor delta = (doc * as_compute(out, type)).sum(-1);
  if (grad_lse.has_value()) delta = delta - grad_lse->to(type);
  delta = delta.contiguous();
  at::Tensor dq = at::empty(q.sizes(), qc.options());
  at::Tensor dk = at::empty(k.sizes(), qc.options());
  at::Tensor dv = at::empty(v.sizes(), qc.options());
  AT_DISPATCH_FLOATING_TYPES(type, "effattn_na_backward_cpu", [&] {
    grad_q_kernel<scalar_t>(problem, qc.const_data_ptr<scalar_t>(), kc.const_data_ptr<scalar_t>(),
                            vc.const_data_ptr<scalar_t>(), doc.const_data_ptr<scalar_t>(),
                            lsec.const_data_ptr<scalar_t>(), delta.const_data_ptr<scalar_t>(),
                            dq.mutable_data_ptr<scalar_t>());
    grad_kv_kernel<scalar_t>(problem, qc.const_data_ptr<scalar_t>(), kc.const_data_ptr<scalar_t>(),
                             vc.const_data_ptr<scalar_t>(), doc.const_data_ptr<scalar_t>(),
                             lsec.const_data_ptr<scalar_t>(), delta.const_data_ptr<scalar_t>(),
                             dk.mutable_data_ptr<scalar_t>(), dv.mutable_data_ptr<scalar_t>());
  });
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type())};
}

}  // namespace effattn::cpu
