// CUDA kernels of lightning attention (DESIGN.md §7), torch-free: launch helpers and the per-dtype
// entry points used by csrc/kernels/lightning_api.cu. The kernels themselves:
//   lightning_pass_v1.cuh  v1 pass (4 warps per (segment, head, 64-column slice))
//   lightning_pass_v2.cuh  v2 pass (E/16 warps per (segment, head), transposed state)
//   lightning_pass_v3.cuh  v3 pass (sm_90a wgmma, warp-specialised; D = E = 128)
//   lightning_scan.cuh     segment start states of split passes
//   lightning_decode.cuh   decode step, v1 and the streaming v2/v3
// See include/effattn/lightning_cuda.h for the launcher API and the algorithm in short.
#pragma once

#include "effattn/cuda/lightning_common.cuh"
#include "effattn/cuda/lightning_decode.cuh"
#include "effattn/cuda/lightning_pass_v1.cuh"
#include "effattn/cuda/lightning_pass_v2.cuh"
#include "effattn/cuda/lightning_pass_v3.cuh"
#include "effattn/cuda/lightning_scan.cuh"
#include "effattn/cuda/sm90_dispatch.cuh"

namespace effattn {
namespace cuda {
namespace lightning {

// Implementation numbers (LightningParams::impl, LightningDecodeParams::impl after resolution).
constexpr int kPassV1 = 1, kPassV2 = 2, kPassV3 = 3;
constexpr int kDecodeV1 = 1, kDecodeV2 = 2, kDecodeV3 = 3;

template <typename T, int D, bool kOut>
cudaError_t launch_pass(const PassArgs& a, int64_t num_items, cudaStream_t stream) {
  const int64_t blocks = num_items * a.heads * a.slices;
  if (blocks <= 0) return cudaSuccess;
  constexpr int bytes = PassSmem<D, kOut>::kBytes;
  cudaError_t err = cudaFuncSetAttribute(lightning_chunk_kernel<T, D, kOut>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (err != cudaSuccess) return err;
  lightning_chunk_kernel<T, D, kOut><<<static_cast<unsigned>(blocks), kThreads, bytes, stream>>>(a);
  return cudaGetLastError();
}

template <typename T, int D, bool kOut>
cudaError_t launch_pass_v2(const PassArgs& a, int64_t num_items, cudaStream_t stream) {
  using Sh = PassV2Shape<D, kOut>;
  const int64_t blocks = num_items * a.heads;
  if (blocks <= 0) return cudaSuccess;
  cudaError_t err = cudaFuncSetAttribute(lightning_pass_v2_kernel<T, D, kOut>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, Sh::kBytes);
  if (err != cudaSuccess) return err;
  lightning_pass_v2_kernel<T, D, kOut><<<static_cast<unsigned>(blocks), Sh::kThreads, Sh::kBytes, stream>>>(a);
  return cudaGetLastError();
}

template <typename T, bool kOut>
cudaError_t launch_pass_v3(const PassArgs& a, int64_t num_items, cudaStream_t stream) {
  using Sh = PassV3Shape<kOut>;
  const int64_t blocks = num_items * a.heads;
  if (blocks <= 0) return cudaSuccess;
  cudaError_t err = cudaFuncSetAttribute(lightning_pass_v3_kernel<T, kOut>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, Sh::kBytes);
  if (err != cudaSuccess) return err;
  lightning_pass_v3_kernel<T, kOut><<<static_cast<unsigned>(blocks), Sh::kThreads, Sh::kBytes, stream>>>(a);
  return cudaGetLastError();
}

// Whether the current device can run the v3 pass: Hopper, the kernels compiled as sm_90a machine
// code (not a trap stub), and the shared memory granted. Cached per device.
template <typename T>
bool pass_v3_usable() {
  static int cache[64];  // 0 unknown, 1 yes, 2 no (benign races: every writer stores the same)
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (dev >= 0 && dev < 64 && cache[dev] != 0) return cache[dev] == 1;
  bool ok = sm90_kernel_usable(lightning_pass_v3_kernel<T, true>) &&
            sm90_kernel_usable(lightning_pass_v3_kernel<T, false>);
  int optin = 0;
  ok = ok && cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess &&
       optin >= PassV3Shape<true>::kBytes;
  if (dev >= 0 && dev < 64) cache[dev] = ok ? 1 : 2;
  return ok;
}

// Resident CTAs per SM of a kernel with `bytes` of dynamic shared memory (1 when unknown).
template <typename K>
int occupancy_of(K kernel, int threads, int bytes) {
  if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) != cudaSuccess) {
    return 1;
  }
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, bytes) != cudaSuccess || n < 1) {
    return 1;
  }
  return n;
}

// Resident CTAs per SM of the output pass (for the segment split heuristic).
template <typename T, int D>
int pass_occupancy(int impl) {
  if constexpr (D == 128) {
    if (impl == kPassV3) {
      using Sh = PassV3Shape<true>;
      return occupancy_of(lightning_pass_v3_kernel<T, true>, Sh::kThreads, Sh::kBytes);
    }
  }
  if (impl == kPassV2 || impl == kPassV3) {
    using Sh = PassV2Shape<D, true>;
    return occupancy_of(lightning_pass_v2_kernel<T, D, true>, Sh::kThreads, Sh::kBytes);
  }
  return occupancy_of(lightning_chunk_kernel<T, D, true>, kThreads, PassSmem<D, true>::kBytes);
}

template <typename T, int D, int E>
cudaError_t launch_decode(const LightningDecodeParams& p, int impl, cudaStream_t stream) {
  const int64_t units = p.batch * p.heads;
  if (units <= 0) return cudaSuccess;
  if (impl == kDecodeV2 || impl == kDecodeV3) {
    constexpr int kUnits1 = DecodeV2Shape<D, E, 1>::kUnits, kUnits4 = DecodeV2Shape<D, E, 4>::kUnits;
    if (impl == kDecodeV2) {
      lightning_decode_v2_kernel<T, D, E, 1>
          <<<static_cast<unsigned>((units + kUnits1 - 1) / kUnits1), 128, 0, stream>>>(p);
    } else {
      lightning_decode_v2_kernel<T, D, E, 4>
          <<<static_cast<unsigned>((units + kUnits4 - 1) / kUnits4), 128, 0, stream>>>(p);
    }
    return cudaGetLastError();
  }
  lightning_decode_kernel<T, D, E><<<static_cast<unsigned>(units), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

// Everything one dtype provides to the host launcher (impl: kPassV* / kDecodeV*, resolved).
template <typename T>
struct DTypeKernels {
  static cudaError_t pass(int d, bool out, int impl, const PassArgs& a, int64_t items, cudaStream_t s);
  static int occupancy(int d, int impl);
  static bool v3_usable();
  static cudaError_t decode(const LightningDecodeParams& p, int impl, cudaStream_t s);
};

template <>
cudaError_t DTypeKernels<__half>::pass(int, bool, int, const PassArgs&, int64_t, cudaStream_t);
template <>
int DTypeKernels<__half>::occupancy(int, int);
template <>
bool DTypeKernels<__half>::v3_usable();
template <>
cudaError_t DTypeKernels<__half>::decode(const LightningDecodeParams&, int, cudaStream_t);
template <>
cudaError_t DTypeKernels<__nv_bfloat16>::pass(int, bool, int, const PassArgs&, int64_t, cudaStream_t);
template <>
int DTypeKernels<__nv_bfloat16>::occupancy(int, int);
template <>
bool DTypeKernels<__nv_bfloat16>::v3_usable();
template <>
cudaError_t DTypeKernels<__nv_bfloat16>::decode(const LightningDecodeParams&, int, cudaStream_t);

template <typename T, int D>
cudaError_t launch_pass_any(bool out, int impl, const PassArgs& a, int64_t items, cudaStream_t s) {
  if constexpr (D == 128) {
    if (impl == kPassV3) return out ? launch_pass_v3<T, true>(a, items, s) : launch_pass_v3<T, false>(a, items, s);
  }
  if (impl == kPassV2 || impl == kPassV3) {  // v3 exists for D = 128 only
    return out ? launch_pass_v2<T, D, true>(a, items, s) : launch_pass_v2<T, D, false>(a, items, s);
  }
  return out ? launch_pass<T, D, true>(a, items, s) : launch_pass<T, D, false>(a, items, s);
}

#define EFFATTN_LIGHTNING_DEFINE_DTYPE(T)                                                        \
  template <>                                                                                    \
  cudaError_t DTypeKernels<T>::pass(int d, bool out, int impl, const PassArgs& a, int64_t items, \
                                    cudaStream_t s) {                                            \
    if (d == 64) return launch_pass_any<T, 64>(out, impl, a, items, s);                          \
    if (d == 128) return launch_pass_any<T, 128>(out, impl, a, items, s);                        \
    return cudaErrorInvalidValue;                                                                \
  }                                                                                              \
  template <>                                                                                    \
  int DTypeKernels<T>::occupancy(int d, int impl) {                                              \
    return d == 64 ? pass_occupancy<T, 64>(impl) : pass_occupancy<T, 128>(impl);                \
  }                                                                                              \
  template <>                                                                                    \
  bool DTypeKernels<T>::v3_usable() { return pass_v3_usable<T>(); }                              \
  template <>                                                                                    \
  cudaError_t DTypeKernels<T>::decode(const LightningDecodeParams& p, int impl, cudaStream_t s) { \
    if (p.dim_k == 64 && p.dim_v == 64) return launch_decode<T, 64, 64>(p, impl, s);             \
    if (p.dim_k == 64 && p.dim_v == 128) return launch_decode<T, 64, 128>(p, impl, s);           \
    if (p.dim_k == 128 && p.dim_v == 64) return launch_decode<T, 128, 64>(p, impl, s);           \
    if (p.dim_k == 128 && p.dim_v == 128) return launch_decode<T, 128, 128>(p, impl, s);         \
    return cudaErrorInvalidValue;                                                                \
  }

}  // namespace lightning
}  // namespace cuda
}  // namespace effattn
