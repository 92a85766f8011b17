// TMA (cp.async.bulk.tensor) support for the Hopper forward core: host-side tensor maps of
// heads-last [B, N, H, D] tensors and the device-side copy / mbarrier wrappers.
//
// A tensor map describes the tensor as 4 dims, innermost first: (D, N, H, B), element
// strides (1, token, head, batch). The box is 64 columns (128 bytes: one panel of the SM90
// core's shared-memory tiles) x 64 rows, written with the hardware 128-byte swizzle, which is
// exactly sm90::panel_offset<ROWS>: inside a 1024-byte aligned block of 8 rows, byte bits
// [4:6] (the 16-byte chunk) are XOR-ed with bits [7:9] (the row % 8). A 64-row box lands at
// panel base + 64 r * 128 bytes, a multiple of 1024, so the XOR pattern lines up with the
// panel's rows. Rows outside [0, N) are zero-filled and still count toward the transaction
// bytes (the full box is always counted).
//
// The encoder is the driver's cuTensorMapEncodeTiled, fetched through the runtime's
// driver-entry-point query so that nothing links libcuda. When it is unavailable or rejects
// the tensor (alignment, strides), the launcher falls back to the cp.async producer.
#pragma once

#include <cuda.h>  // CUtensorMap and its enums (types only: libcuda is never linked)
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <type_traits>

#include "effattn/cuda/sm90_ptx.cuh"  // EFFATTN_SM90_ENABLED

namespace effattn {
namespace cuda {

// Tensor maps of the forward's Q, K and V (a __grid_constant__ kernel parameter).
struct Sm90TmaMaps {
  CUtensorMap q;
  CUtensorMap k;
  CUtensorMap v;
};

constexpr int kSm90TmaBoxRows = 64;  // rows per box: one 64-key policy tile

// ---- device ----------------------------------------------------------------------------

namespace sm90 {

// Arrives on `bar` (one arrival) and raises the phase's expected transaction bytes.
__device__ __forceinline__ void tma_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
#endif
}

__device__ __forceinline__ void tma_prefetch_map(const CUtensorMap* map) {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
#endif
}

// One box of a 4-dim map into shared memory at `dst`; completion counted on `bar` in bytes.
// (The CTA's own shared::cta address is a valid shared::cluster address without clusters.)
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0,
                                            int c1, int c2, int c3) {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
#endif
}

}  // namespace sm90

// ---- host ------------------------------------------------------------------------------

inline PFN_cuTensorMapEncodeTiled_v12000 sm90_tma_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult status = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
    const cudaError_t err =
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &status);
#else
    const cudaError_t err = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &f, cudaEnableDefault, &status);
#endif
    if (err != cudaSuccess || status != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();  // do not leave the failed query as the sticky last error
      f = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// Map of a [B, N, H, D] tensor of T (element strides, D contiguous, D a multiple of 64).
// False when TMA cannot describe it (the caller then uses cp.async).
template <typename T>
inline bool sm90_encode_rows_map(CUtensorMap* map, const void* base, int64_t B, int64_t N, int64_t H,
                                 int64_t D, int64_t s_batch, int64_t s_token, int64_t s_head) {
  static_assert(sizeof(T) == 2, "TMA maps: 16-bit elements");
  const PFN_cuTensorMapEncodeTiled_v12000 encode = sm90_tma_encoder();
  if (encode == nullptr || base == nullptr) return false;
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0 || D % 64 != 0) return false;
  if (B < 1 || N < 1 || H < 1 || N >= (int64_t(1) << 31) || B >= (int64_t(1) << 31) || H >= (int64_t(1) << 31))
    return false;
  const int64_t e = static_cast<int64_t>(sizeof(T));
  const int64_t dims[3] = {N, H, B};
  int64_t strides[3] = {s_token * e, s_head * e, s_batch * e};
  // Extent-1 dims are never stepped along: give them a valid stride whatever theirs is
  // (broadcast tensors carry 0 there).
  int64_t fill = D * e;
  for (int i = 0; i < 3; ++i)
    if (dims[i] > 1 && strides[i] > fill) fill = strides[i];
  fill = (fill + 15) / 16 * 16;
  for (int i = 0; i < 3; ++i) {
    if (dims[i] == 1) strides[i] = fill;
    if (strides[i] <= 0 || strides[i] % 16 != 0 || strides[i] >= (int64_t(1) << 40)) return false;
  }
  const cuuint64_t gdim[4] = {static_cast<cuuint64_t>(D), static_cast<cuuint64_t>(N),
                              static_cast<cuuint64_t>(H), static_cast<cuuint64_t>(B)};
  const cuuint64_t gstride[3] = {static_cast<cuuint64_t>(strides[0]), static_cast<cuuint64_t>(strides[1]),
                                 static_cast<cuuint64_t>(strides[2])};
  const cuuint32_t box[4] = {64, static_cast<cuuint32_t>(kSm90TmaBoxRows), 1, 1};
  const cuuint32_t estride[4] = {1, 1, 1, 1};
  const CUtensorMapDataType dt =
      std::is_same<T, __half>::value ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  const CUresult r = encode(map, dt, 4, const_cast<void*>(base), gdim, gstride, box, estride,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    // Unexpected for a tensor that passed the checks above: say so once (the launch still
    // works, on the slower cp.async producer).
    static bool reported = false;
    if (!reported) {
      reported = true;
      std::fprintf(stderr, "effattn: cuTensorMapEncodeTiled failed (CUresult %d); the SM90 producer uses cp.async\n",
                   static_cast<int>(r));
    }
    return false;
  }
  return true;
}

}  // namespace cuda
}  // namespace effattn
