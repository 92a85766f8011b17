// Torch binding of CUDA block-sparse attention (include/effattn/block_sparse_cuda.h): the
// shared checks (block_sparse_checks.h), the transposed block map for the backward (built on
// the GPU with torch ops, once per map: block_map_cache.h), allocation, the stream and the launch. Built only with
// EFFATTN_WITH_CUDA.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "../block_map_cache.h"
#include "../block_sparse_checks.h"
#include "effattn/block_sparse_cuda.h"

namespace effattn {
namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// Contiguous D axis, 16-byte aligned base and strides multiple of 8 elements (cp.async);
// anything else is copied once.
Tensor kernel_ready(const Tensor& t) {
  const bool ok = t.stride(-1) == 1 && reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0 &&
                  [&] {
                    for (int64_t d = 0; d + 1 < t.dim(); ++d)
                      if (t.stride(d) % 8 != 0 && t.size(d) > 1) return false;
                    return true;
                  }();
  return ok ? t : t.contiguous();
}

// [B, N, H(, D)] element strides; size-1 axes get stride 0 (never multiplied by a nonzero
// index, and keeps the alignment checks meaningful).
cuda::TensorStrides strides_of(const Tensor& t) {
  cuda::TensorStrides s;
  s.batch = t.size(0) == 1 ? 0 : t.stride(0);
  s.token[0] = t.size(1) == 1 ? 0 : t.stride(1);
  s.head = t.size(2) == 1 ? 0 : t.stride(2);
  return s;
}

// Strides of a contiguous map's (batch, head, block) axes, 0 on broadcast (size-1) axes.
cuda::MapStrides map_strides(const Tensor& t) {
  cuda::MapStrides s;
  s.batch = t.size(0) == 1 ? 0 : t.stride(0);
  s.head = t.size(1) == 1 ? 0 : t.stride(1);
  s.block = t.stride(2);
  return s;
}

void check_dtype(const Tensor& q) {
  TORCH_CHECK(q.scalar_type() == at::kHalf || q.scalar_type() == at::kBFloat16,
              "effattn CUDA block-sparse attention supports float16 and bfloat16, got ",
              q.scalar_type(), " (use the CPU op or cast)");
}

void check_supported(const cuda::BlockSparseParams& params, bool backward) {
  const char* reason = cuda::block_sparse_cuda_unsupported_reason(params, backward);
  TORCH_CHECK_NOT_IMPLEMENTED(reason == nullptr, "effattn CUDA block-sparse attention: ", reason);
}

void check_launch(cudaError_t status, const char* what) {
  TORCH_CHECK(status == cudaSuccess, "effattn ", what, " launch failed: ",
              cudaGetErrorString(status));
}

// Everything but the tensor pointers: sizes, blocks, scale, sequences and the forward map.
// `keep` holds device tensors that must outlive the launch.
cuda::BlockSparseParams make_params(const BlockSparseProblem& p, const Tensor& q,
                                    const Tensor& kv_num_blocks, const Tensor& kv_indices,
                                    const OptTensor& cu_seqlens_q, const OptTensor& cu_seqlens_k,
                                    std::vector<Tensor>& keep) {
  cuda::BlockSparseParams params;
  params.dtype = q.scalar_type() == at::kHalf ? cuda::DType::kFloat16 : cuda::DType::kBFloat16;
  params.batch = p.batch;
  params.q_tokens = p.q_tokens;
  params.k_tokens = p.k_tokens;
  params.heads = p.heads;
  params.kv_heads = p.kv_heads;
  params.head_dim = p.head_dim;
  params.block_q = p.block_q;
  params.block_k = p.block_k;
  params.is_causal = p.is_causal;
  params.scale = static_cast<float>(p.scale);
  if (p.varlen) {
    const Tensor cq = cu_seqlens_q->to(at::kLong).contiguous();
    const Tensor ck = cu_seqlens_k->to(at::kLong).contiguous();
    keep.push_back(cq);
    keep.push_back(ck);
    params.cu_seqlens_q = cq.data_ptr<int64_t>();
    params.cu_seqlens_k = ck.data_ptr<int64_t>();
    params.num_seqs = static_cast<int64_t>(p.seqs.size());
    for (const auto& s : p.seqs) {
      params.max_q_len = std::max(params.max_q_len, s.q_len);
      params.max_k_len = std::max(params.max_k_len, s.k_len);
    }
  }
  const Tensor nb = kv_num_blocks.contiguous();
  const Tensor ix = kv_indices.contiguous();
  keep.push_back(nb);
  keep.push_back(ix);
  params.kv_num_blocks = nb.data_ptr<int32_t>();
  params.kv_indices = ix.data_ptr<int32_t>();
  params.kv_num_blocks_strides = map_strides(nb);
  params.kv_indices_strides = map_strides(ix);
  params.max_blocks = p.max_blocks;
  params.per_head_maps = p.map_heads > 1;
  return params;
}

// Transposed map on the maps' device: q_num_blocks [Bm, Hm, Mk] (how many query blocks list
// key block n) and q_indices [Bm, Hm, Mk, Mq] (those query blocks, increasing, first).
// Dead entries (past kv_num_blocks) and, for packed sequences, entries of rows past a
// sequence's last query block (unchecked, never visited) are dropped if out of range.
std::pair<Tensor, Tensor> transpose_map(const BlockSparseProblem& p, const Tensor& kv_num_blocks,
                                        const Tensor& kv_indices) {
  const int64_t mk = p.k_blocks;
  const int64_t mq = p.map_q_blocks;
  const int64_t bm = p.map_batch, hm = p.map_heads;
  const auto long_opts = kv_indices.options().dtype(at::kLong);
  const Tensor idx = kv_indices.to(at::kLong);
  Tensor live = at::arange(p.max_blocks, long_opts).lt(kv_num_blocks.to(at::kLong).unsqueeze(-1));
  live = live.logical_and(idx.ge(0)).logical_and(idx.lt(mk));
  const Tensor target = at::where(live, idx, at::full({}, mk, long_opts));
  Tensor dense = at::zeros({bm, hm, mq, mk + 1}, kv_indices.options().dtype(at::kBool));
  if (p.max_blocks > 0) dense.scatter_(3, target, true);
  const Tensor dt = dense.narrow(3, 0, mk).transpose(2, 3);  // [Bm, Hm, Mk, Mq]
  Tensor q_num = at::sum(dt, {-1}, false, at::kInt).contiguous();
  Tensor q_idx = at::argsort(dt.logical_not().to(at::kByte), /*stable=*/true, /*dim=*/-1)
                     .to(at::kInt)
                     .contiguous();
  return {q_num, q_idx};
}

std::tuple<Tensor, Tensor> block_sparse_forward_cuda(
    const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const Tensor& kv_num_blocks,
    const Tensor& kv_indices, int64_t block_q, int64_t block_k, bool is_causal,
    std::optional<double> scale, const OptTensor& cu_seqlens_q, const OptTensor& cu_seqlens_k) {
  const BlockSparseProblem p =
      check_block_sparse_inputs(q_in, k_in, v_in, kv_num_blocks, kv_indices, block_q, block_k,
                                is_causal, scale, cu_seqlens_q, cu_seqlens_k);
  check_dtype(q_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  std::vector<Tensor> keep;
  cuda::BlockSparseParams params =
      make_params(p, q_in, kv_num_blocks, kv_indices, cu_seqlens_q, cu_seqlens_k, keep);
  const Tensor q = kernel_ready(q_in), k = kernel_ready(k_in), v = kernel_ready(v_in);
  Tensor out = at::empty(q.sizes(), q.options().memory_format(at::MemoryFormat::Contiguous));
  Tensor lse = at::empty(q.sizes().slice(0, 3), q.options().dtype(at::kFloat));
  if (q.numel() == 0) return {out, lse};
  if (k.numel() == 0) {  // no key at all: every row is empty
    out.zero_();
    lse.fill_(-std::numeric_limits<double>::infinity());
    return {out, lse};
  }
  params.q = q.data_ptr();
  params.k = k.data_ptr();
  params.v = v.data_ptr();
  params.o = out.data_ptr();
  params.lse = lse.data_ptr<float>();
  params.q_strides = strides_of(q);
  params.k_strides = strides_of(k);
  params.v_strides = strides_of(v);
  params.o_strides = strides_of(out);
  params.lse_strides = strides_of(lse);
  check_supported(params, false);
  check_launch(cuda::block_sparse_forward(params, c10::cuda::getCurrentCUDAStream()),
               "block_sparse_forward");
  return {out, lse};
}

std::tuple<Tensor, Tensor, Tensor> block_sparse_backward_cuda(
    const Tensor& grad_out_in, const OptTensor& grad_lse_in, const Tensor& q_in,
    const Tensor& k_in, const Tensor& v_in, const Tensor& out_in, const Tensor& lse_in,
    const Tensor& kv_num_blocks, const Tensor& kv_indices, int64_t block_q, int64_t block_k,
    bool is_causal, std::optional<double> scale, const OptTensor& cu_seqlens_q,
    const OptTensor& cu_seqlens_k) {
  const BlockSparseProblem p =
      check_block_sparse_inputs(q_in, k_in, v_in, kv_num_blocks, kv_indices, block_q, block_k,
                                is_causal, scale, cu_seqlens_q, cu_seqlens_k);
  check_block_sparse_backward_inputs(p, q_in, grad_out_in, grad_lse_in, out_in, lse_in);
  check_dtype(q_in);
  const c10::cuda::CUDAGuard guard(q_in.device());
  std::vector<Tensor> keep;
  cuda::BlockSparseParams params =
      make_params(p, q_in, kv_num_blocks, kv_indices, cu_seqlens_q, cu_seqlens_k, keep);
  const Tensor q = kernel_ready(q_in), k = kernel_ready(k_in), v = kernel_ready(v_in);
  const auto contiguous = q.options().memory_format(at::MemoryFormat::Contiguous);
  Tensor dq = at::empty(q.sizes(), contiguous);
  Tensor dk = at::empty(k.sizes(), contiguous);
  Tensor dv = at::empty(v.sizes(), contiguous);
  if (q.numel() == 0 || k.numel() == 0) return {dq.zero_(), dk.zero_(), dv.zero_()};
  const Tensor out = kernel_ready(out_in.to(q.scalar_type()));
  const Tensor grad_out = kernel_ready(grad_out_in.to(q.scalar_type()));
  const Tensor lse = lse_in.to(at::kFloat).contiguous();
  Tensor grad_lse;
  if (grad_lse_in.has_value()) grad_lse = grad_lse_in->to(at::kFloat).contiguous();

  // Reused on its own stream only, and never during CUDA graph capture (the graph must record
  // the transposition: a replay after a copy into the maps needs it redone).
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream();
  const bool capturing = c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
  auto [q_num, q_idx] = cached_transposed_map(block_map_key(p, kv_num_blocks, kv_indices), stream.id(), !capturing, [&] {
    return transpose_map(p, keep[keep.size() - 2], keep[keep.size() - 1]);
  });
  params.q_num_blocks = q_num.data_ptr<int32_t>();
  params.q_indices = q_idx.data_ptr<int32_t>();
  params.q_num_blocks_strides = map_strides(q_num);
  params.q_indices_strides = map_strides(q_idx);

  params.q = q.data_ptr();
  params.k = k.data_ptr();
  params.v = v.data_ptr();
  params.o = const_cast<void*>(out.data_ptr());
  params.lse = const_cast<float*>(lse.data_ptr<float>());
  params.dout = grad_out.data_ptr();
  params.dlse = grad_lse.defined() ? grad_lse.data_ptr<float>() : nullptr;
  params.dq = dq.data_ptr();
  params.dk = dk.data_ptr();
  params.dv = dv.data_ptr();
  params.q_strides = strides_of(q);
  params.k_strides = strides_of(k);
  params.v_strides = strides_of(v);
  params.o_strides = strides_of(out);
  params.lse_strides = strides_of(lse);
  params.do_strides = strides_of(grad_out);
  if (grad_lse.defined()) params.dlse_strides = strides_of(grad_lse);
  params.dq_strides = strides_of(dq);
  params.dk_strides = strides_of(dk);
  params.dv_strides = strides_of(dv);
  const size_t bytes = cuda::block_sparse_backward_workspace_bytes(params);
  Tensor workspace = at::empty({static_cast<int64_t>(bytes)}, q.options().dtype(at::kByte));
  params.workspace = workspace.data_ptr();
  params.workspace_bytes = bytes;
  check_supported(params, true);
  check_launch(cuda::block_sparse_backward(params, c10::cuda::getCurrentCUDAStream()),
               "block_sparse_backward");
  return {dq, dk, dv};
}

}  // namespace

TORCH_LIBRARY_IMPL(effattn, CUDA, m) {
  m.impl("block_sparse_attn_forward", &block_sparse_forward_cuda);
  m.impl("block_sparse_attn_backward", &block_sparse_backward_cuda);
}

}  // namespace effattn
