// Host side of the CUDA NA launcher API (include/effattn/na_cuda.h): validation, tile
// shape selection, workspace size, dtype / head-dim dispatch. Torch-free.
#include <cstdint>
#include <limits>

#include "effattn/cuda/na_launch.cuh"
#include "effattn/na_cuda.h"
#include "effattn/window.h"

namespace effattn {
namespace cuda {

EFFATTN_NA_DECLARE(__half, 32)
EFFATTN_NA_DECLARE(__half, 64)
EFFATTN_NA_DECLARE(__half, 128)
EFFATTN_NA_DECLARE(__nv_bfloat16, 32)
EFFATTN_NA_DECLARE(__nv_bfloat16, 64)
EFFATTN_NA_DECLARE(__nv_bfloat16, 128)

namespace {

bool aligned(const void* p, uintptr_t a) { return (reinterpret_cast<uintptr_t>(p) % a) == 0; }

bool strides_multiple(const TensorStrides& s, int rank, int64_t m) {
  if (s.batch % m != 0 || s.head % m != 0) return false;
  for (int a = 0; a < rank; ++a)
    if (s.token[a] % m != 0) return false;
  return true;
}

// Sum over all query tiles of one axis of the number of key tiles visited on that axis.
int64_t axis_tile_work(const AxisParams& ax, int q_log, int k_log) {
  const int64_t maxlen = (ax.length + ax.dilation - 1) / ax.dilation;
  const int64_t tq = int64_t(1) << q_log;
  const int64_t n_tiles = (maxlen + tq - 1) / tq;
  int64_t total = 0;
  for (int64_t g = 0; g < ax.dilation; ++g) {
    const int64_t len = group_length(ax.length, ax.dilation, g);
    for (int64_t t = 0; t < n_tiles; ++t) {
      const int64_t base = t * tq;
      if (base >= len) break;
      const int64_t last = base + tq < len ? base + tq - 1 : len - 1;
      const AxisWindow w0 = axis_window(ax, g + base * ax.dilation);
      const AxisWindow w1 = axis_window(ax, g + last * ax.dilation);
      total += ((w1.end - 1) >> k_log) - (w0.start >> k_log) + 1;
    }
  }
  return total;
}

int ilog2(int x) {
  int l = 0;
  while ((1 << (l + 1)) <= x) ++l;
  return l;
}

}  // namespace

NaTileShape na_choose_tiles(const NaParams& p, int block_q, int block_k) {
  const int lq = ilog2(block_q), lk = ilog2(block_k);
  const int rank = p.rank;
  NaTileShape best{};
  if (rank == 1) {
    best.q_log2[0] = lq;
    best.k_log2[0] = lk;
    return best;
  }
  // cost[a][qe][ke]: work of axis a for tile exponents (qe, ke); total = product over axes.
  int64_t cost[3][8][8];
  for (int a = 0; a < rank; ++a)
    for (int qe = 0; qe <= lq; ++qe)
      for (int ke = 0; ke <= lk; ++ke) cost[a][qe][ke] = axis_tile_work(p.axes[a], qe, ke);
  // All splits of the exponents over the real axes (at most 36 x 28 for rank 3).
  int qs[64][3], ks[64][3];
  int nq = 0, nk = 0;
  for (int e0 = 0; e0 <= 7; ++e0)
    for (int e1 = 0; e1 <= 7; ++e1) {
      const int e2q = lq - e0 - e1, e2k = lk - e0 - e1;
      const int e2q_ok = rank == 3 ? e2q : (e2q == 0 ? 0 : -1);
      const int e2k_ok = rank == 3 ? e2k : (e2k == 0 ? 0 : -1);
      if (e2q_ok >= 0 && e0 + e1 <= lq && nq < 64) {
        qs[nq][0] = e0; qs[nq][1] = e1; qs[nq][2] = e2q_ok; ++nq;
      }
      if (e2k_ok >= 0 && e0 + e1 <= lk && nk < 64) {
        ks[nk][0] = e0; ks[nk][1] = e1; ks[nk][2] = e2k_ok; ++nk;
      }
    }
  double best_cost = std::numeric_limits<double>::infinity();
  for (int i = 0; i < nq; ++i)
    for (int j = 0; j < nk; ++j) {
      double c = 1.0;
      for (int a = 0; a < rank; ++a) c *= static_cast<double>(cost[a][qs[i][a]][ks[j][a]]);
      if (c < best_cost * (1.0 - 1e-9)) {
        best_cost = c;
        for (int a = 0; a < 3; ++a) {
          best.q_log2[a] = qs[i][a];
          best.k_log2[a] = ks[j][a];
        }
      }
    }
  return best;
}

const char* na_cuda_unsupported_reason(const NaParams& p, bool backward) {
  if (p.dtype != DType::kFloat16 && p.dtype != DType::kBFloat16)
    return "dtype must be float16 or bfloat16";
  if (p.head_dim != 32 && p.head_dim != 64 && p.head_dim != 128)
    return "head_dim must be 32, 64 or 128 on CUDA";
  if (p.rank < 1 || p.rank > 3) return "rank must be 1, 2 or 3";
  if (p.batch < 1 || p.batch > 65535) return "batch must be in [1, 65535]";
  if (p.heads < 1 || p.heads > 65535) return "heads must be in [1, 65535]";
  if (p.kv_heads < 1 || p.heads % p.kv_heads != 0) return "heads must be a multiple of kv_heads";
  int64_t n = 1;
  for (int a = 0; a < p.rank; ++a) {
    const AxisParams& ax = p.axes[a];
    if (ax.length < 1 || ax.length >= (int64_t(1) << 31)) return "axis length must be in [1, 2^31)";
    if (ax.dilation < 1) return "dilation must be >= 1";
    if (ax.kernel < 1 || ax.kernel * ax.dilation > ax.length)
      return "kernel must satisfy 1 <= kernel and kernel * dilation <= length";
    if (ax.stride < 1 || ax.stride > ax.kernel) return "stride must satisfy 1 <= stride <= kernel";
    n *= ax.length;
  }
  // Query tiles go into gridDim.x.
  if (n > (int64_t(1) << 31) - 1) return "too many tokens";
  if (p.q == nullptr || p.k == nullptr || p.v == nullptr || p.o == nullptr)
    return "q, k, v, o must be non-null";
  if (!aligned(p.q, 16) || !aligned(p.k, 16) || !aligned(p.v, 16))
    return "q, k, v must be 16-byte aligned";
  if (!strides_multiple(p.q_strides, p.rank, 8) || !strides_multiple(p.k_strides, p.rank, 8) ||
      !strides_multiple(p.v_strides, p.rank, 8))
    return "q, k, v batch/token/head strides must be multiples of 8 elements";
  if (!aligned(p.o, 4) || !strides_multiple(p.o_strides, p.rank, 2))
    return "o must be 4-byte aligned with even strides";
  if (backward) {
    if (p.lse == nullptr || p.dout == nullptr || p.dq == nullptr || p.dk == nullptr ||
        p.dv == nullptr)
      return "backward needs lse, dout, dq, dk, dv";
    if (!aligned(p.dout, 16) || !strides_multiple(p.do_strides, p.rank, 8))
      return "dout must be 16-byte aligned with strides multiple of 8 elements";
    if (!aligned(p.dq, 4) || !aligned(p.dk, 4) || !aligned(p.dv, 4) ||
        !strides_multiple(p.dq_strides, p.rank, 2) || !strides_multiple(p.dk_strides, p.rank, 2) ||
        !strides_multiple(p.dv_strides, p.rank, 2))
      return "dq, dk, dv must be 4-byte aligned with even strides";
    if (p.workspace == nullptr || !aligned(p.workspace, 16) ||
        p.workspace_bytes < na_backward_workspace_bytes(p))
      return "backward workspace missing, misaligned or smaller than na_backward_workspace_bytes";
  }
  return nullptr;
}

size_t na_backward_workspace_bytes(const NaParams& p) {
  // delta (B*N*H floats) and, for the fused SM90 backward, the fp32 dQ accumulator after it
  // (tile-contiguous where the 128-key kernel will use it: na_dq_workspace_end).
  if (sm90_bwd_fused_wanted(p.head_dim)) return na_dq_workspace_end(p) + 256;
  const int64_t rows = p.batch * num_tokens(p) * p.heads;
  return sizeof(float) * static_cast<size_t>(rows) + 256;
}

cudaError_t na_forward(const NaParams& p, cudaStream_t stream) {
  if (na_cuda_unsupported_reason(p, false) != nullptr) return cudaErrorInvalidValue;
  const bool f16 = p.dtype == DType::kFloat16;
  switch (p.head_dim) {
    case 32: return f16 ? launch_na_forward<__half, 32>(p, stream) : launch_na_forward<__nv_bfloat16, 32>(p, stream);
    case 64: return f16 ? launch_na_forward<__half, 64>(p, stream) : launch_na_forward<__nv_bfloat16, 64>(p, stream);
    case 128: return f16 ? launch_na_forward<__half, 128>(p, stream) : launch_na_forward<__nv_bfloat16, 128>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t na_backward(const NaParams& p, cudaStream_t stream) {
  if (na_cuda_unsupported_reason(p, true) != nullptr) return cudaErrorInvalidValue;
  const bool f16 = p.dtype == DType::kFloat16;
  switch (p.head_dim) {
    case 32: return f16 ? launch_na_backward<__half, 32>(p, stream) : launch_na_backward<__nv_bfloat16, 32>(p, stream);
    case 64: return f16 ? launch_na_backward<__half, 64>(p, stream) : launch_na_backward<__nv_bfloat16, 64>(p, stream);
    case 128: return f16 ? launch_na_backward<__half, 128>(p, stream) : launch_na_backward<__nv_bfloat16, 128>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace cuda
}  // namespace effattn
