// Pieces shared by every lightning-attention kernel (DESIGN.md §7): tile constants, conversions,
// the swizzled shared-memory tile offset, decay powers and the arguments of one "pass".
//
// mma.sync m16n8k16 fragment layouts (lane = 4 grp + qid):
//   A 16x16 row-major: a0 = A[grp][2qid..+1], a1 = A[grp+8][..], a2 = A[grp][2qid+8..], a3 = A[grp+8][2qid+8..]
//   B 16x8:            b0 = B[2qid..+1][grp], b1 = B[2qid+8..+9][grp]
//   C 16x8 fp32:       c0,c1 = C[grp][2qid..+1], c2,c3 = C[grp+8][2qid..+1]
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "effattn/cuda/sm80_ptx.cuh"
#include "effattn/lightning_cuda.h"

namespace effattn {
namespace cuda {
namespace lightning {

constexpr int kChunk = 64;    // tokens per chunk
constexpr int kSlice = 64;    // state columns per CTA of the v1 pass
constexpr float kLog2e = 1.4426950408889634f;

template <typename T>
__device__ __forceinline__ float to_float(T x) {
  if constexpr (std::is_same<T, __half>::value) {
    return __half2float(x);
  } else {
    return __bfloat162float(x);
  }
}

template <typename T>
__device__ __forceinline__ T from_float(float x) {
  if constexpr (std::is_same<T, __half>::value) {
    return __float2half_rn(x);
  } else {
    return __float2bfloat16_rn(x);
  }
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a [rows][W] tile of 16-bit elements,
// W in {64, 128}: the chunk index is XOR-swizzled with row % 8 so that the 8 rows of an
// ldmatrix 8x8 matrix (same logical chunk) hit 8 different 16-byte bank groups.
template <int W>
__device__ __forceinline__ uint32_t tile_off(int row, int chunk) {
  return static_cast<uint32_t>((row * (W / 8) + (chunk ^ (row & 7))) * 16);
}

// lambda^m with lambda = 2^{log2_lambda}; m == 0 gives 1 even for lambda == 0 (slope = inf).
__device__ __forceinline__ float decay_pow(float log2_lambda, int m) {
  return m == 0 ? 1.0f : exp2f(log2_lambda * static_cast<float>(m));
}

// 2^x by ex2.approx.ftz (relative error about 2^-22, results below 2^-126 flush to 0): one MUFU
// op, without exp2f's denormal fix-up whose select the compiler turns into branches.
__device__ __forceinline__ float exp2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// Branch-free lambda^max(m, 0) for a log2(lambda) already clamped to a finite value (see
// finite_log2_lambda): m == 0 gives 2^0 = 1, lambda == 0 gives 2^(-1e30 m) = 0, and a negative m
// (a masked-out position) stays finite so that a select can drop it.
__device__ __forceinline__ float decay_pow_finite(float finite_log2_lambda, int m) {
  return exp2_approx(finite_log2_lambda * static_cast<float>(m > 0 ? m : 0));
}

// log2(lambda) = -slope log2(e), clamped so that 0 * it is 0 rather than NaN (slope = inf).
__device__ __forceinline__ float finite_log2_lambda(float slope) {
  return fmaxf(-slope * kLog2e, -1e30f);
}

// One pass over q' [.., D], k' [.., D], v' [.., D] (value dim = D here: D == E builds),
// writing o' [.., D] (kOut). Sequences: seqs[4 s + {0,1,2,3}] = batch, first token, length,
// first work item; items[2 i + {0,1}] = sequence, segment.
struct PassArgs {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  LightningStrides qs, ks, vs, os;
  const float* slope;
  float scale_qk;
  float scale_state;
  float kv_scale;
  int reverse;  // process each sequence from its last token to its first
  // 1: the start state enters at the first position undecayed (state after position p holds
  // lambda^p init), as the backward's G = dL/dS does with dL/dS_final; 0: lambda^{p+1} init.
  int init_shift;
  int heads;
  int slices;  // E / kSlice for the v1 pass, 1 for the v2 pass (one CTA owns every column)
  const int64_t* seqs;
  const int32_t* items;
  int64_t seg_len;  // tokens per segment, a multiple of kChunk
  float* slots;     // [items][H][D][E]: local states (kOut == false) / start states (kOut), or null
  const float* init;  // start state of each sequence (null: zero), element (s, h, r, c) at
  int64_t init_seq, init_head, init_row, init_col;  //   init[s*init_seq + h*init_head + r*init_row + c*init_col]
  float* final_state;  // [S][H][D][E] or null (written by the CTA of the last segment)
  int final_extra_decay;  // multiply the final state by lambda once more
};

// Where a CTA's work item lies in its sequence.
struct PassItem {
  int seq, seg;
  int64_t b, t0, n;              // batch, first token, sequence length
  int64_t seg_begin, seg_end;    // processing positions [seg_begin, seg_end)
  bool last_seg;
};

__device__ __forceinline__ PassItem pass_item(const PassArgs& a, int64_t item) {
  PassItem it;
  it.seq = a.items[2 * item];
  it.seg = a.items[2 * item + 1];
  it.b = a.seqs[4 * it.seq];
  it.t0 = a.seqs[4 * it.seq + 1];
  it.n = a.seqs[4 * it.seq + 2];
  it.seg_begin = static_cast<int64_t>(it.seg) * a.seg_len;
  it.seg_end = it.seg_begin + a.seg_len < it.n ? it.seg_begin + a.seg_len : it.n;
  it.last_seg = it.seg_end >= it.n;
  return it;
}

}  // namespace lightning
}  // namespace cuda
}  // namespace effattn
