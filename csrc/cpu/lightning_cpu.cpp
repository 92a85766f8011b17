// Exact CPU lightning attention. Each (sequence, head) pair is one task of at::parallel_for
// and walks its tokens with the recurrence (no N×N memory, no atomics):
//   forward   S_t = λ S_{t-1} + k_tᵀ v_t,  o_t = scale · q_t S_t                 (2·D·E per token)
//   backward  forward sweep   dq_t = scale · S_t do_tᵀ
//             reverse sweep   G_t = ∂L/∂S_t = λ G_{t+1} + scale · q_tᵀ do_t (G_end = dS_final),
//                             dk_t = G_t v_tᵀ, dv_t = k_t G_t, dS_0 = λ G_start
//             slope (optional) R_t = -∂S_t/∂slope = λ (R_{t-1} + S_{t-1}), R_{-1} = 0:
//                             ∂L/∂slope = -scale Σ_t q_t R_t do_tᵀ - <dS_final, R_last>
// The state rows S[d, :] are contiguous in E, so every inner loop is a unit-stride axpy/dot.
#include "lightning_cpu.h"

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "compute_type.h"
#include "vector_math.h"

namespace effattn::cpu {
namespace {

// Tokens [start, start + length) of batch row `batch` form one sequence with its own state.
struct Sequence {
  int64_t batch, start, length;
};

std::vector<Sequence> sequences(const LightningProblem& p, const std::optional<at::Tensor>& cu_seqlens) {
  std::vector<Sequence> seqs;
  seqs.reserve(p.num_states);
  if (p.varlen) {
    const at::Tensor cu = cu_seqlens->to(at::kCPU, at::kLong).contiguous();
    const int64_t* c = cu.const_data_ptr<int64_t>();
    for (int64_t i = 0; i < p.num_states; ++i) seqs.push_back({0, c[i], c[i + 1] - c[i]});
  } else {
    for (int64_t b = 0; b < p.batch; ++b) seqs.push_back({b, 0, p.tokens});
  }
  return seqs;
}

// λ_h = exp(-slope_h), evaluated in double and rounded once to the compute type.
template <typename T>
std::vector<T> decays(const at::Tensor& slope) {
  const at::Tensor s = slope.to(at::kCPU, at::kDouble).contiguous();
  const double* sp = s.const_data_ptr<double>();
  std::vector<T> lam(s.numel());
  for (int64_t h = 0; h < s.numel(); ++h) lam[h] = static_cast<T>(std::exp(-sp[h]));
  return lam;
}

// Tasks per parallel chunk: aim for ~64k multiply-adds per chunk.
int64_t grain_for(const LightningProblem& p) {
  const int64_t per_seq = std::max<int64_t>(1, p.num_states > 0 ? p.batch * p.tokens / p.num_states : 1);
  const int64_t work = std::max<int64_t>(1, per_seq * p.dim_k * p.dim_v);
  return std::max<int64_t>(1, 65536 / work);
}

template <typename T>
void forward_kernel(const LightningProblem& p, const std::vector<Sequence>& seqs, const T* q,
                    const T* k, const T* v, const std::vector<T>& lam, const T* s0, T* out,
                    T* state) {
  const int64_t N = p.tokens, H = p.heads, D = p.dim_k, E = p.dim_v, DE = D * E;
  const T scale = static_cast<T>(p.scale);
  at::parallel_for(0, p.num_states * H, grain_for(p), [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const Sequence& seq = seqs[task / H];
      const int64_t h = task % H;
      const T l = lam[h];
      T* S = state + task * DE;
      if (s0 != nullptr) {
        std::copy(s0 + task * DE, s0 + (task + 1) * DE, S);
      } else {
        std::fill(S, S + DE, T(0));
      }
      for (int64_t t = seq.start; t < seq.start + seq.length; ++t) {
        const int64_t row = (seq.batch * N + t) * H + h;
        const T* qr = q + row * D;
        const T* kr = k + row * D;
        const T* vr = v + row * E;
        T* o = out + row * E;
        std::fill(o, o + E, T(0));
        for (int64_t d = 0; d < D; ++d) {
          T* Sd = S + d * E;
          const T kd = kr[d];
          for (int64_t e = 0; e < E; ++e) Sd[e] = l * Sd[e] + kd * vr[e];
          axpy(qr[d], Sd, o, E);
        }
        for (int64_t e = 0; e < E; ++e) o[e] *= scale;
      }
    }
  });
}

template <typename T>
void backward_kernel(const LightningProblem& p, const std::vector<Sequence>& seqs, const T* q,
                     const T* k, const T* v, const T* dout, const std::vector<T>& lam,
                     const T* s0, const T* dfinal, T* dq, T* dk, T* dv, T* ds0,
                     double* dslope_part) {
  const int64_t N = p.tokens, H = p.heads, D = p.dim_k, E = p.dim_v, DE = D * E;
  const T scale = static_cast<T>(p.scale);
  const bool with_slope = dslope_part != nullptr;
  at::parallel_for(0, p.num_states * H, grain_for(p), [&](int64_t begin, int64_t end) {
    std::vector<T> S(DE), R(with_slope ? DE : 0);
    for (int64_t task = begin; task < end; ++task) {
      const Sequence& seq = seqs[task / H];
      const int64_t h = task % H;
      const T l = lam[h];
      // Forward sweep: S_t (and R_t), dq_t.
      if (s0 != nullptr) {
        std::copy(s0 + task * DE, s0 + (task + 1) * DE, S.begin());
      } else {
        std::fill(S.begin(), S.end(), T(0));
      }
      std::fill(R.begin(), R.end(), T(0));
      double slope_acc = 0;
      for (int64_t t = seq.start; t < seq.start + seq.length; ++t) {
        const int64_t row = (seq.batch * N + t) * H + h;
        const T* qr = q + row * D;
        const T* kr = k + row * D;
        const T* vr = v + row * E;
        const T* dor = dout + row * E;
        T* dqr = dq + row * D;
        T token_acc = 0;
        for (int64_t d = 0; d < D; ++d) {
          T* Sd = S.data() + d * E;
          const T kd = kr[d];
          if (with_slope) {
            T* Rd = R.data() + d * E;
            for (int64_t e = 0; e < E; ++e) Rd[e] = l * (Rd[e] + Sd[e]);
            token_acc += qr[d] * dot(Rd, dor, E);
          }
          for (int64_t e = 0; e < E; ++e) Sd[e] = l * Sd[e] + kd * vr[e];
          dqr[d] = scale * dot(Sd, dor, E);
        }
        slope_acc += static_cast<double>(token_acc);
      }
      if (with_slope) {
        double part = -static_cast<double>(scale) * slope_acc;
        if (dfinal != nullptr) {
          const T* df = dfinal + task * DE;
          double s = 0;
          for (int64_t i = 0; i < DE; ++i) s += static_cast<double>(df[i]) * static_cast<double>(R[i]);
          part -= s;
        }
        dslope_part[task] = part;
      }
      // Reverse sweep: G = ∂L/∂S_t, accumulated in place in the d_initial_state buffer.
      T* G = ds0 + task * DE;
      if (dfinal != nullptr) {
        std::copy(dfinal + task * DE, dfinal + (task + 1) * DE, G);
      } else {
        std::fill(G, G + DE, T(0));
      }
      for (int64_t t = seq.start + seq.length - 1; t >= seq.start; --t) {
        const int64_t row = (seq.batch * N + t) * H + h;
        const T* qr = q + row * D;
        const T* kr = k + row * D;
        const T* vr = v + row * E;
        const T* dor = dout + row * E;
        T* dkr = dk + row * D;
        T* dvr = dv + row * E;
        std::fill(dvr, dvr + E, T(0));
        for (int64_t d = 0; d < D; ++d) {
          T* Gd = G + d * E;
          axpy(scale * qr[d], dor, Gd, E);
          dkr[d] = dot(Gd, vr, E);
          axpy(kr[d], Gd, dvr, E);
          for (int64_t e = 0; e < E; ++e) Gd[e] *= l;
        }
      }
    }
  });
}

template <typename T>
void decode_kernel(const LightningProblem& p, const T* q, const T* k, const T* v,
                   const std::vector<T>& lam, T* state, T* out) {
  const int64_t H = p.heads, D = p.dim_k, E = p.dim_v, DE = D * E;
  const T scale = static_cast<T>(p.scale);
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, DE));
  at::parallel_for(0, p.batch * H, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const T l = lam[task % H];
      const T* qr = q + task * D;
      const T* kr = k + task * D;
      const T* vr = v + task * E;
      T* o = out + task * E;
      T* S = state + task * DE;
      std::fill(o, o + E, T(0));
      for (int64_t d = 0; d < D; ++d) {
        T* Sd = S + d * E;
        const T kd = kr[d];
        for (int64_t e = 0; e < E; ++e) Sd[e] = l * Sd[e] + kd * vr[e];
        axpy(qr[d], Sd, o, E);
      }
      for (int64_t e = 0; e < E; ++e) o[e] *= scale;
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> lightning_forward(const LightningProblem& problem,
                                                     const at::Tensor& q, const at::Tensor& k,
                                                     const at::Tensor& v, const at::Tensor& slope,
                                                     const std::optional<at::Tensor>& initial_state,
                                                     const std::optional<at::Tensor>& cu_seqlens) {
  const at::ScalarType type = compute_type(q);
  const at::Tensor qc = as_compute(q, type), kc = as_compute(k, type), vc = as_compute(v, type);
  at::Tensor s0;
  if (initial_state.has_value()) s0 = as_compute(*initial_state, type);
  at::Tensor out = at::empty(v.sizes(), qc.options());
  at::Tensor state = at::empty({problem.num_states, problem.heads, problem.dim_k, problem.dim_v},
                               qc.options());
  const std::vector<Sequence> seqs = sequences(problem, cu_seqlens);
  AT_DISPATCH_FLOATING_TYPES(type, "effattn_lightning_forward_cpu", [&] {
    forward_kernel<scalar_t>(problem, seqs, qc.const_data_ptr<scalar_t>(),
                             kc.const_data_ptr<scalar_t>(), vc.const_data_ptr<scalar_t>(),
                             decays<scalar_t>(slope),
                             s0.defined() ? s0.const_data_ptr<scalar_t>() : nullptr,
                             out.mutable_data_ptr<scalar_t>(), state.mutable_data_ptr<scalar_t>());
  });
  return {out.to(q.scalar_type()), state};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lightning_backward(
    const LightningProblem& problem, const at::Tensor& grad_out,
    const std::optional<at::Tensor>& grad_final_state, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& slope, const std::optional<at::Tensor>& initial_state,
    const std::optional<at::Tensor>& cu_seqlens, bool compute_slope_grad) {
  const at::ScalarType type = compute_type(q);
  const at::Tensor qc = as_compute(q, type), kc = as_compute(k, type), vc = as_compute(v, type);
  const at::Tensor doc = as_compute(grad_out, type);
  at::Tensor s0, dfinal;
  if (initial_state.has_value()) s0 = as_compute(*initial_state, type);
  if (grad_final_state.has_value()) dfinal = as_compute(*grad_final_state, type);
  at::Tensor dq = at::empty(q.sizes(), qc.options());
  at::Tensor dk = at::empty(k.sizes(), qc.options());
  at::Tensor dv = at::empty(v.sizes(), qc.options());
  at::Tensor ds0 = at::empty({problem.num_states, problem.heads, problem.dim_k, problem.dim_v},
                             qc.options());
  at::Tensor dslope_part;
  if (compute_slope_grad) {
    dslope_part = at::empty({problem.num_states, problem.heads}, qc.options().dtype(at::kDouble));
  }
  const std::vector<Sequence> seqs = sequences(problem, cu_seqlens);
  AT_DISPATCH_FLOATING_TYPES(type, "effattn_lightning_backward_cpu", [&] {
    backward_kernel<scalar_t>(
        problem, seqs, qc.const_data_ptr<scalar_t>(), kc.const_data_ptr<scalar_t>(),
        vc.const_data_ptr<scalar_t>(), doc.const_data_ptr<scalar_t>(), decays<scalar_t>(slope),
        s0.defined() ? s0.const_data_ptr<scalar_t>() : nullptr,
        dfinal.defined() ? dfinal.const_data_ptr<scalar_t>() : nullptr,
        dq.mutable_data_ptr<scalar_t>(), dk.mutable_data_ptr<scalar_t>(),
        dv.mutable_data_ptr<scalar_t>(), ds0.mutable_data_ptr<scalar_t>(),
        compute_slope_grad ? dslope_part.mutable_data_ptr<double>() : nullptr);
  });
  at::Tensor dslope;
  if (compute_slope_grad) dslope = dslope_part.sum(0).to(slope.scalar_type());
  return {dq.to(q.scalar_type()), dk.to(k.scalar_type()), dv.to(v.scalar_type()), ds0, dslope};
}

at::Tensor lightning_decode(const LightningProblem& problem, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v, const at::Tensor& slope,
                            at::Tensor& state) {
  const at::ScalarType type = compute_type(q);
  const at::Tensor qc = as_compute(q, type), kc = as_compute(k, type), vc = as_compute(v, type);
  // The state has the compute dtype (checked); work on it directly when it is contiguous.
  at::Tensor work = state.is_contiguous() ? state : state.contiguous();
  at::Tensor out = at::empty(v.sizes(), qc.options());
  AT_DISPATCH_FLOATING_TYPES(type, "effattn_lightning_decode_cpu", [&] {
    decode_kernel<scalar_t>(problem, qc.const_data_ptr<scalar_t>(), kc.const_data_ptr<scalar_t>(),
                            vc.const_data_ptr<scalar_t>(), decays<scalar_t>(slope),
                            work.mutable_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>());
  });
  if (!work.is_same(state)) state.copy_(work);
  return out.to(q.scalar_type());
}

}  // namespace effattn::cpu
