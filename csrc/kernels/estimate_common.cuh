// Internal pieces of the CUDA quantized QK estimation (include/effattn/estimate_cuda.h),
// shared by csrc/kernels/estimate_*.cu: the int8 MMA wrappers, the fragment addressing,
// the workspace layout and the kernel launch entry points.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "effattn/estimate_cuda.h"

namespace effattn {
namespace cuda {
namespace est {

// ---- Per-key record (pass 1 -> pass 3) ---------------------------------------------------
// For each (batch, kv head, 64-key chunk): one block of kRecFloats floats with the key scales
// and, per 32-key group, their maximum; then one such block per query head of the group with
// the exact key biases and, per 32-key group, a bound on them. 16-byte multiples (cp.async).
constexpr int kChunkKeys = 64;
constexpr int kGroupKeys = 32;
constexpr int kRecFloats = 68;          // 64 values + 2 group maxima + 2 pad
constexpr int kRecStat = 64;            // offset of the group maxima
constexpr float kBoundSlack = 1e-5f;    // relative slack of the pre-filter (>> fp32 rounding)

// ---- Fragment addressing (ldmatrix.x4 on 16 rows x 32 bytes; shared by int8 k32 / 16-bit k16)
// A: matrix q = (row half q & 1, 16-byte chunk q >> 1) -> registers a0..a3 of mma.m16n8k32
// (.s8) and of mma.m16n8k16 (.f16/.bf16): row g / g + 8, bytes 4t.. / 16 + 4t..
EFFATTN_HOST_DEVICE int lda_row(int lane) { return (lane & 7) + ((lane >> 3) & 1) * 8; }
EFFATTN_HOST_DEVICE int lda_chunk(int lane) { return lane >> 4; }
// B (keys as rows, dims contiguous): matrix q = (key half q >> 1, chunk q & 1) -> b0, b1 of
// the n8 tile of keys 0..7, then b0, b1 of keys 8..15.
EFFATTN_HOST_DEVICE int ldb_row(int lane) { return (lane & 7) + ((lane >> 4) & 1) * 8; }
EFFATTN_HOST_DEVICE int ldb_chunk(int lane) { return (lane >> 3) & 1; }

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile whose rows are kRowBytes long:
// XOR swizzle so the 8 rows one ldmatrix phase reads hit 8 distinct 16-byte bank groups.
template <int kRowBytes>
EFFATTN_HOST_DEVICE uint32_t swz(int row, int chunk) {
  constexpr int kChunks = kRowBytes / 16;
  constexpr int kRowsPerLine = kChunks >= 8 ? 1 : 8 / kChunks;
  constexpr int kXor = kChunks >= 8 ? 8 : kChunks;
  return static_cast<uint32_t>(row * kRowBytes + 16 * (chunk ^ ((row / kRowsPerLine) % kXor)));
}

#if defined(__CUDACC__)
// d = a * b (+ c), int8 x int8 -> int32, m16n8k32. The zero-C form starts a tile without
// clearing the accumulators first.
__device__ __forceinline__ void mma_s8(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_s8_zero(int (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                            uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
      : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(0));
}
#endif

// ---- Everything the kernels need, by value --------------------------------------------
struct EstArgs {
  MapGeometry geo;
  int batch = 1, heads = 1, kv_heads = 1, group = 1, head_dim = 64;
  int quant_block = 1, scale_rows = 1;  // scale_rows = ceil(N / quant_block)
  float scale = 1.f;
  const void* q = nullptr;
  const void* k = nullptr;
  const int8_t* q8 = nullptr;
  const int8_t* k8 = nullptr;
  const float* q_scale = nullptr;
  const float* k_scale = nullptr;
  const float* q_mean = nullptr;
  const float* k_mean = nullptr;
  const float* log_threshold = nullptr;
  // Workspace.
  float4* rowinfo = nullptr;  // [B, H, N]: (q scale, query bias, bound, pre-filter threshold)
  float* aux = nullptr;       // [B, H_kv, chunks, (1 + G) * kRecFloats]
  uint32_t* bits = nullptr;   // [B, H, Mq, words]: estimated kept blocks
  int chunks = 0, words = 0, rec_floats = 0;
  // Outputs.
  int32_t* num_blocks = nullptr;
  int32_t* indices = nullptr;
};

// Host: fills the workspace pointers of `a` from `base` (nullptr: sizes only); returns bytes.
size_t layout_workspace(EstArgs& a, void* base);

// Launches (each returns the launch status).
cudaError_t launch_key_prep(const EstArgs& a, bool f16, cudaStream_t stream);
cudaError_t launch_stats(const EstArgs& a, bool f16, cudaStream_t stream);
cudaError_t launch_estimate(const EstArgs& a, cudaStream_t stream);
cudaError_t launch_compact(const EstArgs& a, cudaStream_t stream);

}  // namespace est
}  // namespace cuda
}  // namespace effattn
