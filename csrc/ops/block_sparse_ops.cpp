// Torch binding of the block-sparse attention ops: checks, then the device's kernel.
// Fake kernels and the autograd formula of `block_sparse_attn_forward` are registered from
// python/effattn/block_sparse.py; `block_sparse_attn` is composite over the forward op.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "../cpu/block_sparse_cpu.h"
#include "block_sparse_checks.h"

namespace effattn {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

std::tuple<Tensor, Tensor> block_sparse_forward_cpu(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& kv_num_blocks,
    const Tensor& kv_indices, int64_t block_q, int64_t block_k, bool is_causal,
    std::optional<double> scale, const OptTensor& cu_seqlens_q, const OptTensor& cu_seqlens_k) {
  const BlockSparseProblem p = check_block_sparse_inputs(
      q, k, v, kv_num_blocks, kv_indices, block_q, block_k, is_causal, scale, cu_seqlens_q,
      cu_seqlens_k);
  return cpu::block_sparse_forward(p, q, k, v, kv_num_blocks, kv_indices);
}

std::tuple<Tensor, Tensor, Tensor> block_sparse_backward_cpu(
    const Tensor& grad_out, const OptTensor& grad_lse, const Tensor& q, const Tensor& k,
    const Tensor& v, const Tensor& out, const Tensor& lse, const Tensor& kv_num_blocks,
    const Tensor& kv_indices, int64_t block_q, int64_t block_k, bool is_causal,
    std::optional<double> scale, const OptTensor& cu_seqlens_q, const OptTensor& cu_seqlens_k) {
  const BlockSparseProblem p = check_block_sparse_inputs(
      q, k, v, kv_num_blocks, kv_indices, block_q, block_k, is_causal, scale, cu_seqlens_q,
      cu_seqlens_k);
  check_block_sparse_backward_inputs(p, q, grad_out, grad_lse, out, lse);
  return cpu::block_sparse_backward(p, grad_out, grad_lse, q, k, v, out, lse, kv_num_blocks,
                                    kv_indices);
}

// `block_sparse_attn` is the forward op without the LSE. It is composite: autograd and fake
// tensors go through `block_sparse_attn_forward`, whose formulas are registered from Python.
Tensor block_sparse_composite(const Tensor& q, const Tensor& k, const Tensor& v,
                              const Tensor& kv_num_blocks, const Tensor& kv_indices,
                              int64_t block_q, int64_t block_k, bool is_causal,
                              std::optional<double> scale, const OptTensor& cu_seqlens_q,
                              const OptTensor& cu_seqlens_k) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("effattn::block_sparse_attn_forward", "")
                       .typed<std::tuple<Tensor, Tensor>(
                           const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                           const Tensor&, int64_t, int64_t, bool, std::optional<double>,
                           const OptTensor&, const OptTensor&)>();
  return std::get<0>(op.call(q, k, v, kv_num_blocks, kv_indices, block_q, block_k, is_causal,
                             scale, cu_seqlens_q, cu_seqlens_k));
}

}  // namespace

TORCH_LIBRARY_IMPL(effattn, CPU, m) {
  m.impl("block_sparse_attn_forward", &block_sparse_forward_cpu);
  m.impl("block_sparse_attn_backward", &block_sparse_backward_cpu);
}

TORCH_LIBRARY_IMPL(effattn, CompositeImplicitAutograd, m) {
  m.impl("block_sparse_attn", &block_sparse_composite);
}

}  // namespace effattn
