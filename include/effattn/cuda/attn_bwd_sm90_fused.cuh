// Hopper (sm_90a) fused attention backward: one key-tile-major pass computes dK, dV and dQ
// (FA3-style). Same CTA shape, pipeline and policy interface as the dK/dV kernel of
// attn_bwd_sm90.cuh (producer warpgroup + one consumer warpgroup owning 64 keys, 2 CTAs per
// SM); per visited query tile of 64 rows the consumer additionally
//   - stores dS^T (bf16/fp16, [64 keys][64 queries], 128-byte swizzled panel) to shared
//     memory; dK += dS^T Q then reads it K-major, and
//   - computes dQ_tile = dS K (64 queries x D; A = the same dS^T panel read MN-major, i.e.
//     transposed; B = the K tile MN-major), in 64-column halves (32 fp32 registers each),
//     and adds it into an fp32 dQ accumulator in global memory with red.global.add.v2.f32.
// A small kernel then writes dQ = scale * accumulator in the output dtype. The dQ pass of
// the split path (which recomputes S and dP: 7 GEMM units per tile pair instead of 5) is gone.
//
// Why 64 keys per CTA and not FA3's 128 (2 consumer warpgroups): the policies describe key
// tiles of 64 keys (row_mask64, one QRange per key tile); two policy key tiles need not share
// their query tiles (2D/3D NA tiles adjacent in linear order, block lists with block_k = 64).
// The cost is twice the atomic traffic of a 128-key CTA. attn_bwd_fused128_sm90_kernel
// (attn_bwd_sm90_fused128.cuh) is that 128-key CTA, on the policies'
// setup_k_pair (union of two key tiles' query ranges). Consumer registers at D = 128: dK, dV (128)
// + S^T, dP^T (64) while those are computed, then P^T fragments (16) + one dQ half (32); the
// consumer gets 224 (producer 32) so that ptxas does not serialise the wgmmas.
//
// dQ is summed with atomics in an order that varies between runs: results are not bitwise
// deterministic (EFFATTN_SM90_BWD=split is).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>

#include "effattn/cuda/attn_bwd_sm90.cuh"
#include "effattn/cuda/dq_tile_layout.cuh"
#include "effattn/cuda/sm90_dispatch.cuh"
#include "effattn/cuda/sm90_ptx.cuh"

namespace effattn {
namespace cuda {

// dK/dV arguments plus the fp32 dQ accumulator: layout sdqa (contiguous [B, tokens, H, D],
// batch stride 0 for packed varlen like the delta workspace) for the red.global paths, or
// (128-key kernel instantiated with kDqTiled) tile-contiguous (dq_tile_layout.cuh): the 64 x D
// block of query tile `qt` of batch b, query head hq at dq_acc + b * dqt_batch + hq * dqt_head +
// policy.dq_slot(qt) * 64 * D; slots outside [0, dqt_slots) are dropped (never written).
struct BwdFusedArgs : BwdArgs {
  float* dq_acc;
  CoreStrides sdqa;
  // Timing probes (EFFATTN_BWD_PROBE, wrong results; diagnosis only): 1 no dQ accumulation
  // (neither atomics nor staging / bulk reductions), 2 no P^T / dS^T element-wise work, 8 no
  // Q / dO loads, 16 no masks, 64 tile-contiguous dQ staged in shared memory but no bulk
  // reduction issued; 32 selects the 4-wide dQ atomics (correct; A/B timing; the launchers
  // then use the [B, tokens, H, D] accumulator).
  int probe = 0;
  // Tile-contiguous layout (after probe so that the v7 fields keep their parameter offsets:
  // the atomics kernels compile to main's code).
  int64_t dqt_batch = 0;  // floats (0: packed varlen, the slot includes the sequence)
  int64_t dqt_head = 0;   // floats
  int64_t dqt_slots = 0;  // slots per (b, head)
};

inline int bwd_probe_from_env() {
  const char* v = std::getenv("EFFATTN_BWD_PROBE");
  return v ? std::atoi(v) : 0;
}

template <int D>
struct Sm90BwdFusedConfig {
  static_assert(D == 64 || D == 128, "SM90 fused backward: head dims 64 and 128");
  static constexpr int kRows = 64;
  static constexpr int kThreads = 256;
  static constexpr int kStages = 2;
  static constexpr int kTile = kRows * D * 2;
  // K, V, then per stage Q and dO, the dS^T panel (all multiples of 8 KB: 1024-aligned), per
  // stage the row data (lse, delta), per slot the key masks and the dQ row offsets.
  static constexpr int kOffK = 0;
  static constexpr int kOffV = kTile;
  static constexpr int kOffQ = 2 * kTile;                    // + stage * kTile
  static constexpr int kOffDO = kOffQ + kStages * kTile;     // + stage * kTile
  static constexpr int kOffDS = kOffDO + kStages * kTile;    // [64 keys][64 queries] 16-bit
  static constexpr int kOffRows = kOffDS + kRows * kRows * 2;  // + stage * kRowBytes
  static constexpr int kRowBytes = kRows * (4 + 4);
  static constexpr int kOffMask = kOffRows + kStages * kRowBytes;  // uint64 [2][kRows]
  static constexpr int kOffDqOff = kOffMask + 2 * kRows * 8;       // int64 [2][kRows]
  static constexpr int kOffBars = kOffDqOff + 2 * kRows * 8;       // kv, full[S], empty[S]
  static constexpr int kSmem = kOffBars + (1 + 2 * kStages) * 8 + 1024;
  // 2 CTAs per SM: producer + consumer registers <= 256 per thread pair. The consumer needs
  // 224: with 208 dK, dV, S^T and dP^T (192) plus addressing do
  // not fit and ptxas serialises every wgmma (C7512). The producer then spills a few
  // loop-invariant values to local memory (L1), off the critical path.
#ifdef EFFATTN_FUSED_PREGS
  static constexpr int kProducerRegs = EFFATTN_FUSED_PREGS;  // tuning
#else
  static constexpr int kProducerRegs = D == 128 ? 32 : 48;  // D = 64: 128 accumulators fit
#endif
  static constexpr int kConsumerRegs = 256 - kProducerRegs;
};

// ---- pieces of the fused kernels (those shared with the dK/dV kernel: attn_bwd_sm90.cuh) ----

// dS^T (16-bit) into the [64 keys][64 queries] swizzled panel at sDS (this thread's rows
// kr0, kr0 + 8), then made visible to the async proxy (a barrier must follow).
template <typename T>
__device__ __forceinline__ void sm90_bwd_store_ds(const float (&ds)[32], uint32_t sDS, int kr0, int qid) {
  using Tr = ElemTraits<T>;
#pragma unroll
  for (int n = 0; n < 8; ++n)
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      const uint32_t v = Tr::pack(ds[4 * n + 2 * rr], ds[4 * n + 2 * rr + 1]);
      const uint32_t addr = sDS + sm90::panel_offset<64>(kr0 + rr * 8, n) + qid * 4;
      asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
    }
  sm90::fence_proxy_async_smem();
}

// A 64 x 64 dQ block (dq[4 n + 2 rr + e]: query row qr0 + 8 rr, column col0 + n * 8 + 2 qid
// + e) added into the fp32 accumulator; o0 / o1: the rows' accumulator offsets (< 0: padding
// row or head, nothing added).
__device__ __forceinline__ void sm90_bwd_red_dq(float* dq_acc, const float (&dq)[32], int64_t o0, int64_t o1,
                                                int col0, int qid) {
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    const int64_t o = rr == 0 ? o0 : o1;
    if (o < 0) continue;
    float* row = dq_acc + o + col0 + qid * 2;
#pragma unroll
    for (int n = 0; n < 8; ++n) sm90::red_add_v2_f32(row + n * 8, dq[4 * n + 2 * rr], dq[4 * n + 2 * rr + 1]);
  }
}

template <typename T, int D, class Policy>
__global__ void __launch_bounds__(256, 2)
    attn_bwd_fused_sm90_kernel(const BwdFusedArgs args, const Policy policy) {
#ifdef EFFATTN_SM90_ENABLED
  using Cfg = Sm90BwdFusedConfig<D>;
  constexpr int R = Cfg::kRows;
  constexpr int S = Cfg::kStages;

  extern __shared__ unsigned char smem_raw[];
  const Sm90SmemPipe sp = sm90_smem_pipe<S>(smem_raw, Cfg::kOffK, Cfg::kOffV, Cfg::kOffBars);
  const uint32_t base = sp.base, sK = sp.once0, sV = sp.once1, sDS = base + Cfg::kOffDS;
  const uint32_t bar_kv = sp.bar_once, bar_full = sp.bar_full, bar_empty = sp.bar_empty;
  unsigned char* smem = sp.ptr;
  auto rows_of = [&](int st) { return smem + Cfg::kOffRows + st * Cfg::kRowBytes; };

  const int tid = threadIdx.x;
  const int64_t b = blockIdx.z;
  const int kvh = blockIdx.y;

  typename Policy::KTile kt;
  typename Policy::QRange qr;
  if (!policy.setup_k_tile(static_cast<int64_t>(blockIdx.x), kt, qr)) return;
  const int total = args.kv_group * qr.count;

  sm90_init_pipeline(bar_kv, 128, bar_full, 128, bar_empty, 4 /* one per consumer warp */, S);

  if (tid < 128) {
    // ---------------- producer (shared with attn_bwd_kv_sm90_kernel) ----------------
    sm90::regs_dealloc<Cfg::kProducerRegs>();
    sm90_bwd_kv_producer<T, D, R, S>(args, policy, kt, qr, b, kvh, total, sK, sV, base + Cfg::kOffQ,
                                     base + Cfg::kOffDO, Cfg::kTile, smem + Cfg::kOffRows,
                                     Cfg::kRowBytes, bar_kv, bar_full, bar_empty, tid);
    return;
  }

  // ---------------- consumer ----------------
  sm90::regs_alloc<Cfg::kConsumerRegs>();
  const int wtid = tid - 128;
  const int warp = wtid / 32;
  const int lane = wtid % 32;
  const int grp = lane / 4;
  const int qid = lane % 4;
  const int kr0 = warp * 16 + grp;  // this thread's keys (S^T rows): kr0, kr0 + 8
  const int qr0 = kr0;              // and its dQ rows (queries of the tile): qr0, qr0 + 8

  // Keys past the sequence (zero K, V rows) get P = 0 even where no mask is applied, so that
  // exp of a zero score can never reach dQ as inf * 0.
  bool kvalid[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    int64_t c[3];
    kvalid[rr] = policy.k_coord(kt, kr0 + rr * 8, c);
  }

  float acc_dk[D / 2], acc_dv[D / 2];
#pragma unroll
  for (int j = 0; j < D / 2; ++j) acc_dk[j] = acc_dv[j] = 0.f;

  // Per query tile `it` (slot it % 2), computed by the consumers while the previous tile's
  // products run: the key masks (when the tile needs them) and the dQ accumulator offset of
  // each query row (-1: padding row or head, no dQ). Returns whether masks are needed.
  uint64_t* msk_all = reinterpret_cast<uint64_t*>(smem + Cfg::kOffMask);
  int64_t* dqo_all = reinterpret_cast<int64_t*>(smem + Cfg::kOffDqOff);
  auto prepare = [&](int it) -> bool {
    if (it >= total) return false;
    typename Policy::QTile qt;
    const bool any = policy.q_tile(qr, it % qr.count, qt);
    if (wtid < R) {
      const int hq = kvh * args.kv_group + it / qr.count;
      int64_t c[3];
      dqo_all[(it % 2) * R + wtid] =
          any && policy.q_coord(qt, wtid, c)
              ? b * args.sdqa.batch + hq * args.sdqa.head + token_offset(args.sdqa, c)
              : int64_t(-1);
    }
    if (!any || !policy.needs_mask(qt, kt)) return false;
    if (wtid < R) msk_all[(it % 2) * R + wtid] = policy.row_mask64(policy.row_info(qt, wtid), kt);
    return true;
  };
  auto consumer_sync = [] { asm volatile("bar.sync 1, 128;\n" ::: "memory"); };
  bool mask_cur = prepare(0);
  consumer_sync();

  sm90::mbar_wait(bar_kv, 0);
  for (int it = 0; it < total; ++it) {
    const int st = it % S;
    sm90::mbar_wait(bar_full + 8 * st, (it / S) & 1);
    const uint32_t sQ = base + Cfg::kOffQ + st * Cfg::kTile;
    const uint32_t sDO = base + Cfg::kOffDO + st * Cfg::kTile;
    const float* lse = reinterpret_cast<const float*>(rows_of(st));
    const float* dlt = lse + R;
    const uint64_t* msk = msk_all + (it % 2) * R;

    float s[32], dp[32];
    sm90_bwd_issue_s_dp<T, D, R>(s, dp, sK, sQ, sV, sDO);
    sm90::wgmma_wait<1>();
    sm90::fence_regs(s);
    sm90_bwd_probs(s, lse, msk, mask_cur, kvalid, kr0, qid, args.scale_log2);
    sm90::wgmma_wait<0>();
    sm90::fence_regs(dp);
    sm90_bwd_dscores(dp, s, dlt, qid);
    uint32_t pf[4][4];
    sm90_pack_a<T>(s, pf);
    // dS^T to shared memory (the previous tile's readers finished before the last
    // consumer_sync).
    sm90_bwd_store_ds<T>(dp, sDS, kr0, qid);
    consumer_sync();  // every warp's dS^T rows are in place

    float dq[32];
    sm90::fence_regs(acc_dv);
    sm90::fence_regs(acc_dk);
    sm90::wgmma_fence();
    // dQ columns 0..63 first (its atomics then overlap the dV / dK products): dS (A = the
    // dS^T panel read MN-major, i.e. transposed) times K (B MN-major, panel 0).
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      sm90::wgmma_ss_tt<T, 64, 1, 1>(dq, sm90::desc_mnmajor(sDS + kk * 16 * 128, R * 128),
                                     sm90::desc_mnmajor(sK + kk * 16 * 128, R * 128), kk > 0);
    sm90::wgmma_commit();
    // dV += P^T dO (P^T from registers), dK += dS^T Q (dS^T K-major from shared memory).
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      sm90::wgmma_rs<T, D, 1>(acc_dv, pf[kk], sm90::desc_mnmajor(sDO + kk * 16 * 128, R * 128), 1);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      sm90::wgmma_ss_tt<T, D, 0, 1>(acc_dk, sm90_kstep_desc<R>(sDS, kk),
                                    sm90::desc_mnmajor(sQ + kk * 16 * 128, R * 128), 1);
    sm90::wgmma_commit();

    const int64_t* dqo = dqo_all + (it % 2) * R;
    const int64_t o0 = dqo[qr0], o1 = dqo[qr0 + 8];
    auto add_half = [&](int h) { sm90_bwd_red_dq(args.dq_acc, dq, o0, o1, h * 64, qid); };
    sm90::wgmma_wait<1>();
    sm90::fence_regs(dq);
    add_half(0);
    sm90::wgmma_wait<0>();
    sm90::fence_regs(acc_dv);
    sm90::fence_regs(acc_dk);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) sm90::fence_regs(pf[kk]);
    sm90::mbar_arrive_warp(bar_empty + 8 * st, lane);  // Q, dO, lse, delta of this stage done
    bool mask_next;
    if constexpr (D == 128) {
      // dQ columns 64..127 (K panel 1); the next tile's masks and dQ offsets meanwhile.
      sm90::fence_regs(dq);
      sm90::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        sm90::wgmma_ss_tt<T, 64, 1, 1>(dq, sm90::desc_mnmajor(sDS + kk * 16 * 128, R * 128),
                                       sm90::desc_mnmajor(sK + R * 128 + kk * 16 * 128, R * 128), kk > 0);
      sm90::wgmma_commit();
      mask_next = prepare(it + 1);
      sm90::wgmma_wait<0>();
      sm90::fence_regs(dq);
      add_half(1);
    } else {
      mask_next = prepare(it + 1);
    }
    consumer_sync();  // dS^T panel free; the next tile's masks and dQ offsets are visible
    mask_cur = mask_next;
  }

  sm90_bwd_store_dkdv<T, D>(args, policy, kt, b, kvh, kr0, qid, acc_dk, acc_dv);
#else
  __trap();
#endif
}

// Host: whether a backward workspace should hold the fused path's fp32 dQ accumulator
// (current device Hopper, head dim 64 / 128, EFFATTN_SM90_BWD not "split"). The launchers
// fall back to the split path when the workspace they get is smaller.
inline bool sm90_bwd_fused_wanted(int64_t head_dim) {
  if ((head_dim != 64 && head_dim != 128) || !sm90_bwd_fused() || sm90_disabled_by_env()) return false;
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return false;
  return major == 9;
}

// dq[b, t, h, :] = scale * acc[b, t, h, :] in the output dtype; acc is contiguous
// [B, tokens, H, D] (tokens linear over ts.len), dq under its strides. 4 elements per thread.
template <typename T>
__global__ void __launch_bounds__(256)
    attn_bwd_dq_convert_kernel(const float* acc, T* dq, CoreStrides sdq, TokenSpace ts, int32_t head_dim,
                               float scale, int64_t n) {
  using Tr = ElemTraits<T>;
  const int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  if (i >= n) return;
  const float4 v = *reinterpret_cast<const float4*>(acc + i);
  const int64_t d = i % head_dim;
  const int64_t row = i / head_dim;
  const int64_t h = row % ts.heads;
  const int64_t tb = row / ts.heads;
  const int64_t tokens = ts.len[0] * ts.len[1] * ts.len[2];
  int64_t c[3];
  token_coords(ts, tb % tokens, c);
  T* dst = dq + (tb / tokens) * sdq.batch + h * sdq.head + token_offset(sdq, c) + d;
  reinterpret_cast<uint32_t*>(dst)[0] = Tr::pack(v.x * scale, v.y * scale);
  reinterpret_cast<uint32_t*>(dst)[1] = Tr::pack(v.z * scale, v.w * scale);
}

// Tile-contiguous accumulator (dq_tile_layout.cuh) -> dq: one CTA per (64-row query tile,
// query head, batch or sequence), the grid of a forward launch with 64-row tiles and the same
// policy (blockIdx.x = tile, y = head, z = batch / sequence); rows with a valid q_coord get
// dq[token] = scale * acc (un-swizzled) in the output dtype under dq's strides sdq (batch
// stride 0 for packed varlen: coordinates are absolute). Padding rows and tiles without a
// valid row are skipped, so their accumulator contents never matter.
template <typename T, int D, class Policy>
__global__ void __launch_bounds__(256)
    attn_bwd_dq_tiles_convert_kernel(const float* acc, int64_t acc_batch, int64_t acc_head, int64_t slots, T* dq,
                                     CoreStrides sdq, float scale, const Policy policy) {
  using Tr = ElemTraits<T>;
  static_assert(D % kDqBlockCols == 0, "whole 64-column blocks");
  constexpr int R = kDqTileRows;
  constexpr int kVec = D / 4;  // float4 per row
  __shared__ int64_t row_off[R];
  typename Policy::QTile qt;
  if (!policy.setup_q_tile(static_cast<int64_t>(blockIdx.x), qt)) return;
  const int64_t sl = policy.dq_slot(qt);
  if (sl < 0 || sl >= slots) return;
  const int64_t b = blockIdx.z;
  const int h = blockIdx.y;
  if (threadIdx.x < R) {
    int64_t c[3];
    row_off[threadIdx.x] = policy.q_coord(qt, threadIdx.x, c) ? token_offset(sdq, c) : int64_t(-1);
  }
  __syncthreads();
  const float* src = acc + b * acc_batch + h * acc_head + sl * dq_slot_floats(D);
  T* dst_base = dq + b * sdq.batch + h * sdq.head;
  for (int i = threadIdx.x; i < R * kVec; i += blockDim.x) {
    const int r = i / kVec;
    const int col = (i % kVec) * 4;
    const int64_t o = row_off[r];
    if (o < 0) continue;
    // 4 columns = 2 float pairs of one aligned 16-byte group: the swizzle keeps them together.
    const float4 v = *reinterpret_cast<const float4*>(src + (col / kDqBlockCols) * kDqBlockFloats +
                                                      dq_block_offset(r, col % kDqBlockCols));
    T* dst = dst_base + o + col;
    reinterpret_cast<uint32_t*>(dst)[0] = Tr::pack(v.x * scale, v.y * scale);
    reinterpret_cast<uint32_t*>(dst)[1] = Tr::pack(v.z * scale, v.w * scale);
  }
}

}  // namespace cuda
}  // namespace effattn
