// Torch-free launcher API of the CUDA lightning-attention kernels (DESIGN.md §7).
//
// Layout: q, k [B, N, H, D], v, o [B, N, H, E] (heads-last; any batch/token/head strides in
// elements, the last axis contiguous), states fp32 [num_seqs, H, D, E] contiguous, slope fp32
// [H] on the device. With cu_seqlens (given as a HOST array of num_seqs + 1 values) B == 1
// and each packed sequence has its own state.
//
// Algorithm (chunks of 64 tokens, tensor cores via mma.sync m16n8k16):
//   one "pass" walks the 64-token chunks of a segment of a sequence with the state
//   S (fp32 registers) and, per chunk, writes
//     o = scale_qk [(Q K^T) . M] V + scale_state diag(lambda^{r+1}) Q S,
//     S <- lambda^n S + kv_scale (diag(lambda^{n-1-c}) K)^T V.
//   v1: a CTA of 4 warps per (segment, head, 64-column slice of S).
//   v2: a CTA of E/16 warps per (segment, head) holding all of S, transposed, so that Q S takes
//       its register fragments directly; the causal Q K^T is computed once and shared.
//   v3 (sm_90a, D = E = 128): a producer warpgroup (cp.async ring) and two consumer warpgroups,
//       each holding 64 rows of S^T as a wgmma accumulator; O^T = S^T Q^T and the state update
//       are register-A wgmmas, the causal Q K^T is split between the two groups.
//   Sequences are split into segments so that the grid fills the GPU; segment start states
//   come from a parallel local-state pass plus an fp32 scan over segments (no sequential
//   per-(batch, head) walk over the whole sequence when (batch x heads) is small).
//   Backward = three passes of the same kernel: dq (forward direction on dO, V, K with S^T),
//   dk and dv (reverse direction; state G = dL/dS).
//   Decode v1: a CTA of 256 threads per (batch, head); v2: a warp streams one (batch, head)'s
//   state with double-buffered 16-byte loads; v3: four warps share one (batch, head).
//
// Implementation choice: `impl` below (0 = the process default: env EFFATTN_LIGHTNING_IMPL=v1|v2|v3
// for the passes, EFFATTN_LIGHTNING_DECODE_IMPL=v1|v2|v3 for decode, read once; otherwise the
// built-in default of lightning_api.cu: the v3 pass (sm_90a wgmma, D = E = 128) where the device
// runs it, else v2, and decode v1; v3 falls back to v2 for D = 64 or off Hopper, v2 to v1 on a
// device that cannot give a CTA 224 KiB of shared memory). Forward, backward and lightning_workspace_bytes
// of one problem must see the same choice.
//
// Supported (lightning_cuda_unsupported_reason): fp16/bf16, D == E in {64, 128}, q/k/v/o/dout/
// dq/dk/dv base pointers 16-byte aligned with batch/token/head strides multiples of 8.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace effattn {
namespace cuda {

enum class LightningDType : int { kFloat16 = 0, kBFloat16 = 1 };

// Element strides of a [B, N, H, X] tensor (X contiguous).
struct LightningStrides {
  int64_t batch = 0;
  int64_t token = 0;
  int64_t head = 0;
};

struct LightningParams {
  LightningDType dtype = LightningDType::kBFloat16;
  int64_t batch = 1;      // B (1 with cu_seqlens)
  int64_t tokens = 0;     // N
  int64_t heads = 1;      // H
  int64_t dim_k = 64;     // D
  int64_t dim_v = 64;     // E
  int64_t num_seqs = 1;   // states: B, or len(cu_seqlens) - 1
  const int64_t* cu_seqlens_host = nullptr;  // host array [num_seqs + 1] or nullptr
  float scale = 1.0f;
  const float* slope = nullptr;  // device [H], >= 0

  // Forward: q, k, v in; o out (required), final_state out (optional).
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  LightningStrides q_strides, k_strides, v_strides, o_strides;
  const float* initial_state = nullptr;  // optional, contiguous [S, H, D, E]
  float* final_state = nullptr;          // optional, contiguous [S, H, D, E]

  // Backward: dout (+ optional d_final_state) in; dq, dk, dv (+ optional d_initial_state) out.
  const void* dout = nullptr;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  LightningStrides do_strides, dq_strides, dk_strides, dv_strides;
  const float* d_final_state = nullptr;  // optional, contiguous [S, H, D, E]
  float* d_initial_state = nullptr;      // optional, contiguous [S, H, D, E]

  // Device scratch of at least lightning_workspace_bytes(*this) bytes (16-byte aligned).
  void* workspace = nullptr;
  size_t workspace_bytes = 0;

  // Tuning / tests: segment length in 64-token chunks (0 = automatic: split sequences only
  // when (sequences x heads x slices) does not fill the GPU).
  int64_t segment_chunks = 0;
  // Pass implementation: 0 = process default, 1 = v1, 2 = v2, 3 = v3 (Hopper).
  int impl = 0;
};

struct LightningDecodeParams {
  LightningDType dtype = LightningDType::kBFloat16;
  int64_t batch = 1, heads = 1, dim_k = 64, dim_v = 64;
  float scale = 1.0f;
  const float* slope = nullptr;  // device [H]
  const void* q = nullptr;       // contiguous [B, H, D]
  const void* k = nullptr;       // contiguous [B, H, D]
  const void* v = nullptr;       // contiguous [B, H, E]
  void* o = nullptr;             // contiguous [B, H, E]
  float* state = nullptr;        // contiguous [B, H, D, E], updated in place
  // Decode implementation: 0 = process default, 1 = v1, 2 = v2 (warp per (batch, head)),
  // 3 = v3 (four warps per (batch, head)).
  int impl = 0;
};

// nullptr when supported, else a static message naming what is not.
const char* lightning_cuda_unsupported_reason(const LightningParams& p, bool backward);
const char* lightning_decode_unsupported_reason(const LightningDecodeParams& p);

// Bytes of device workspace a forward or backward call needs (0 when no sequence is split).
size_t lightning_workspace_bytes(const LightningParams& p);

// o = lightning(q, k, v), final_state when non-null. cudaErrorInvalidValue when unsupported.
cudaError_t lightning_forward(const LightningParams& p, cudaStream_t stream);
// dq, dk, dv (and d_initial_state when non-null) from dout (and d_final_state when non-null).
cudaError_t lightning_backward(const LightningParams& p, cudaStream_t stream);
// One token per (batch, head): state <- lambda state + k^T v (in place), o = scale q state.
cudaError_t lightning_decode(const LightningDecodeParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace effattn
