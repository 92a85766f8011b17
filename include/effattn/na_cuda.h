// Torch-free launcher API of the CUDA neighborhood-attention core (DESIGN.md §1, §3, §4).
//
// Layout: heads-last, q/o/do/dq `[B, X, (Y, (Z)), H, D]`, k/v/dk/dv `[B, X, ..., H_kv, D]`,
// lse/dlse fp32 `[B, X, ..., H]`. Every stride is an int64 count of *elements*; the last
// (D) axis must be contiguous. GQA/MQA: query head h uses kv head h / (H / H_kv).
//
// Requirements checked by na_cuda_unsupported_reason():
//   dtype fp16/bf16, D in {32, 64, 128}, rank 1..3, H % H_kv == 0, per axis
//   1 <= kernel, kernel * dilation <= length, 1 <= stride <= kernel, length < 2^31,
//   q/k/v/do base pointers 16-byte aligned and their batch/token/head strides multiples of 8
//   elements (cp.async 16-byte loads), o/dq/dk/dv pointers 4-byte aligned and strides even.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "effattn/window.h"

namespace effattn {
namespace cuda {

enum class DType : int { kFloat16 = 0, kBFloat16 = 1 };

// Element strides of a heads-last tensor. token[a] for a >= rank is ignored.
struct TensorStrides {
  int64_t batch = 0;
  int64_t token[3] = {0, 0, 0};
  int64_t head = 0;
};

struct NaParams {
  DType dtype = DType::kBFloat16;
  int rank = 1;             // number of token axes, 1..3
  int64_t batch = 1;        // B
  AxisParams axes[3] = {};  // axes[0..rank-1]: length, kernel, dilation, stride, causal
  int64_t heads = 1;        // H
  int64_t kv_heads = 1;     // H_kv, H % H_kv == 0
  int64_t head_dim = 64;    // D
  float scale = 0.125f;     // softmax scale (usually 1/sqrt(D))

  // Forward inputs / outputs.
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  float* lse = nullptr;  // forward: optional (nullptr = not written); backward: required input
  TensorStrides q_strides, k_strides, v_strides, o_strides;
  TensorStrides lse_strides;  // head = stride of H; no D axis

  // Backward (o, lse, q, k, v above are inputs).
  const void* dout = nullptr;      // dO, same shape as o
  const float* dlse = nullptr;     // optional gradient w.r.t. lse (nullptr = zero)
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  TensorStrides do_strides, dlse_strides, dq_strides, dk_strides, dv_strides;

  // fp32 scratch for the backward, at least na_backward_workspace_bytes(*this) bytes,
  // 16-byte aligned. Contents on entry are irrelevant (the launcher clears what it needs).
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
};

// nullptr when the combination is compiled and valid, else a static message naming it.
const char* na_cuda_unsupported_reason(const NaParams& p, bool backward);
inline bool na_cuda_supports(const NaParams& p, bool backward) {
  return na_cuda_unsupported_reason(p, backward) == nullptr;
}

// Bytes of fp32 workspace na_backward needs: delta, B*N*H floats (+ padding), and on Hopper
// with head dim 64 / 128 the fused backward's fp32 dQ accumulator, B*N*H*D floats (unless
// EFFATTN_SM90_BWD=split), or B*H*(64-row query tiles)*64*D floats where the 128-key kernel
// uses its tile-contiguous layout (head dim 128; a little more than B*N*H*D when lengths are
// not multiples of the tiles). Depends on the current device and the EFFATTN_SM90_* settings:
// query it on the launch device.
size_t na_backward_workspace_bytes(const NaParams& p);

// Forward: writes o (and lse when non-null). Returns cudaErrorInvalidValue when unsupported.
cudaError_t na_forward(const NaParams& p, cudaStream_t stream);

// Backward: reads q, k, v, o, lse, dout (, dlse); writes dq, dk, dv.
cudaError_t na_backward(const NaParams& p, cudaStream_t stream);

// Query/key tile shapes (log2 extents per axis) the launcher picks for a pass; exposed for
// tests and benchmarks. block_q / block_k are the tile sizes in tokens (powers of two).
struct NaTileShape {
  int q_log2[3];
  int k_log2[3];
};
NaTileShape na_choose_tiles(const NaParams& p, int block_q, int block_k);

}  // namespace cuda
}  // namespace effattn
