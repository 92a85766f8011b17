// Host side of the CUDA estimation launcher (include/effattn/estimate_cuda.h): validation,
// workspace layout, and the four passes on one stream. Torch-free.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "estimate_common.cuh"

namespace effattn {
namespace cuda {
namespace est {
namespace {

size_t align256(size_t n) { return (n + 255) & ~size_t(255); }

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

int clamp_to(int64_t v, int64_t hi) { return static_cast<int>(v < hi ? v : hi); }

// Pass 3: a Hopper int8 wgmma kernel (estimate_int8_sm90.cu) where it applies (head dim 128,
// sm_90a), else the mma.sync kernel. H200, N 65536, pass 3: mma.sync 69 ms, v2 14.7, v2 unrolled
// by 2 13.8 (RESULTS fifth session run 2; same maps). EFFATTN_ESTIMATE_IMPL: unset or wgmma2u =
// v2 with its chunk loop unrolled by 2, wgmma = v2, mma = the mma.sync kernel. Read at every
// call, so one process can compare them.
cudaError_t run_estimate_pass(const EstArgs& a, cudaStream_t stream) {
  const char* impl = std::getenv("EFFATTN_ESTIMATE_IMPL");
  const bool force_mma = impl != nullptr && std::strcmp(impl, "mma") == 0;
  Sm90Estimate v = Sm90Estimate::kV2Unroll2;
  if (impl != nullptr && std::strcmp(impl, "wgmma") == 0) v = Sm90Estimate::kV2;
  if (!force_mma && estimate_sm90_usable(a, v)) return launch_estimate_sm90(a, stream, v);
  return launch_estimate(a, stream);
}

}  // namespace

size_t layout_workspace(EstArgs& a, void* base) {
  const size_t rowinfo = align256(sizeof(float4) * static_cast<size_t>(a.batch) * a.heads * a.geo.n);
  const size_t aux = align256(sizeof(float) * static_cast<size_t>(a.batch) * a.kv_heads * a.chunks *
                              a.rec_floats);
  const size_t bits = align256(sizeof(uint32_t) * static_cast<size_t>(a.batch) * a.heads * a.geo.mq *
                               a.words);
  if (base != nullptr) {
    unsigned char* p = static_cast<unsigned char*>(base);
    a.rowinfo = reinterpret_cast<float4*>(p);
    a.aux = reinterpret_cast<float*>(p + rowinfo);
    a.bits = reinterpret_cast<uint32_t*>(p + rowinfo + aux);
  }
  return rowinfo + aux + bits;
}

// Everything but the workspace pointers.
EstArgs make_args(const EstimateCudaParams& p) {
  EstArgs a;
  const int n = static_cast<int>(p.tokens);
  a.geo.n = n;
  a.geo.block_q = static_cast<int>(p.block_q);
  a.geo.block_k = static_cast<int>(p.block_k);
  a.geo.sink = clamp_to(p.sink_tokens, n);  // c < sink and |i - c| < local mean the same
  a.geo.local = clamp_to(p.local_tokens, n);
  a.geo.causal = p.is_causal;
  a.geo.mq = (n + a.geo.block_q - 1) / a.geo.block_q;
  a.geo.mk = (n + a.geo.block_k - 1) / a.geo.block_k;
  a.batch = static_cast<int>(p.batch);
  a.heads = static_cast<int>(p.heads);
  a.kv_heads = static_cast<int>(p.kv_heads);
  a.group = a.heads / a.kv_heads;
  a.head_dim = static_cast<int>(p.head_dim);
  a.quant_block = clamp_to(p.quant_block, n);  // c / quant_block is 0 either way beyond N
  a.scale_rows = static_cast<int>((p.tokens + p.quant_block - 1) / p.quant_block);
  a.scale = p.scale;
  a.q = p.q;
  a.k = p.k;
  a.q8 = p.q_quant;
  a.k8 = p.k_quant;
  a.q_scale = p.q_scale;
  a.k_scale = p.k_scale;
  a.q_mean = p.q_mean;
  a.k_mean = p.k_mean;
  a.log_threshold = p.log_threshold;
  a.chunks = (n + kChunkKeys - 1) / kChunkKeys;
  a.words = (a.geo.mk + 31) / 32;
  a.rec_floats = kRecFloats * (1 + a.group);
  a.num_blocks = p.kv_num_blocks;
  a.indices = p.kv_indices;
  return a;
}

}  // namespace est

const char* estimate_cuda_unsupported_reason(const EstimateCudaParams& p) {
  if (p.dtype != EstimateDType::kFloat16 && p.dtype != EstimateDType::kBFloat16)
    return "q and k must be float16 or bfloat16";
  if (p.head_dim != 32 && p.head_dim != 64 && p.head_dim != 128)
    return "head_dim must be 32, 64 or 128 on CUDA";
  if ((p.block_q != 64 && p.block_q != 128) || (p.block_k != 64 && p.block_k != 128))
    return "block_q and block_k must be 64 or 128";
  if (p.batch < 1 || p.batch > 65535) return "batch must be in [1, 65535]";
  if (p.heads < 1 || p.heads > 65535) return "heads must be in [1, 65535]";
  if (p.kv_heads < 1 || p.heads % p.kv_heads != 0) return "heads must be a multiple of kv_heads";
  if (p.tokens < 1 || p.tokens > (int64_t(1) << 30)) return "tokens must be in [1, 2^30]";
  if (p.quant_block < 1 || p.sink_tokens < 0 || p.local_tokens < 0)
    return "quant_block must be >= 1, sink_tokens and local_tokens >= 0";
  const int64_t mq = (p.tokens + p.block_q - 1) / p.block_q;
  if (p.batch * p.heads * mq / 8 > 0x7fffffff) return "batch * heads * query blocks is too large";
  if (p.q == nullptr || p.k == nullptr || p.q_quant == nullptr || p.k_quant == nullptr ||
      p.q_scale == nullptr || p.k_scale == nullptr || p.q_mean == nullptr || p.k_mean == nullptr ||
      p.log_threshold == nullptr || p.kv_num_blocks == nullptr || p.kv_indices == nullptr)
    return "every input and output pointer must be non-null";
  if (!est::aligned16(p.q) || !est::aligned16(p.k) || !est::aligned16(p.q_quant) ||
      !est::aligned16(p.k_quant))
    return "q, k, q_quant and k_quant must be 16-byte aligned";
  if (p.workspace == nullptr || reinterpret_cast<uintptr_t>(p.workspace) % 256 != 0 ||
      p.workspace_bytes < estimate_workspace_bytes(p))
    return "workspace missing, misaligned or smaller than estimate_workspace_bytes";
  return nullptr;
}

size_t estimate_workspace_bytes(const EstimateCudaParams& p) {
  if (p.tokens < 1 || p.kv_heads < 1 || p.block_q < 1 || p.block_k < 1) return 256;
  est::EstArgs a = est::make_args(p);
  return est::layout_workspace(a, nullptr);
}

cudaError_t estimate_block_mask(const EstimateCudaParams& p, cudaStream_t stream) {
  if (estimate_cuda_unsupported_reason(p) != nullptr) return cudaErrorInvalidValue;
  est::EstArgs a = est::make_args(p);
  est::layout_workspace(a, p.workspace);
  const bool f16 = p.dtype == EstimateDType::kFloat16;
  const size_t bit_bytes = sizeof(uint32_t) * static_cast<size_t>(a.batch) * a.heads * a.geo.mq * a.words;
  cudaError_t err = cudaMemsetAsync(a.bits, 0, bit_bytes, stream);
  if (err == cudaSuccess) err = est::launch_key_prep(a, f16, stream);
  if (err == cudaSuccess) err = est::launch_stats(a, f16, stream);
  if (err == cudaSuccess) err = est::run_estimate_pass(a, stream);
  if (err == cudaSuccess) err = est::launch_compact(a, stream);
  // A failed cudaMemsetAsync / cudaFuncSetAttribute also stays the runtime's last error; the
  // caller reports `err`, so clear it rather than let the next unrelated launch check see it.
  if (err != cudaSuccess) (void)cudaGetLastError();
  return err;
}

}  // namespace cuda
}  // namespace effattn
