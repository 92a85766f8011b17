// Thin PTX wrappers for the SM80-class attention core (also valid on SM90):
// mma.sync m16n8k16 (fp16/bf16 in, fp32 accumulate), ldmatrix, cp.async, packing.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16", 16-bit A/B, fp32 C):
//   lane = 4 * grp + qid   (grp = lane / 4 in 0..7, qid = lane % 4 in 0..3)
//   A (16x16, row-major): a[0] = A[grp][2qid..+1]      a[1] = A[grp+8][2qid..+1]
//                         a[2] = A[grp][2qid+8..+9]    a[3] = A[grp+8][2qid+8..+9]
//   B (16x8,  "col"):     b[0] = B[2qid..+1][grp]      b[1] = B[2qid+8..+9][grp]
//   C (16x8, fp32):       c[0..1] = C[grp][2qid..+1]   c[2..3] = C[grp+8][2qid..+1]
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

namespace effattn {
namespace cuda {

// Element type tag -> conversion helpers.
template <typename T>
struct ElemTraits;

template <>
struct ElemTraits<__half> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  static __device__ __forceinline__ float2 unpack(uint32_t v) {
    __half2 h = *reinterpret_cast<__half2*>(&v);
    return __half22float2(h);
  }
  static __device__ __forceinline__ uint16_t bits(float x) { return __half_as_ushort(__float2half_rn(x)); }
  static __device__ __forceinline__ float to_float(uint16_t b) { return __half2float(__ushort_as_half(b)); }
};

template <>
struct ElemTraits<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
  static __device__ __forceinline__ float2 unpack(uint32_t v) {
    __nv_bfloat162 h = *reinterpret_cast<__nv_bfloat162*>(&v);
    return __bfloat1622float2(h);
  }
  static __device__ __forceinline__ uint16_t bits(float x) {
    return __bfloat16_as_ushort(__float2bfloat16_rn(x));
  }
  static __device__ __forceinline__ float to_float(uint16_t b) {
    return __bfloat162float(__ushort_as_bfloat16(b));
  }
};

// d += a * b  (m16n8k16, fp32 accumulators).
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  if constexpr (std::is_same<T, __half>::value) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i.
// Result r[i]: thread lane holds matrix i's row lane/4, columns 2*(lane%4)..+1.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Transposed: thread lane holds matrix i's elements (row 2*(lane%4)..+1, column lane/4).
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// 16-byte async copy global -> shared; src_bytes == 0 zero-fills the destination
// without reading global memory.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}

// 4-byte async copy (L1-allocating form, the only one for sizes below 16).
__device__ __forceinline__ void cp_async_4(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// Shared-memory tile of ROWS x D 16-bit elements, rows of D/8 16-byte chunks, with an XOR
// swizzle on the chunk index so that ldmatrix (8 rows, same logical chunk) is bank-conflict
// free for D = 32, 64, 128.
template <int D>
struct SwizzledTile {
  static constexpr int kChunks = D / 8;                        // 16-byte chunks per row
  static constexpr int kRowsPer128B = kChunks >= 8 ? 1 : 8 / kChunks;
  static constexpr int kSwz = kChunks >= 8 ? 8 : kChunks;      // xor range
  // Byte offset of (row, chunk) inside the tile.
  static __device__ __forceinline__ uint32_t offset(int row, int chunk) {
    const int phys = chunk ^ ((row / kRowsPer128B) % kSwz);
    return static_cast<uint32_t>((row * kChunks + phys) * 16);
  }
  // Byte offset of element (row, col), col multiple of 8 -> chunk aligned.
  static __device__ __forceinline__ uint32_t offset_elem(int row, int col) {
    return offset(row, col / 8) + static_cast<uint32_t>((col % 8) * 2);
  }
};

// 2^x with one MUFU.EX2: ex2.approx.ftz (exp2f without fast-math adds a denormal range
// check and two multiplies around it). Results below 2^-126 flush to 0 and 2^-inf = 0, which
// is what softmax probabilities need; the relative error (2^-22) is far below bf16's.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

}  // namespace cuda
}  // namespace effattn
