// Hopper (sm_90a) attention backward core: the dK/dV and dQ passes of attn_bwd_sm80.cuh
// (same math, same policies, same delta pre-pass) on wgmma, warp-specialised like
// attn_fwd_sm90.cuh. Each CTA is one producer warpgroup (cp.async gathers by policy
// coordinates, completion on mbarriers) and one consumer warpgroup of 64 rows; two CTAs
// share an SM, so one CTA's element-wise work overlaps the other's matrix products.
//
// dK/dV (key-tile major): a CTA owns 64 keys (K, V loaded once) and walks the query tiles
// of 64 rows that touch them, over the query heads of its GQA group. Per query tile:
//   S^T = K Q^T and dP^T = V dO^T           (SS wgmma, issued together)
//   P^T = exp2(S^T scale_log2 - lse2[q]),  dS^T = P^T (dP^T - delta[q])   (fp32)
//   dV += P^T dO,  dK += dS^T Q              (RS wgmma: P^T, dS^T from registers)
// The producer also stages per query row lse, delta and, on partial tiles, the 64-bit key
// mask row_mask64(row_info(q), key tile).
// dQ (query-tile major): a CTA owns 64 query rows (Q, dO loaded once) and walks the key
// tiles of the policy: S = Q K^T, dP = dO V^T, dS = P (dP - delta), dQ += dS K.
// These two kernels are the "split" SM90 backward (EFFATTN_SM90_BWD=split, bitwise
// deterministic); the default fused pass (dQ by fp32 atomics, no dQ pass) is in
// attn_bwd_sm90_fused.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "effattn/cuda/attn_bwd_sm80.cuh"  // BwdArgs, DqArgs
#include "effattn/cuda/attn_fwd_sm90.cuh"  // sm90_load_rows
#include "effattn/cuda/sm80_ptx.cuh"
#include "effattn/cuda/sm90_ptx.cuh"

namespace effattn {
namespace cuda {

template <int D>
struct Sm90BwdConfig {
  static_assert(D == 64 || D == 128, "SM90 backward core: head dims 64 and 128");
  static constexpr int kRows = 64;  // keys per dK/dV CTA, query rows per step and per dQ CTA
  static constexpr int kThreads = 256;
  static constexpr int kStages = 2;
  static constexpr int kTile = kRows * D * 2;
  // dK/dV: K, V, then per stage Q, dO, and the row data (lse2, delta: float; mask: uint64).
  static constexpr int kKvOffK = 0;
  static constexpr int kKvOffV = kTile;
  static constexpr int kKvOffQ = 2 * kTile;                      // + stage * kTile
  static constexpr int kKvOffDO = kKvOffQ + kStages * kTile;     // + stage * kTile
  static constexpr int kKvOffRows = kKvOffDO + kStages * kTile;  // + stage * kRowBytes
  static constexpr int kRowBytes = kRows * (4 + 4);                    // lse, delta
  static constexpr int kKvOffMask = kKvOffRows + kStages * kRowBytes;  // uint64 [2][kRows]
  static constexpr int kKvOffBars = kKvOffMask + 2 * kRows * 8;        // kv, full[S], empty[S]
  static constexpr int kKvSmem = kKvOffBars + (1 + 2 * kStages) * 8 + 1024;
  // dQ: Q, dO, then per stage K, V.
  static constexpr int kDqOffQ = 0;
  static constexpr int kDqOffDO = kTile;
  static constexpr int kDqOffK = 2 * kTile;
  static constexpr int kDqOffV = kDqOffK + kStages * kTile;
  static constexpr int kDqOffBars = kDqOffV + kStages * kTile;  // q, full[S], empty[S]
  static constexpr int kDqSmem = kDqOffBars + (1 + 2 * kStages) * 8 + 1024;
  // 2 CTAs per SM: 2 x (128 x producer + 128 x consumer) <= 64 K registers.
  static constexpr int kProducerRegs = 48;
  static constexpr int kConsumerRegs = 208;
  // dK/dV kernel at D = 128: the consumer's dK, dV, S^T, dP^T (192) plus addressing do not
  // fit 208 and ptxas serialises every wgmma (C7512); 224 avoids that (the producer spills a
  // few values to L1 instead).
  static constexpr int kKvProducerRegs = D == 128 ? 32 : 48;
  static constexpr int kKvConsumerRegs = 256 - kKvProducerRegs;
};

// K-major descriptor of k16 step kk of a [64 rows][D] panel tile (A or B operand).
template <int ROWS>
__device__ __forceinline__ uint64_t sm90_kstep_desc(uint32_t tile, int kk) {
  return sm90::desc_advance(sm90::desc_kmajor(tile), (kk / 4) * (ROWS * 128) + (kk % 4) * 32);
}

// Converts a 64 x 64 fp32 accumulator (S layout) into the 4 A-operand fragments (16 columns
// each) of the next wgmma.
template <typename T>
__device__ __forceinline__ void sm90_pack_a(const float (&s)[32], uint32_t (&f)[4][4]) {
  using Tr = ElemTraits<T>;
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) {
    f[kk][0] = Tr::pack(s[8 * kk + 0], s[8 * kk + 1]);
    f[kk][1] = Tr::pack(s[8 * kk + 2], s[8 * kk + 3]);
    f[kk][2] = Tr::pack(s[8 * kk + 4], s[8 * kk + 5]);
    f[kk][3] = Tr::pack(s[8 * kk + 6], s[8 * kk + 7]);
  }
}

// Consumer pieces shared by the key-tile-major backward kernels (dK/dV and fused). A thread of
// the consumer warpgroup holds S^T / dP^T rows (keys) kr0 and kr0 + 8, columns (queries)
// n * 8 + 2 qid + e: s[4 n + 2 rr + e].

// Issues S^T = K Q^T and dP^T = V dO^T as two commit groups (SS, 64 keys x 64 queries).
template <typename T, int D, int R>
__device__ __forceinline__ void sm90_bwd_issue_s_dp(float (&s)[32], float (&dp)[32], uint32_t sK, uint32_t sQ,
                                                    uint32_t sV, uint32_t sDO) {
  sm90::wgmma_fence();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    sm90::wgmma_m64n64k16_ss<T, 0>(s, sm90_kstep_desc<R>(sK, kk), sm90_kstep_desc<R>(sQ, kk), kk > 0);
  sm90::wgmma_commit();
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    sm90::wgmma_m64n64k16_ss<T, 0>(dp, sm90_kstep_desc<R>(sV, kk), sm90_kstep_desc<R>(sDO, kk), kk > 0);
  sm90::wgmma_commit();
}

// S^T -> P^T in place: exp2(S scale log2e - lse log2e) where the key is valid and, with masks,
// in the query row's key mask (msk[col] bit = key); 0 elsewhere and for lse = -inf rows.
__device__ __forceinline__ void sm90_bwd_probs(float (&s)[32], const float* lse, const uint64_t* msk,
                                               bool masked, const bool (&kvalid)[2], int kr0, int qid,
                                               float scale_log2) {
  if (!masked && kvalid[0] && kvalid[1]) {  // interior tile: no per-element selects
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e2 = 0; e2 < 2; ++e2) {
        const float l = lse[n * 8 + qid * 2 + e2];
        const float l2 = l == -INFINITY ? INFINITY : l * 1.4426950408889634f;
#pragma unroll
        for (int rr = 0; rr < 2; ++rr) {
          float& x = s[4 * n + 2 * rr + e2];
          x = fast_exp2(fmaf(x, scale_log2, -l2));
        }
      }
    return;
  }
#pragma unroll
  for (int n = 0; n < 8; ++n)
#pragma unroll
    for (int e2 = 0; e2 < 2; ++e2) {
      const int col = n * 8 + qid * 2 + e2;
      const float l = lse[col];  // fully masked row: lse = -inf -> P = 0
      const float l2 = l == -INFINITY ? INFINITY : l * 1.4426950408889634f;
      // Keys kr0 and kr0 + 8 (kr0 = 16 warp + grp, grp < 8) are bits grp and grp + 8 of the
      // mask's 16-bit word `warp`: one 16-bit load instead of a 64-bit load and shift.
      const uint32_t m = masked ? uint32_t(reinterpret_cast<const uint16_t*>(msk + col)[kr0 >> 4]) >> (kr0 & 15)
                                : 0xFFFFu;
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        float& x = s[4 * n + 2 * rr + e2];
        x = (kvalid[rr] && ((m >> (8 * rr)) & 1u)) ? fast_exp2(x * scale_log2 - l2) : 0.f;
      }
    }
}

// dP^T -> dS^T in place: P^T (dP^T - delta of the query column).
__device__ __forceinline__ void sm90_bwd_dscores(float (&dp)[32], const float (&p)[32], const float* dlt, int qid) {
#pragma unroll
  for (int n = 0; n < 8; ++n)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = n * 8 + qid * 2 + (e & 1);
      dp[4 * n + e] = p[4 * n + e] * (dp[4 * n + e] - dlt[col]);
    }
}

// Epilogue: dK = scale * acc_dk, dV = acc_dv for this thread's valid keys.
template <typename T, int D, class Policy>
__device__ __forceinline__ void sm90_bwd_store_dkdv(const BwdArgs& args, const Policy& policy,
                                                    const typename Policy::KTile& kt, int64_t b, int kvh,
                                                    int kr0, int qid, const float (&acc_dk)[D / 2],
                                                    const float (&acc_dv)[D / 2]) {
  using Tr = ElemTraits<T>;
  T* dk_base = static_cast<T*>(args.dk) + b * args.sdk.batch + kvh * args.sdk.head;
  T* dv_base = static_cast<T*>(args.dv) + b * args.sdv.batch + kvh * args.sdv.head;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    int64_t c[3];
    if (!policy.k_coord(kt, kr0 + rr * 8, c)) continue;
    T* dkrow = dk_base + token_offset(args.sdk, c);
    T* dvrow = dv_base + token_offset(args.sdv, c);
#pragma unroll
    for (int n = 0; n < D / 8; ++n) {
      *reinterpret_cast<uint32_t*>(dkrow + n * 8 + qid * 2) =
          Tr::pack(acc_dk[4 * n + 2 * rr] * args.scale, acc_dk[4 * n + 2 * rr + 1] * args.scale);
      *reinterpret_cast<uint32_t*>(dvrow + n * 8 + qid * 2) =
          Tr::pack(acc_dv[4 * n + 2 * rr], acc_dv[4 * n + 2 * rr + 1]);
    }
  }
}

// Producer warpgroup of the key-tile-major backward kernels (dK/dV and fused): the CTA's K and V
// rows once (completion on bar_kv), then per visited (query head, query tile) its Q and dO rows
// and the rows' lse / delta into ring stage `it % S` (full / empty mbarriers).
template <typename T, int D, int R, int S, class Policy>
__device__ __forceinline__ void sm90_bwd_kv_producer(
    const BwdArgs& args, const Policy& policy, const typename Policy::KTile& kt,
    const typename Policy::QRange& qr, int64_t b, int kvh, int total, uint32_t sK, uint32_t sV,
    uint32_t sQ, uint32_t sDO, int tile_bytes, unsigned char* rows, int row_bytes, uint32_t bar_kv,
    uint32_t bar_full, uint32_t bar_empty, int tid) {
  const int warp = tid / 32, lane = tid % 32;
  sm90_load_row_pair<D, R>(
      sK, static_cast<const T*>(args.k) + b * args.sk.batch + kvh * args.sk.head, args.sk, sV,
      static_cast<const T*>(args.v) + b * args.sv.batch + kvh * args.sv.head, args.sv,
      [&](int r, int64_t(&c)[3]) { return policy.k_coord(kt, r, c); }, warp, lane);
  sm90::mbar_arrive_cp_async(bar_kv);
  for (int it = 0; it < total; ++it) {
    const int st = it % S;
    if (it >= S) sm90::mbar_wait(bar_empty + 8 * st, ((it / S) + 1) & 1);
    const int hq = kvh * args.kv_group + it / qr.count;
    typename Policy::QTile qt;
    const bool any = policy.q_tile(qr, it % qr.count, qt);
    const T* q_base = static_cast<const T*>(args.q) + b * args.sq.batch + hq * args.sq.head;
    const T* do_base = static_cast<const T*>(args.dout) + b * args.sdo.batch + hq * args.sdo.head;
    if (tid < R) {
      // lse and delta of query row tid. Padding rows are zero-filled: their Q and dO rows are
      // zero too, so they add nothing to dK or dV (their key mask is empty, dS = 0).
      float* lse = reinterpret_cast<float*>(rows + st * row_bytes);
      float* dlt = lse + R;
      int64_t c[3];
      const bool valid = any && policy.q_coord(qt, tid, c);
      cp_async_4(smem_u32(lse + tid),
                 valid ? args.lse + b * args.slse.batch + hq * args.slse.head + token_offset(args.slse, c)
                       : args.lse,
                 valid);
      cp_async_4(smem_u32(dlt + tid),
                 valid ? args.delta + b * args.sdelta.batch + hq * args.sdelta.head +
                             token_offset(args.sdelta, c)
                       : args.delta,
                 valid);
    }
    int64_t oq = -1, odo = -1;
    if (any && lane < R / 4) {
      int64_t c[3];
      if (policy.q_coord(qt, warp * (R / 4) + lane, c)) {
        oq = token_offset(args.sq, c);
        odo = token_offset(args.sdo, c);
      }
    }
    sm90_load_rows<D, R>(sQ + st * tile_bytes, q_base, oq, warp, lane);
    sm90_load_rows<D, R>(sDO + st * tile_bytes, do_base, odo, warp, lane);
    sm90::mbar_arrive_cp_async(bar_full + 8 * st);
  }
  cp_async_wait<0>();
}

template <typename T, int D, class Policy>
__global__ void __launch_bounds__(256, 2) attn_bwd_kv_sm90_kernel(const BwdArgs args, const Policy policy) {
#ifdef EFFATTN_SM90_ENABLED
  using Cfg = Sm90BwdConfig<D>;
  constexpr int R = Cfg::kRows;
  constexpr int S = Cfg::kStages;

  extern __shared__ unsigned char smem_raw[];
  const Sm90SmemPipe sp = sm90_smem_pipe<S>(smem_raw, Cfg::kKvOffK, Cfg::kKvOffV, Cfg::kKvOffBars);
  const uint32_t base = sp.base, sK = sp.once0, sV = sp.once1;
  const uint32_t bar_kv = sp.bar_once, bar_full = sp.bar_full, bar_empty = sp.bar_empty;
  unsigned char* smem = sp.ptr;
  auto rows_of = [&](int st) { return smem + Cfg::kKvOffRows + st * Cfg::kRowBytes; };

  const int tid = threadIdx.x;
  const int64_t b = blockIdx.z;
  const int kvh = blockIdx.y;

  typename Policy::KTile kt;
  typename Policy::QRange qr;
  if (!policy.setup_k_tile(static_cast<int64_t>(blockIdx.x), kt, qr)) return;
  const int total = args.kv_group * qr.count;

  sm90_init_pipeline(bar_kv, 128, bar_full, 128, bar_empty, 4 /* one per consumer warp */, S);

  if (tid < 128) {
    // ---------------- producer ----------------
    sm90::regs_dealloc<Cfg::kKvProducerRegs>();
    sm90_bwd_kv_producer<T, D, R, S>(args, policy, kt, qr, b, kvh, total, sK, sV, base + Cfg::kKvOffQ,
                                     base + Cfg::kKvOffDO, Cfg::kTile, smem + Cfg::kKvOffRows,
                                     Cfg::kRowBytes, bar_kv, bar_full, bar_empty, tid);
    return;
  }

  // ---------------- consumer ----------------
  sm90::regs_alloc<Cfg::kKvConsumerRegs>();
  const int wtid = tid - 128;
  const int warp = wtid / 32;
  const int lane = wtid % 32;
  const int grp = lane / 4;
  const int qid = lane % 4;
  const int kr0 = warp * 16 + grp;  // this thread's keys: kr0, kr0 + 8

  float acc_dk[D / 2], acc_dv[D / 2];
#pragma unroll
  for (int j = 0; j < D / 2; ++j) acc_dk[j] = acc_dv[j] = 0.f;

  // Key masks of query tile `it` (slot it % 2), computed by the consumers (row_info and
  // row_mask64 of the policies need more registers than the producer has) while the previous
  // tile's dV / dK products run. Returns whether the tile needs them.
  uint64_t* msk_all = reinterpret_cast<uint64_t*>(smem + Cfg::kKvOffMask);
  auto prepare_mask = [&](int it) -> bool {
    if (it >= total) return false;
    typename Policy::QTile qt;
    if (!policy.q_tile(qr, it % qr.count, qt) || !policy.needs_mask(qt, kt)) return false;
    if (wtid < R) msk_all[(it % 2) * R + wtid] = policy.row_mask64(policy.row_info(qt, wtid), kt);
    return true;
  };
  auto consumer_sync = [] { asm volatile("bar.sync 1, 128;\n" ::: "memory"); };
  bool mask_cur = prepare_mask(0);
  consumer_sync();

  sm90::mbar_wait(bar_kv, 0);
  for (int it = 0; it < total; ++it) {
    const int st = it % S;
    sm90::mbar_wait(bar_full + 8 * st, (it / S) & 1);
    const uint32_t sQ = base + Cfg::kKvOffQ + st * Cfg::kTile;
    const uint32_t sDO = base + Cfg::kKvOffDO + st * Cfg::kTile;
    const float* lse = reinterpret_cast<const float*>(rows_of(st));
    const float* dlt = lse + R;
    const uint64_t* msk = msk_all + (it % 2) * R;

    float s[32], dp[32];
    sm90_bwd_issue_s_dp<T, D, R>(s, dp, sK, sQ, sV, sDO);
    sm90::wgmma_wait<1>();
    sm90::fence_regs(s);
    const bool all_keys[2] = {true, true};  // keys past the sequence: zero rows, masked by the policy
    sm90_bwd_probs(s, lse, msk, mask_cur, all_keys, kr0, qid, args.scale_log2);
    sm90::wgmma_wait<0>();
    sm90::fence_regs(dp);
    sm90_bwd_dscores(dp, s, dlt, qid);
    uint32_t pf[4][4], dsf[4][4];
    sm90_pack_a<T>(s, pf);
    sm90_pack_a<T>(dp, dsf);
    sm90::fence_regs(acc_dv);
    sm90::fence_regs(acc_dk);
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      sm90::wgmma_rs<T, D, 1>(acc_dv, pf[kk], sm90::desc_mnmajor(sDO + kk * 16 * 128, R * 128), 1);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      sm90::wgmma_rs<T, D, 1>(acc_dk, dsf[kk], sm90::desc_mnmajor(sQ + kk * 16 * 128, R * 128), 1);
    sm90::wgmma_commit();
    const bool mask_next = prepare_mask(it + 1);
    sm90::wgmma_wait<0>();
    sm90::fence_regs(acc_dv);
    sm90::fence_regs(acc_dk);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      sm90::fence_regs(pf[kk]);
      sm90::fence_regs(dsf[kk]);
    }
    sm90::mbar_arrive_warp(bar_empty + 8 * st, lane);
    consumer_sync();  // the next tile's masks are visible; this tile's slot is free
    mask_cur = mask_next;
  }

  sm90_bwd_store_dkdv<T, D>(args, policy, kt, b, kvh, kr0, qid, acc_dk, acc_dv);
#else
  __trap();
#endif
}

template <typename T, int D, class Policy>
__global__ void __launch_bounds__(256, 2) attn_bwd_dq_sm90_kernel(const DqArgs args, const Policy policy) {
#ifdef EFFATTN_SM90_ENABLED
  using Cfg = Sm90BwdConfig<D>;
  constexpr int R = Cfg::kRows;
  constexpr int S = Cfg::kStages;

  extern __shared__ unsigned char smem_raw[];
  const Sm90SmemPipe sp = sm90_smem_pipe<S>(smem_raw, Cfg::kDqOffQ, Cfg::kDqOffDO, Cfg::kDqOffBars);
  const uint32_t base = sp.base, sQ = sp.once0, sDO = sp.once1;
  const uint32_t bar_q = sp.bar_once, bar_full = sp.bar_full, bar_empty = sp.bar_empty;

  const int tid = threadIdx.x;
  const int64_t b = blockIdx.z;
  const int h = blockIdx.y;
  const int kvh = h / args.kv_group;

  typename Policy::QTile qt;
  if (!policy.setup_q_tile(static_cast<int64_t>(blockIdx.x), qt)) return;
  const int n_k = policy.num_k(qt);

  sm90_init_pipeline(bar_q, 128, bar_full, 128, bar_empty, 4 /* one per consumer warp */, S);

  if (tid < 128) {
    // ---------------- producer ----------------
    sm90::regs_dealloc<Cfg::kProducerRegs>();
    const int warp = tid / 32, lane = tid % 32;
    sm90_load_row_pair<D, R>(
        sQ, static_cast<const T*>(args.q) + b * args.sq.batch + h * args.sq.head, args.sq, sDO,
        static_cast<const T*>(args.dout) + b * args.sdo.batch + h * args.sdo.head, args.sdo,
        [&](int r, int64_t(&c)[3]) { return policy.q_coord(qt, r, c); }, warp, lane);
    sm90::mbar_arrive_cp_async(bar_q);
    const T* k_base = static_cast<const T*>(args.k) + b * args.sk.batch + kvh * args.sk.head;
    const T* v_base = static_cast<const T*>(args.v) + b * args.sv.batch + kvh * args.sv.head;
    for (int i = 0; i < n_k; ++i) {
      const int st = i % S;
      if (i >= S) sm90::mbar_wait(bar_empty + 8 * st, ((i / S) + 1) & 1);
      const typename Policy::KTile kt = policy.k_tile(qt, i);
      sm90_load_row_pair<D, R>(base + Cfg::kDqOffK + st * Cfg::kTile, k_base, args.sk,
                               base + Cfg::kDqOffV + st * Cfg::kTile, v_base, args.sv,
                               [&](int r, int64_t(&c)[3]) { return policy.k_coord(kt, r, c); }, warp, lane);
      sm90::mbar_arrive_cp_async(bar_full + 8 * st);
    }
    cp_async_wait<0>();
    return;
  }

  // ---------------- consumer ----------------
  sm90::regs_alloc<Cfg::kConsumerRegs>();
  const int wtid = tid - 128;
  const int warp = wtid / 32;
  const int lane = wtid % 32;
  const int grp = lane / 4;
  const int qid = lane % 4;
  const int r0 = warp * 16 + grp;  // this thread's query rows: r0, r0 + 8

  const typename Policy::RowInfo ri[2] = {policy.row_info(qt, r0), policy.row_info(qt, r0 + 8)};
  float lse2[2], dlt[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    int64_t c[3];
    lse2[rr] = INFINITY;
    dlt[rr] = 0.f;
    if (policy.q_coord(qt, r0 + rr * 8, c)) {
      const float l = args.lse[b * args.slse.batch + h * args.slse.head + token_offset(args.slse, c)];
      lse2[rr] = l == -INFINITY ? INFINITY : l * 1.4426950408889634f;
      dlt[rr] = args.delta[b * args.sdelta.batch + h * args.sdelta.head + token_offset(args.sdelta, c)];
    }
  }

  float acc[D / 2];
#pragma unroll
  for (int j = 0; j < D / 2; ++j) acc[j] = 0.f;

  sm90::mbar_wait(bar_q, 0);
  for (int i = 0; i < n_k; ++i) {
    const int st = i % S;
    sm90::mbar_wait(bar_full + 8 * st, (i / S) & 1);
    const uint32_t sK = base + Cfg::kDqOffK + st * Cfg::kTile;
    const uint32_t sV = base + Cfg::kDqOffV + st * Cfg::kTile;
    float s[32], dp[32];
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      sm90::wgmma_m64n64k16_ss<T, 0>(s, sm90_kstep_desc<R>(sQ, kk), sm90_kstep_desc<R>(sK, kk), kk > 0);
    sm90::wgmma_commit();
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk)
      sm90::wgmma_m64n64k16_ss<T, 0>(dp, sm90_kstep_desc<R>(sDO, kk), sm90_kstep_desc<R>(sV, kk), kk > 0);
    sm90::wgmma_commit();
    sm90::wgmma_wait<1>();
    sm90::fence_regs(s);
    const typename Policy::KTile kt = policy.k_tile(qt, i);
    uint64_t mk[2] = {~0ull, ~0ull};
    if (policy.needs_mask(qt, kt)) {
      mk[0] = policy.row_mask64(ri[0], kt);
      mk[1] = policy.row_mask64(ri[1], kt);
    }
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int rr = e / 2;
        const int col = n * 8 + qid * 2 + (e & 1);
        float& x = s[4 * n + e];
        x = ((mk[rr] >> col) & 1ull) ? fast_exp2(x * args.scale_log2 - lse2[rr]) : 0.f;
      }
    sm90::wgmma_wait<0>();
    sm90::fence_regs(dp);
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) dp[4 * n + e] = s[4 * n + e] * (dp[4 * n + e] - dlt[e / 2]);
    uint32_t dsf[4][4];
    sm90_pack_a<T>(dp, dsf);
    sm90::fence_regs(acc);
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      sm90::wgmma_rs<T, D, 1>(acc, dsf[kk], sm90::desc_mnmajor(sK + kk * 16 * 128, R * 128), 1);
    sm90::wgmma_commit();
    sm90::wgmma_wait<0>();
    sm90::fence_regs(acc);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) sm90::fence_regs(dsf[kk]);
    sm90::mbar_arrive_warp(bar_empty + 8 * st, lane);
  }

  using Tr = ElemTraits<T>;
  T* dq_base = static_cast<T*>(args.dq) + b * args.sdq.batch + h * args.sdq.head;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    int64_t c[3];
    if (!policy.q_coord(qt, r0 + rr * 8, c)) continue;
    T* row = dq_base + token_offset(args.sdq, c);
#pragma unroll
    for (int n = 0; n < D / 8; ++n)
      *reinterpret_cast<uint32_t*>(row + n * 8 + qid * 2) =
          Tr::pack(acc[4 * n + 2 * rr] * args.scale, acc[4 * n + 2 * rr + 1] * args.scale);
  }
#else
  __trap();
#endif
}

}  // namespace cuda
}  // namespace effattn
