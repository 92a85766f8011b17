// Host side of the CUDA block-sparse launcher API (include/effattn/block_sparse_cuda.h):
// validation, workspace size, dtype / head-dim dispatch. Torch-free.
#include <cstdint>

#include "effattn/block_sparse_cuda.h"
#include "effattn/cuda/bs_launch.cuh"

namespace effattn {
namespace cuda {

EFFATTN_BS_DECLARE(__half, 32)
EFFATTN_BS_DECLARE(__half, 64)
EFFATTN_BS_DECLARE(__half, 128)
EFFATTN_BS_DECLARE(__nv_bfloat16, 32)
EFFATTN_BS_DECLARE(__nv_bfloat16, 64)
EFFATTN_BS_DECLARE(__nv_bfloat16, 128)

namespace {

bool aligned(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) % a) == 0; }

bool strides_multiple(const TensorStrides& s, int64_t m) {
  return s.batch % m == 0 && s.head % m == 0 && s.token[0] % m == 0;
}

}  // namespace

const char* block_sparse_cuda_unsupported_reason(const BlockSparseParams& p, bool backward) {
  if (p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16)
    return "dtype must be float16 or bfloat16";
  if (p.head_dim != 32 && p.head_dim != 64 && p.head_dim != 128)
    return "head_dim must be 32, 64 or 128 on CUDA";
  if ((p.block_q != 64 && p.block_q != 128) || (p.block_k != 64 && p.block_k != 128))
    return "block_q and block_k must be 64 or 128";
  const bool varlen = p.cu_seqlens_q != nullptr;
  if (varlen != (p.cu_seqlens_k != nullptr)) return "cu_seqlens_q and cu_seqlens_k go together";
  if (varlen && (p.batch != 1 || p.num_seqs < 1 || p.max_q_len < 0 || p.max_k_len < 0 ||
                 p.max_q_len > p.q_tokens || p.max_k_len > p.k_tokens))
    return "varlen needs batch 1, num_seqs >= 1 and max lengths within Nq / Nk";
  const int64_t grid_batch = varlen ? p.num_seqs : p.batch;
  if (grid_batch < 1 || grid_batch > 65535) return "batch (or num_seqs) must be in [1, 65535]";
  if (p.heads < 1 || p.heads > 65535) return "heads must be in [1, 65535]";
  if (p.kv_heads < 1 || p.heads % p.kv_heads != 0) return "heads must be a multiple of kv_heads";
  const int64_t lim = (int64_t(1) << 31) - 256;
  if (p.q_tokens < 0 || p.k_tokens < 0 || p.q_tokens >= lim || p.k_tokens >= lim)
    return "Nq and Nk must be below 2^31 - 256";
  // kv_indices may be null when max_blocks == 0 (then every kv_num_blocks entry is 0).
  if (p.kv_num_blocks == nullptr) return "kv_num_blocks must be non-null";
  if (p.q == nullptr || p.k == nullptr || p.v == nullptr || p.o == nullptr)
    return "q, k, v, o must be non-null";
  if (!aligned(p.q, 16) || !aligned(p.k, 16) || !aligned(p.v, 16))
    return "q, k, v must be 16-byte aligned";
  if (!strides_multiple(p.q_strides, 8) || !strides_multiple(p.k_strides, 8) ||
      !strides_multiple(p.v_strides, 8))
    return "q, k, v batch/token/head strides must be multiples of 8 elements";
  if (!aligned(p.o, 4) || !strides_multiple(p.o_strides, 2))
    return "o must be 4-byte aligned with even strides";
  if (backward) {
    if (p.q_num_blocks == nullptr || p.q_indices == nullptr)
      return "backward needs the transposed map (q_num_blocks, q_indices)";
    if (p.lse == nullptr || p.dout == nullptr || p.dq == nullptr || p.dk == nullptr ||
        p.dv == nullptr)
      return "backward needs lse, dout, dq, dk, dv";
    if (!aligned(p.dout, 16) || !strides_multiple(p.do_strides, 8))
      return "dout must be 16-byte aligned with strides multiple of 8 elements";
    if (!aligned(p.dq, 4) || !aligned(p.dk, 4) || !aligned(p.dv, 4) ||
        !strides_multiple(p.dq_strides, 2) || !strides_multiple(p.dk_strides, 2) ||
        !strides_multiple(p.dv_strides, 2))
      return "dq, dk, dv must be 4-byte aligned with even strides";
    if (p.workspace == nullptr || !aligned(p.workspace, 256) ||
        p.workspace_bytes < block_sparse_backward_workspace_bytes(p))
      return "backward workspace missing, misaligned or smaller than "
             "block_sparse_backward_workspace_bytes";
  }
  return nullptr;
}

size_t block_sparse_backward_workspace_bytes(const BlockSparseParams& p) {
  // + the fused SM90 backward's fp32 dQ accumulator (bs_launch.cuh: layouts).
  if (sm90_bwd_fused_wanted(p.head_dim)) return bs_dq_workspace_end(p) + 256;
  size_t bytes = bs_align256(sizeof(float) * static_cast<size_t>(p.batch * p.q_tokens * p.heads));
  const int64_t group = p.kv_heads > 0 ? p.heads / p.kv_heads : 1;
  if (p.per_head_maps && group > 1) {
    const size_t part = bs_align256(2 * static_cast<size_t>(p.batch * p.k_tokens * p.kv_heads *
                                                            p.head_dim * group));
    bytes += 2 * part;
  }
  return bytes + 256;
}

cudaError_t block_sparse_forward(const BlockSparseParams& p, cudaStream_t stream) {
  if (block_sparse_cuda_unsupported_reason(p, false) != nullptr) return cudaErrorInvalidValue;
  const bool f16 = p.dtype == DType::kFloat16;
  switch (p.head_dim) {
    case 32: return f16 ? launch_bs_forward<__half, 32>(p, stream) : launch_bs_forward<__nv_bfloat16, 32>(p, stream);
    case 64: return f16 ? launch_bs_forward<__half, 64>(p, stream) : launch_bs_forward<__nv_bfloat16, 64>(p, stream);
    case 128: return f16 ? launch_bs_forward<__half, 128>(p, stream) : launch_bs_forward<__nv_bfloat16, 128>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t block_sparse_backward(const BlockSparseParams& p, cudaStream_t stream) {
  if (block_sparse_cuda_unsupported_reason(p, true) != nullptr) return cudaErrorInvalidValue;
  const bool f16 = p.dtype == DType::kFloat16;
  switch (p.head_dim) {
    case 32: return f16 ? launch_bs_backward<__half, 32>(p, stream) : launch_bs_backward<__nv_bfloat16, 32>(p, stream);
    case 64: return f16 ? launch_bs_backward<__half, 64>(p, stream) : launch_bs_backward<__nv_bfloat16, 64>(p, stream);
    case 128: return f16 ? launch_bs_backward<__half, 128>(p, stream) : launch_bs_backward<__nv_bfloat16, 128>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace cuda
}  // namespace effattn
