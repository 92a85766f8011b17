// Hopper (sm_90a) PTX wrappers for the SM90 attention core: wgmma with the A operand in
// registers and B in shared memory, shared-memory matrix descriptors for the 128-byte
// swizzle, mbarriers, cp.async -> mbarrier completion, and register reallocation.
//
// Everything here exists only when compiling for sm_90a (EFFATTN_SM90_ENABLED); other
// targets get a trap, and the host side never launches the SM90 kernels there (it checks
// the kernel's binary version first).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900 && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define EFFATTN_SM90_ENABLED 1
#endif

namespace effattn {
namespace cuda {
namespace sm90 {

// Shared-memory tiles of the SM90 core are [rows][64 elements] panels of 128-byte rows,
// with the 16-byte chunk index XOR-ed with (row % 8): the hardware's 128-byte swizzle
// (Swizzle<3,4,3>), which needs every panel 1024-byte aligned. A tile of D columns is
// D / 64 such panels, one after the other.
template <int ROWS>
__device__ __forceinline__ uint32_t panel_offset(int row, int chunk /* 0 .. D/8-1 */) {
  const int panel = chunk >> 3;
  const int c = (chunk & 7) ^ (row & 7);
  return static_cast<uint32_t>(panel * ROWS * 128 + row * 128 + c * 16);
}

// Matrix descriptor (PTX ISA "Shared memory matrix layout"): start address, leading and
// stride byte offsets (all in 16-byte units) and the swizzle mode (1 = 128-byte).
__device__ __forceinline__ uint64_t make_desc(uint32_t smem_addr, uint32_t lbo_bytes,
                                              uint32_t sbo_bytes) {
  uint64_t d = 0;
  d |= static_cast<uint64_t>((smem_addr >> 4) & 0x3FFF);
  d |= static_cast<uint64_t>((lbo_bytes >> 4) & 0x3FFF) << 16;
  d |= static_cast<uint64_t>((sbo_bytes >> 4) & 0x3FFF) << 32;
  d |= static_cast<uint64_t>(1) << 62;  // 128-byte swizzle
  return d;
}

// B operand K-major (rows = N, 64-element panels along K): 8-row groups 1024 bytes apart;
// the leading offset is unused for swizzled K-major layouts (one k16 step stays inside a
// panel row). Step k16 inside a panel by +32 bytes, across panels by ROWS * 128 bytes.
__device__ __forceinline__ uint64_t desc_kmajor(uint32_t addr) { return make_desc(addr, 16, 1024); }

// B operand MN-major (rows = K, 64-element panels along N): 8-row (k) groups 1024 bytes
// apart (stride offset), panels along N `panel_bytes` apart (leading offset).
__device__ __forceinline__ uint64_t desc_mnmajor(uint32_t addr, uint32_t panel_bytes) {
  return make_desc(addr, panel_bytes, 1024);
}

// The descriptor of `desc`'s operand moved by `bytes` (a multiple of 16): the start address
// field is the low word's low 14 bits (address / 16), and shared addresses plus in-tile
// offsets stay below 2^18 (228 KB of shared memory), so adding to the low word never carries
// out of the field. Building descriptors once per tile and stepping them this way costs one
// integer add per wgmma instead of re-deriving and masking the address field each time.
__device__ __forceinline__ uint64_t desc_advance(uint64_t desc, uint32_t bytes) {
  const uint32_t lo = static_cast<uint32_t>(desc) + (bytes >> 4);
  return (desc & 0xFFFFFFFF00000000ull) | lo;
}

__device__ __forceinline__ void wgmma_fence() {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

// Keeps the compiler from moving reads / writes of accumulator registers across the
// asynchronous wgmma issue / wait points.
template <int N>
__device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void fence_regs(uint32_t (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

#define EFFATTN_WGMMA_D8(i) "+f"(d[i + 0]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), \
  "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])

// D[64 x 64] (+)= A[64 x 16] (registers) * B[16 x 64] (descriptor). tnspB: 0 = K-major B,
// 1 = MN-major B. scale_d = 0 overwrites D.
template <typename T, int kTnspB>
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const uint32_t (&a)[4],
                                                   uint64_t desc_b, int scale_d) {
#ifdef EFFATTN_SM90_ENABLED
#define EFFATTN_WGMMA_N64(TY)                                                               \
  asm volatile(                                                                             \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %38, 0;\n"                                          \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " "                           \
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                             \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31},"                   \
      "{%32,%33,%34,%35}, %36, p, 1, 1, %37;\n}\n"                                          \
      : EFFATTN_WGMMA_D8(0), EFFATTN_WGMMA_D8(8), EFFATTN_WGMMA_D8(16), EFFATTN_WGMMA_D8(24) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(kTnspB), "r"(scale_d))
  if constexpr (std::is_same<T, __half>::value) {
    EFFATTN_WGMMA_N64("f16");
  } else {
    EFFATTN_WGMMA_N64("bf16");
  }
#undef EFFATTN_WGMMA_N64
#else
  __trap();
#endif
}

// D[64 x 128] (+)= A[64 x 16] (registers) * B[16 x 128] (descriptor).
template <typename T, int kTnspB>
__device__ __forceinline__ void wgmma_m64n128k16_rs(float (&d)[64], const uint32_t (&a)[4],
                                                    uint64_t desc_b, int scale_d) {
#ifdef EFFATTN_SM90_ENABLED
#define EFFATTN_WGMMA_N128(TY)                                                                \
  asm volatile(                                                                               \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %70, 0;\n"                                            \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " "                            \
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                               \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"                      \
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"                      \
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63},"                     \
      "{%64,%65,%66,%67}, %68, p, 1, 1, %69;\n}\n"                                            \
      : EFFATTN_WGMMA_D8(0), EFFATTN_WGMMA_D8(8), EFFATTN_WGMMA_D8(16), EFFATTN_WGMMA_D8(24),  \
        EFFATTN_WGMMA_D8(32), EFFATTN_WGMMA_D8(40), EFFATTN_WGMMA_D8(48), EFFATTN_WGMMA_D8(56) \
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(kTnspB), "r"(scale_d))
  if constexpr (std::is_same<T, __half>::value) {
    EFFATTN_WGMMA_N128("f16");
  } else {
    EFFATTN_WGMMA_N128("bf16");
  }
#undef EFFATTN_WGMMA_N128
#else
  __trap();
#endif
}
// D[64 x 64] (+)= A[64 x 16] (descriptor, K-major) * B[16 x 64] (descriptor).
template <typename T, int kTnspB>
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[32], uint64_t desc_a, uint64_t desc_b,
                                                   int scale_d) {
#ifdef EFFATTN_SM90_ENABLED
#define EFFATTN_WGMMA_N64_SS(TY)                                                            \
  asm volatile(                                                                             \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %35, 0;\n"                                          \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " "                           \
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                             \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31},"                   \
      " %32, %33, p, 1, 1, 0, %34;\n}\n"                                                    \
      : EFFATTN_WGMMA_D8(0), EFFATTN_WGMMA_D8(8), EFFATTN_WGMMA_D8(16), EFFATTN_WGMMA_D8(24) \
      : "l"(desc_a), "l"(desc_b), "n"(kTnspB), "r"(scale_d))
  if constexpr (std::is_same<T, __half>::value) {
    EFFATTN_WGMMA_N64_SS("f16");
  } else {
    EFFATTN_WGMMA_N64_SS("bf16");
  }
#undef EFFATTN_WGMMA_N64_SS
#else
  __trap();
#endif
}

// D[64 x 128] (+)= A[64 x 16] (descriptor, K-major) * B[16 x 128] (descriptor).
template <typename T, int kTnspB>
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[64], uint64_t desc_a, uint64_t desc_b,
                                                    int scale_d) {
#ifdef EFFATTN_SM90_ENABLED
#define EFFATTN_WGMMA_N128_SS(TY)                                                             \
  asm volatile(                                                                               \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %67, 0;\n"                                            \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " "                            \
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                               \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"                      \
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"                      \
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63},"                     \
      " %64, %65, p, 1, 1, 0, %66;\n}\n"                                                      \
      : EFFATTN_WGMMA_D8(0), EFFATTN_WGMMA_D8(8), EFFATTN_WGMMA_D8(16), EFFATTN_WGMMA_D8(24),  \
        EFFATTN_WGMMA_D8(32), EFFATTN_WGMMA_D8(40), EFFATTN_WGMMA_D8(48), EFFATTN_WGMMA_D8(56) \
      : "l"(desc_a), "l"(desc_b), "n"(kTnspB), "r"(scale_d))
  if constexpr (std::is_same<T, __half>::value) {
    EFFATTN_WGMMA_N128_SS("f16");
  } else {
    EFFATTN_WGMMA_N128_SS("bf16");
  }
#undef EFFATTN_WGMMA_N128_SS
#else
  __trap();
#endif
}
#undef EFFATTN_WGMMA_D8

// D[64 x N] (+)= A[64 x 16] (registers) * B[16 x N] (descriptor), N = 64 or 128.
template <typename T, int N, int kTnspB>
__device__ __forceinline__ void wgmma_rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t desc_b,
                                         int scale_d) {
  static_assert(N == 64 || N == 128, "wgmma_rs: N = 64 or 128");
  if constexpr (N == 64) {
    wgmma_m64n64k16_rs<T, kTnspB>(d, a, desc_b, scale_d);
  } else {
    wgmma_m64n128k16_rs<T, kTnspB>(d, a, desc_b, scale_d);
  }
}

// ---- mbarriers ------------------------------------------------------------------------

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count));
#endif
}
__device__ __forceinline__ void mbar_init_fence() {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
#endif
}
// One arrival for the whole warp, after every lane's shared-memory reads: __syncwarp orders
// the other lanes' reads before lane 0's arrive (without it they are unordered in the memory
// model, and compute-sanitizer racecheck reports the producer's next writes as races).
__device__ __forceinline__ void mbar_arrive_warp(uint32_t bar, int lane) {
  __syncwarp();
  if (lane == 0) mbar_arrive(bar);
}
// Arrives on `bar` once every cp.async issued so far by this thread has landed (counts as
// this thread's arrival: the barrier's expected count includes it).
__device__ __forceinline__ void mbar_arrive_cp_async(uint32_t bar) {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
#endif
}
// Blocks until the phase with the given parity has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile(
      "{\n.reg .pred done;\n"
      "LAB_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra LAB_WAIT;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
#endif
}

// Register reallocation between warpgroups (all warps of a warpgroup execute it).
template <int N>
__device__ __forceinline__ void regs_dealloc() {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
template <int N>
__device__ __forceinline__ void regs_alloc() {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}

// ---- lightning additions (lightning_pass_v3.cuh) ----------------------------------------

// D[64 x 32] (+)= A[64 x 16] (descriptor, K-major) * B[16 x 32] (descriptor).
template <typename T, int kTnspB>
__device__ __forceinline__ void wgmma_m64n32k16_ss(float (&d)[16], uint64_t desc_a, uint64_t desc_b,
                                                   int scale_d) {
#ifdef EFFATTN_SM90_ENABLED
#define EFFATTN_WGMMA_N32_SS(TY)                                                          \
  asm volatile(                                                                           \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %19, 0;\n"                                        \
      "wgmma.mma_async.sync.aligned.m64n32k16.f32." TY "." TY " "                         \
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15},"                          \
      " %16, %17, p, 1, 1, 0, %18;\n}\n"                                                  \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), \
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]),          \
        "+f"(d[13]), "+f"(d[14]), "+f"(d[15])                                               \
      : "l"(desc_a), "l"(desc_b), "n"(kTnspB), "r"(scale_d))
  if constexpr (std::is_same<T, __half>::value) {
    EFFATTN_WGMMA_N32_SS("f16");
  } else {
    EFFATTN_WGMMA_N32_SS("bf16");
  }
#undef EFFATTN_WGMMA_N32_SS
#else
  __trap();
#endif
}

// Four 8x8 16-bit matrices from mma-style fragments to shared memory, transposed: fragment
// element (row r, column c) of matrix i lands in row c of the stored matrix, whose 16-byte
// row addresses come from lanes 8 i .. 8 i + 7.
__device__ __forceinline__ void stmatrix_x4_trans(uint32_t addr, uint32_t r0, uint32_t r1, uint32_t r2,
                                                  uint32_t r3) {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1,%2,%3,%4};\n" ::"r"(addr), "r"(r0),
               "r"(r1), "r"(r2), "r"(r3)
               : "memory");
#endif
}

// Makes this thread's generic-proxy shared-memory writes visible to later async-proxy reads
// (wgmma operands), once a barrier orders them.
__device__ __forceinline__ void fence_proxy_async_smem() {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// Named barrier `id` over `threads` threads (multiple of 32).
__device__ __forceinline__ void named_bar_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// ---- backward additions (attn_bwd_sm90_fused.cuh) ----------------------------------------

// D[64 x N] (+)= A[64 x 16] (descriptor) * B[16 x N] (descriptor), N = 64 or 128, with both
// transpose bits: kTnspA = 1 reads A MN-major (M contiguous), kTnspB = 1 reads B MN-major.
template <typename T, int N, int kTnspA, int kTnspB>
__device__ __forceinline__ void wgmma_ss_tt(float (&d)[N / 2], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  static_assert(N == 64 || N == 128, "wgmma_ss_tt: N = 64 or 128");
#ifdef EFFATTN_SM90_ENABLED
#define EFFATTN_BWD_D8(i) "+f"(d[i + 0]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), \
  "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define EFFATTN_BWD_SS64(TY)                                                                 \
  asm volatile(                                                                              \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %36, 0;\n"                                           \
      "wgmma.mma_async.sync.aligned.m64n64k16.f32." TY "." TY " "                            \
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                              \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31},"                    \
      " %32, %33, p, 1, 1, %34, %35;\n}\n"                                                   \
      : EFFATTN_BWD_D8(0), EFFATTN_BWD_D8(8), EFFATTN_BWD_D8(16), EFFATTN_BWD_D8(24)          \
      : "l"(desc_a), "l"(desc_b), "n"(kTnspA), "n"(kTnspB), "r"(scale_d))
#define EFFATTN_BWD_SS128(TY)                                                                \
  asm volatile(                                                                              \
      "{\n.reg .pred p;\nsetp.ne.b32 p, %68, 0;\n"                                           \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." TY "." TY " "                           \
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                              \
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"                     \
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"                     \
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63},"                    \
      " %64, %65, p, 1, 1, %66, %67;\n}\n"                                                   \
      : EFFATTN_BWD_D8(0), EFFATTN_BWD_D8(8), EFFATTN_BWD_D8(16), EFFATTN_BWD_D8(24),         \
        EFFATTN_BWD_D8(32), EFFATTN_BWD_D8(40), EFFATTN_BWD_D8(48), EFFATTN_BWD_D8(56)        \
      : "l"(desc_a), "l"(desc_b), "n"(kTnspA), "n"(kTnspB), "r"(scale_d))
  if constexpr (N == 64) {
    if constexpr (std::is_same<T, __half>::value) {
      EFFATTN_BWD_SS64("f16");
    } else {
      EFFATTN_BWD_SS64("bf16");
    }
  } else {
    if constexpr (std::is_same<T, __half>::value) {
      EFFATTN_BWD_SS128("f16");
    } else {
      EFFATTN_BWD_SS128("bf16");
    }
  }
#undef EFFATTN_BWD_SS64
#undef EFFATTN_BWD_SS128
#undef EFFATTN_BWD_D8
#else
  __trap();
#endif
}

// Fire-and-forget fp32 atomic add of two consecutive floats (8-byte aligned) in global memory.
__device__ __forceinline__ void red_add_v2_f32(float* p, float a, float b) {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(p), "f"(a), "f"(b) : "memory");
#endif
}

// Same for four consecutive floats (16-byte aligned).
__device__ __forceinline__ void red_add_v4_f32(float* p, float a, float b, float c, float d) {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"l"(p), "f"(a), "f"(b), "f"(c), "f"(d)
               : "memory");
#endif
}

// Bulk (TMA-unit, non-tensor) reduction: dst[0 .. bytes / 4) += the fp32 values at shared
// address src, element-wise atomic; 16-byte aligned, bytes a multiple of 16. Completion through
// this thread's bulk async-groups (bulk_commit, bulk_wait_read, bulk_wait). The shared source
// must have been made visible to the async proxy (fence_proxy_async_smem + a barrier).
__device__ __forceinline__ void bulk_reduce_add_f32(float* dst, uint32_t src, uint32_t bytes) {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("cp.reduce.async.bulk.global.shared::cta.bulk_group.add.f32 [%0], [%1], %2;\n" ::"l"(dst), "r"(src),
               "r"(bytes)
               : "memory");
#endif
}

__device__ __forceinline__ void bulk_commit() {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("cp.async.bulk.commit_group;\n" ::: "memory");
#endif
}

// Waits until at most N of this thread's bulk groups still read their shared source.
template <int N>
__device__ __forceinline__ void bulk_wait_read() {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("cp.async.bulk.wait_group.read %0;\n" ::"n"(N) : "memory");
#endif
}

// Waits until at most N of this thread's bulk groups are incomplete (writes done too).
template <int N>
__device__ __forceinline__ void bulk_wait() {
#ifdef EFFATTN_SM90_ENABLED
  asm volatile("cp.async.bulk.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// 8-byte shared-memory store of two floats.
__device__ __forceinline__ void st_shared_v2_f32(uint32_t addr, float a, float b) {
  asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(addr), "f"(a), "f"(b) : "memory");
}

// ---- int8 additions (csrc/kernels/estimate_int8_sm90.cu) ---------------------------------

template <int N>
__device__ __forceinline__ void fence_regs(int (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+r"(r[i])::"memory");
}

// D[64 x 64] (+)= A[64 x 32] (s8, registers) * B[32 x 64] (s8, descriptor, K-major), s32
// accumulators in the f32 accumulator layout. A's registers: a0 / a1 = rows g / g + 8 of the
// warp's 16, bytes 4 t.. of the 32; a2 / a3 the same at bytes 16 + 4 t.. (mma.m16n8k32's A).
// scale_d = 0 overwrites D.
__device__ __forceinline__ void wgmma_m64n64k32_s8_rs(int (&d)[32], const uint32_t (&a)[4], uint64_t desc_b,
                                                      int scale_d) {
#ifdef EFFATTN_SM90_ENABLED
#define EFFATTN_WGMMA_S8(i) "+r"(d[i + 0]), "+r"(d[i + 1]), "+r"(d[i + 2]), "+r"(d[i + 3]), \
  "+r"(d[i + 4]), "+r"(d[i + 5]), "+r"(d[i + 6]), "+r"(d[i + 7])
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.s32.s8.s8 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31},"
      "{%32,%33,%34,%35}, %36, p;\n}\n"
      : EFFATTN_WGMMA_S8(0), EFFATTN_WGMMA_S8(8), EFFATTN_WGMMA_S8(16), EFFATTN_WGMMA_S8(24)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
#undef EFFATTN_WGMMA_S8
#else
  __trap();
#endif
}

// Volatile shared-memory accesses by address (estimate_int8_sm90.cu's early-exit flags: read
// and written without synchronisation; one instruction per access, 16 bytes for the vector).
__device__ __forceinline__ int4 ld_volatile_shared_v4(uint32_t addr) {
  int4 v;
  asm volatile("ld.volatile.shared.v4.s32 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr)
               : "memory");
  return v;
}
__device__ __forceinline__ int ld_volatile_shared(uint32_t addr) {
  int v;
  asm volatile("ld.volatile.shared.s32 %0, [%1];\n" : "=r"(v) : "r"(addr) : "memory");
  return v;
}
__device__ __forceinline__ void st_volatile_shared(uint32_t addr, int v) {
  asm volatile("st.volatile.shared.s32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}

}  // namespace sm90
}  // namespace cuda
}  // namespace effattn
