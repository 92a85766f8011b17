// Hopper (sm_90a) fused attention backward with 128-key CTAs (head dim 128): FA3's CTA shape,
// a producer warpgroup and two consumer warpgroups, each owning one 64-key half of the CTA's
// 128 keys (a pair of policy key tiles, setup_k_pair: the CTA walks the union of their query
// ranges), 1 CTA per SM. Per query tile of 64 rows, Q / dO / lse / delta are loaded once for
// both halves; each half computes S^T, dP^T, P^T, dS^T for its keys as the 64-key kernel
// (attn_bwd_sm90_fused.cuh; own masks; a tile outside its range gives P = 0) and writes dS^T
// into its half of a 128-key panel; after a barrier over both halves, dQ_tile = dS (64 x 128
// keys) K (128 keys x D) is split along D: half h computes columns [64 h, 64 h + 64) over all
// 128 keys (8 k16 steps) and adds them into the fp32 accumulator.
//
// Producer (warpgroup 0): K and V of both halves once (cp.async), then per query tile, into
// ring stage it % S:
//   - Q and dO: cp.async row gathers by policy coordinates, or (kTma: policies whose query
//     tile rows are consecutive tokens, row r = token q_coord(0) + r; rows past the sequence
//     are zero-filled by the copy engine) four 64 x 64 TMA boxes issued by one thread;
//   - lse and delta per row (cp.async, zero for padding rows);
//   - the tile's metadata: per half whether it needs element masks and then the 64 row
//     masks (row_mask64), and the dQ accumulator offset(s). Computing these in the consumers
//     (the previous design) cost them ~30 % of their time (ncu source counters, sixth
//     session): the generic policies' tile setup (integer divisions, window arithmetic) sat
//     on the critical path of every tile; the producer has the slack.
// The stage's `full` barrier completes when the copies have landed (cp.async noinc arrivals
// of the threads that issued them; with kTma the issuing thread's expect_tx for the boxes) and
// each producer warp has arrived (release) after its metadata stores.
//
// Consumers, per tile and half: S^T, dP^T (SS) -> P^T, dS^T -> dS^T store, dV += P^T dO (RS,
// issued before the barrier: it needs no dS) -> barrier -> dQ half (SS, A = the whole panel
// transposed) and dK += dS^T Q (RS from the dS^T registers) -> the dQ half into the
// accumulator (bulk reduction or atomics) while dK runs; then the stage is released.
// One barrier per tile (both consumer warpgroups) orders everything shared: the dS panel is
// double-buffered (tile it uses buffer it % 2): a half writes buffer it % 2 after the
// barrier of tile it - 1, which the other half passes only after finishing tile it - 2.
// dQ accumulation, kDqTiled (default, EFFATTN_SM90_DQ unset): the accumulator is
// tile-contiguous (dq_tile_layout.cuh: [b][hq][slot][half][64][64] fp32, XOR-swizzled pairs);
// each half stores its 64 x 64 block into its 16 KB staging image (same layout), fences it
// to the async proxy, syncs its 128 threads (named barrier 2 + half) and its thread 0 adds the
// image with ONE 16384-byte cp.reduce.async.bulk .add.f32 (FA3's scheme). Staging reuse: the
// issuing thread waits for its bulk reads (wait_group.read 0) just before the next tile's
// consumers barrier, and every thread rewrites the image only after that barrier. Otherwise
// (EFFATTN_SM90_DQ=atomics) red.global.add.v2.f32 per fragment pair into [B, tokens, H, D].
// kDqTiled is a template parameter rather than a runtime flag: one kernel carrying both paths
// spilled more than the tiled path alone.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "effattn/cuda/attn_bwd_sm90_fused.cuh"
#include "effattn/cuda/dq_tile_layout.cuh"
#include "effattn/cuda/sm90_ptx.cuh"
#include "effattn/cuda/sm90_tma.cuh"

namespace effattn {
namespace cuda {

// Tensor maps of the backward's Q and dO ([B, N, H, D], sm90_encode_rows_map) for the TMA
// producer (a __grid_constant__ kernel parameter; unused without kTma).
struct Sm90BwdTmaMaps {
  CUtensorMap q;
  CUtensorMap dout;
};

// This thread's part of a 64 x 64 dQ block (dq[4 n + 2 rr + e]: query row qr0 + 8 rr, column
// n * 8 + 2 qid + e) into the shared-memory image `stg` of its tile-contiguous accumulator block
// (dq_tile_layout.cuh: pair index XOR 4 (row & 7), row & 7 = grp for both rows): 16 8-byte
// stores, conflict-free per half-warp.
// stg is 1024-aligned, so bits 5..7 of stg + 256 qr0 + 8 qid are 0 and fragment n's address is
// the n = 0 one XOR 32 n: one base register instead of 8 loop-invariant addresses.
__device__ __forceinline__ void sm90_bwd_stage_dq(const float (&dq)[32], uint32_t stg, int qr0, int grp, int qid) {
  const uint32_t a0 = stg + dq_frag_byte_offset(qr0, grp, qid, 0);
#pragma unroll
  for (int n = 0; n < 8; ++n) {
    const uint32_t a = a0 ^ static_cast<uint32_t>(n << 5);
#pragma unroll
    for (int rr = 0; rr < 2; ++rr)
      sm90::st_shared_v2_f32(a + rr * 8 * 256, dq[4 * n + 2 * rr], dq[4 * n + 2 * rr + 1]);
  }
}

// Same block with half as many atomics: lanes qid, qid ^ 1 swap halves so that the even
// lane holds 4 consecutive columns of row qr0 and the odd lane those of row qr0 + 8.
__device__ __forceinline__ void sm90_bwd_red_dq_v4(float* dq_acc, const float (&dq)[32], int64_t o0, int64_t o1,
                                                   int col0, int qid) {
  const bool odd = qid & 1;
  const int64_t o = odd ? o1 : o0;
  float* row = dq_acc + o + col0 + (qid & 2) * 2;
#pragma unroll
  for (int n = 0; n < 8; ++n) {
    // Even lanes send their row-qr0+8 pair and keep row qr0; odd lanes the other way round.
    const float s0 = odd ? dq[4 * n] : dq[4 * n + 2];
    const float s1 = odd ? dq[4 * n + 1] : dq[4 * n + 3];
    const float r0 = __shfl_xor_sync(0xffffffffu, s0, 1);
    const float r1 = __shfl_xor_sync(0xffffffffu, s1, 1);
    const float k0 = odd ? dq[4 * n + 2] : dq[4 * n];
    const float k1 = odd ? dq[4 * n + 3] : dq[4 * n + 1];
    if (o >= 0) {
      if (odd) sm90::red_add_v4_f32(row + n * 8, r0, r1, k0, k1);
      else sm90::red_add_v4_f32(row + n * 8, k0, k1, r0, r1);
    }
  }
}

// The key tiles of a 128-key CTA and the union of their query ranges (setup_k_pair).
template <class Policy>
struct CtaTiles {
  typename Policy::KTile kt[2];
  typename Policy::QRange qr;
};

// kDqTiled: the layout has the two dQ staging images only where the kernel uses them, so the
// atomics instantiation (EFFATTN_SM90_DQ=atomics, the A/B baseline) keeps the larger L1
// carveout.
template <int D, bool kDqTiled = true>
struct Sm90BwdFused128Config {
  static_assert(D == 128, "SM90 128-key fused backward: head dim 128");
  static constexpr int kRows = 64;  // keys per consumer warpgroup; query rows per tile
  static constexpr int kThreads = 384;
  static constexpr int kStages = 2;  // 3 does not fit with the dQ staging images
  static constexpr int kTile = kRows * D * 2;
  static constexpr int kDsBytes = 2 * kRows * kRows * 2;  // [128 keys][64 queries] 16-bit
  // K (two 64-key tiles), V (two), per stage Q and dO, two dS^T panels, two dQ staging images
  // (all multiples of 8 KB: 1024-aligned), per stage lse / delta and the tile metadata.
  static constexpr int kOffK = 0;                            // + half * kTile
  static constexpr int kOffV = 2 * kTile;                    // + half * kTile
  static constexpr int kOffQ = 4 * kTile;                    // + stage * kTile
  static constexpr int kOffDO = kOffQ + kStages * kTile;     // + stage * kTile
  static constexpr int kOffDS = kOffDO + kStages * kTile;    // + buffer * kDsBytes
  // dQ staging images of the tile-contiguous accumulator, one 16 KB block per half (1024-
  // aligned like everything before it; the bulk copy needs 16); none without kDqTiled.
  static constexpr int kOffStg = kOffDS + 2 * kDsBytes;      // + half * kDqBlockBytes
  static constexpr int kStgBytes = kDqTiled ? 2 * kDqBlockBytes : 0;
  static constexpr int kOffRows = kOffStg + kStgBytes;       // + stage * kRowBytes
  static constexpr int kRowBytes = kRows * (4 + 4);          // lse, delta
  // Tile metadata per stage: key masks [2 halves][kRows] uint64, dQ offsets [kRows] int64
  // (tiled: entry 0 = the tile's block, -1: none; atomics: per row, -1: padding row), flags
  // (bit h: half h needs element masks; bit 2: the tile has a valid row).
  static constexpr int kMetaMask = 0;
  static constexpr int kMetaDqo = 2 * kRows * 8;
  static constexpr int kMetaFlags = 3 * kRows * 8;
  static constexpr int kMetaBytes = kMetaFlags + 16;
  static constexpr int kOffMeta = kOffRows + kStages * kRowBytes;  // + stage * kMetaBytes
  // The CTA's key tiles and query range (CtaTiles), read from here by both roles so that
  // neither keeps them in registers across its loop (setmaxnreg budgets: 40 / 232).
  static constexpr int kOffTiles = kOffMeta + kStages * kMetaBytes;
  static constexpr int kTilesBytes = 256;
  static constexpr int kOffBars = kOffTiles + kTilesBytes;  // kv, full[S], empty[S]
  static constexpr int kSmem = kOffBars + (1 + 2 * kStages) * 8 + 1024;
  // 1 CTA of 384 threads per SM: launched with 168 registers per thread (64512 in all);
  // setmaxnreg must keep 128 x producer + 256 x consumer within that (both multiples of 8).
  // 40 / 232: at 224 ptxas serialises the consumers' wgmmas (C7512: each one waited for before
  // the next issues); the producer spills ~140-280 B at 40 (nvcc 13), kept small by reading the
  // CTA's tiles from shared memory (CtaTiles): spilled values live in the L1 that the ~200 KB of
  // shared memory leave (~27 KB), and 450 B per thread did not fit (H200: 9.3 ms vs 8.4).
#ifdef EFFATTN_FUSED128_PREGS
  static constexpr int kProducerRegs = EFFATTN_FUSED128_PREGS;  // tuning: 24, 40 or 56
#else
  static constexpr int kProducerRegs = 40;
#endif
  static constexpr int kConsumerRegs = (64512 - 128 * kProducerRegs) / 256;
  static_assert(kConsumerRegs % 8 == 0 && 128 * kProducerRegs + 256 * kConsumerRegs <= 64512,
                "setmaxnreg split");
  static_assert(kSmem <= 227 * 1024, "shared memory");
  static_assert(kOffStg % 1024 == 0 && D == 2 * kDqBlockCols && kRows == kDqTileRows, "dQ staging layout");
  static_assert(kOffMeta % 8 == 0 && kMetaBytes % 8 == 0, "metadata alignment");
  // `full` arrivals per stage: cp.async completions (every producer thread, or with TMA only
  // the lse / delta threads), one release arrival per producer warp after its metadata, and
  // with TMA the expect_tx arrival of the issuing thread.
  static constexpr uint32_t full_count(bool tma) { return tma ? kRows + 4 + 1 : 128 + 4; }
};

// Producer side of one query tile, in two steps so that the policy arithmetic of tile it runs
// before the producer waits for its ring stage (while the consumers still work on tile it - 2)
// and only the copies and stores follow the release:
//   sm90_bwd128_prepare_tile: this thread's part of the tile in registers (no shared memory);
//   sm90_bwd128_commit_tile:  Q, dO, lse, delta copies, the metadata stores, the arrivals.
// (Computed after the wait, the arithmetic delayed every stage: the consumers spent ~20 % of
// their time waiting for `full`, ncu, sixth session.)
struct Bwd128TileLoad {
  const float* lse_src;  // this row's lse / delta (threads < 64); nullptr: padding row
  const float* dlt_src;
  int64_t oq, odo;       // cp.async producer: row offsets of this thread's gather rows (-1: none)
  int64_t dqo;           // tiled: the tile's block (thread 0); atomics: this row's offset (-1: none)
  uint64_t mask;         // row tid % 64 of half tid / 64 (where that half needs masks)
  int tok;               // TMA: token of row 0
  uint32_t flags;        // bit h: half h needs masks; bit 2: the tile has a valid row
};

template <int D, class Policy, bool kDqTiled, bool kTma>
__device__ __forceinline__ Bwd128TileLoad sm90_bwd128_prepare_tile(const BwdFusedArgs& args, const Policy& policy,
                                                                   const CtaTiles<Policy>& tiles, int64_t b, int hq,
                                                                   int qi, int tid, int warp, int lane) {
  constexpr int R = Sm90BwdFused128Config<D, kDqTiled>::kRows;
  Bwd128TileLoad tl;
  typename Policy::QTile qt;
  const bool any = policy.q_tile(tiles.qr, qi, qt);
  tl.tok = 0;
  tl.oq = tl.odo = -1;
  if constexpr (kTma) {
    if (tid == 0 && any) {
      int64_t c[3];
      policy.q_coord(qt, 0, c);  // token of row 0 (valid: the tile has a valid row)
      tl.tok = static_cast<int>(c[0]);
    }
  } else if (any && lane < R / 4) {
    int64_t c[3];
    if (policy.q_coord(qt, warp * (R / 4) + lane, c)) {
      tl.oq = token_offset(args.sq, c);
      tl.odo = token_offset(args.sdo, c);
    }
  }
  tl.lse_src = tl.dlt_src = nullptr;
  tl.dqo = -1;
  if (tid < R) {
    int64_t c[3];
    if (any && policy.q_coord(qt, tid, c)) {
      tl.lse_src = args.lse + b * args.slse.batch + hq * args.slse.head + token_offset(args.slse, c);
      tl.dlt_src = args.delta + b * args.sdelta.batch + hq * args.sdelta.head + token_offset(args.sdelta, c);
      if constexpr (!kDqTiled) tl.dqo = b * args.sdqa.batch + hq * args.sdqa.head + token_offset(args.sdqa, c);
    }
  }
  if constexpr (kDqTiled) {
    if (tid == 0 && any) {
      const int64_t sl = policy.dq_slot(qt);
      if (sl >= 0 && sl < args.dqt_slots) tl.dqo = b * args.dqt_batch + hq * args.dqt_head + sl * dq_slot_floats(D);
    }
  }
  // A tile without valid rows gets empty masks in both halves: P = 0. The cp.async producer
  // zero-fills its Q / dO; the TMA producer loads nothing for it, which is safe only because
  // NaPolicy (the one policy the launchers pair with TMA) never lists such a tile in a query
  // range (every tile up to q_last >> q_log holds a valid row): stale non-finite Q / dO would
  // reach dS = P (dP - delta) as NaN.
  const bool m0 = !any || policy.needs_mask(qt, tiles.kt[0]);
  const bool m1 = !any || policy.needs_mask(qt, tiles.kt[1]);
  tl.flags = (m0 ? 1u : 0u) | (m1 ? 2u : 0u) | (any ? 4u : 0u);
  const int h = tid / R;
  tl.mask = any && (h == 0 ? m0 : m1) ? policy.row_mask64(policy.row_info(qt, tid % R), tiles.kt[h]) : 0ull;
  return tl;
}

// `load` false (timing probe 8) skips the copies and stores but keeps the arrivals.
template <typename T, int D, bool kDqTiled, bool kTma>
__device__ __forceinline__ void sm90_bwd128_commit_tile(const BwdFusedArgs& args, const Sm90BwdTmaMaps& maps,
                                                        const Bwd128TileLoad& tl, int64_t b, int hq, uint32_t sQ,
                                                        uint32_t sDO, unsigned char* rows, unsigned char* meta,
                                                        uint32_t bar, bool load, int tid, int warp, int lane) {
  using Cfg = Sm90BwdFused128Config<D, kDqTiled>;
  constexpr int R = Cfg::kRows;
  const bool any = tl.flags & 4u;
  if (load) {
    if constexpr (kTma) {
      if (tid == 0) {
        sm90::tma_arrive_expect_tx(bar, any ? 2 * Cfg::kTile : 0);
        if (any) {
          const int bz = static_cast<int>(b);
#pragma unroll
          for (int pn = 0; pn < D / 64; ++pn) {
            sm90::tma_load_4d(sQ + pn * (R * 128), &maps.q, bar, pn * 64, tl.tok, hq, bz);
            sm90::tma_load_4d(sDO + pn * (R * 128), &maps.dout, bar, pn * 64, tl.tok, hq, bz);
          }
        }
      }
    } else {
      sm90_load_rows<D, R>(sQ, static_cast<const T*>(args.q) + b * args.sq.batch + hq * args.sq.head, tl.oq,
                           warp, lane);
      sm90_load_rows<D, R>(sDO, static_cast<const T*>(args.dout) + b * args.sdo.batch + hq * args.sdo.head,
                           tl.odo, warp, lane);
    }
    // lse and delta of row tid (zero for padding rows: with zero Q and dO they give dS = 0).
    if (tid < R) {
      float* lse = reinterpret_cast<float*>(rows);
      const bool valid = tl.lse_src != nullptr;
      cp_async_4(smem_u32(lse + tid), valid ? tl.lse_src : args.lse, valid);
      cp_async_4(smem_u32(lse + R + tid), valid ? tl.dlt_src : args.delta, valid);
      if constexpr (!kDqTiled) reinterpret_cast<int64_t*>(meta + Cfg::kMetaDqo)[tid] = tl.dqo;
    }
    if (tl.flags & (1u << (tid / R))) reinterpret_cast<uint64_t*>(meta + Cfg::kMetaMask)[tid] = tl.mask;
    if (tid == 0) {
      if constexpr (kDqTiled) reinterpret_cast<int64_t*>(meta + Cfg::kMetaDqo)[0] = tl.dqo;
      *reinterpret_cast<uint32_t*>(meta + Cfg::kMetaFlags) = tl.flags;
    }
  } else if (kTma && tid == 0) {
    sm90::tma_arrive_expect_tx(bar, 0);
  }
  if (!kTma || tid < R) sm90::mbar_arrive_cp_async(bar);
  sm90::mbar_arrive_warp(bar, lane);  // release: this warp's metadata stores
}

template <typename T, int D, class Policy, bool kDqTiled, bool kTma = false>
__global__ void __launch_bounds__(384, 1)
    attn_bwd_fused128_sm90_kernel(const BwdFusedArgs args, const Policy policy,
                                  const __grid_constant__ Sm90BwdTmaMaps maps) {
#ifdef EFFATTN_SM90_ENABLED
  using Cfg = Sm90BwdFused128Config<D, kDqTiled>;
  constexpr int R = Cfg::kRows;
  constexpr int S = Cfg::kStages;

  extern __shared__ unsigned char smem_raw[];
  const Sm90SmemPipe sp = sm90_smem_pipe<S>(smem_raw, Cfg::kOffK, Cfg::kOffV, Cfg::kOffBars);
  const uint32_t base = sp.base, sK = sp.once0, sV = sp.once1;
  const uint32_t bar_kv = sp.bar_once, bar_full = sp.bar_full, bar_empty = sp.bar_empty;
  unsigned char* smem = sp.ptr;
  auto rows_of = [&](int st) { return smem + Cfg::kOffRows + st * Cfg::kRowBytes; };
  auto meta_of = [&](int st) { return smem + Cfg::kOffMeta + st * Cfg::kMetaBytes; };

  const int tid = threadIdx.x;
  const int64_t b = blockIdx.z;
  const int kvh = blockIdx.y;

  static_assert(sizeof(CtaTiles<Policy>) <= Cfg::kTilesBytes, "CtaTiles region");
  const CtaTiles<Policy>& tiles = *reinterpret_cast<const CtaTiles<Policy>*>(smem + Cfg::kOffTiles);
  int total;
  {
    CtaTiles<Policy> t;
    if (!policy.setup_k_pair(static_cast<int64_t>(blockIdx.x), t.kt[0], t.kt[1], t.qr)) return;
    total = args.kv_group * t.qr.count;
    if (tid == 0) *reinterpret_cast<CtaTiles<Policy>*>(smem + Cfg::kOffTiles) = t;  // before the CTA barrier below
  }

  sm90_init_pipeline(bar_kv, 128, bar_full, Cfg::full_count(kTma), bar_empty, 8 /* one per consumer warp */, S);

  if (tid < 128) {
    // ---------------- producer: K, V of both halves once, then one query tile per stage ----
    sm90::regs_dealloc<Cfg::kProducerRegs>();
    const int warp = tid / 32, lane = tid % 32;
    if (kTma && tid == 0) {
      sm90::tma_prefetch_map(&maps.q);
      sm90::tma_prefetch_map(&maps.dout);
    }
    const T* k_base = static_cast<const T*>(args.k) + b * args.sk.batch + kvh * args.sk.head;
    const T* v_base = static_cast<const T*>(args.v) + b * args.sv.batch + kvh * args.sv.head;
    sm90_load_row_pair<D, R>(
        sK, k_base, args.sk, sV, v_base, args.sv,
        [&](int r, int64_t(&c)[3]) { return policy.k_coord(tiles.kt[0], r, c); }, warp, lane);
    sm90_load_row_pair<D, R>(
        sK + Cfg::kTile, k_base, args.sk, sV + Cfg::kTile, v_base, args.sv,
        [&](int r, int64_t(&c)[3]) { return policy.k_coord(tiles.kt[1], r, c); }, warp, lane);
    sm90::mbar_arrive_cp_async(bar_kv);
    // Tile it = member * count + qi (query head kvh * G + member), counted without divisions.
    int qi = 0, member = 0;
    for (int it = 0; it < total; ++it) {
      const int st = it % S;
      const int hq = kvh * args.kv_group + member;
      const Bwd128TileLoad tl =
          sm90_bwd128_prepare_tile<D, Policy, kDqTiled, kTma>(args, policy, tiles, b, hq, qi, tid, warp, lane);
      if (it >= S) sm90::mbar_wait(bar_empty + 8 * st, ((it / S) + 1) & 1);
      sm90_bwd128_commit_tile<T, D, kDqTiled, kTma>(args, maps, tl, b, hq, base + Cfg::kOffQ + st * Cfg::kTile,
                                                   base + Cfg::kOffDO + st * Cfg::kTile, rows_of(st), meta_of(st),
                                                   bar_full + 8 * st, it < S || !(args.probe & 8), tid, warp, lane);
      if (++qi == tiles.qr.count) {
        qi = 0;
        ++member;
      }
    }
    cp_async_wait<0>();
    return;
  }

  // ---------------- consumers: warpgroup `half` owns keys [64 half, 64 half + 64) ----------
  sm90::regs_alloc<Cfg::kConsumerRegs>();
  // Warp-uniform through the shuffle (as CUTLASS's canonical_warp_group_idx), so that the
  // shared-memory descriptors built from it stay in uniform registers.
  const int half = __shfl_sync(0xffffffffu, (tid - 128) / 128, 0);
  const int wtid = (tid - 128) % 128;
  const int warp = wtid / 32;
  const int lane = wtid % 32;
  const int grp = lane / 4;
  const int qid = lane % 4;
  const int kr0 = warp * 16 + grp;  // this thread's keys (S^T rows, of its half): kr0, kr0 + 8
  const int qr0 = kr0;              // and its dQ rows (queries of the tile): qr0, qr0 + 8
  const uint32_t sKh = sK + half * Cfg::kTile;
  const uint32_t sVh = sV + half * Cfg::kTile;
  // B of dQ: K MN-major, column panel `half` of both key tiles.
  const uint64_t d_kh = sm90::desc_mnmajor(sK + half * (R * 128), R * 128);

  // Keys past the sequence (zero K, V rows; the whole second half of a pair past the end)
  // get P = 0 even where no mask is applied.
  bool kvalid[2];
  {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      int64_t c[3];
      kvalid[rr] = policy.k_coord(tiles.kt[half], kr0 + rr * 8, c);
    }
  }

  float acc_dk[D / 2], acc_dv[D / 2];
#pragma unroll
  for (int j = 0; j < D / 2; ++j) acc_dk[j] = acc_dv[j] = 0.f;

  // Named barrier 1 over both consumer warpgroups (the producer never joins it).
  auto consumers_sync = [] { asm volatile("bar.sync 1, 256;\n" ::: "memory"); };

  sm90::mbar_wait(bar_kv, 0);
  for (int it = 0; it < total; ++it) {
    const int st = it % S;
    sm90::mbar_wait(bar_full + 8 * st, (it / S) & 1);
    const uint32_t sQ = base + Cfg::kOffQ + st * Cfg::kTile;
    const uint32_t sDO = base + Cfg::kOffDO + st * Cfg::kTile;
    const uint32_t sDS = base + Cfg::kOffDS + (it % 2) * Cfg::kDsBytes;  // 128-key panel
    const uint32_t sDSh = sDS + half * (R * 128);                         // this half's keys
    const float* lse = reinterpret_cast<const float*>(rows_of(st));
    const float* dlt = lse + R;
    const unsigned char* meta = meta_of(st);
    const bool masked = ((*reinterpret_cast<const uint32_t*>(meta + Cfg::kMetaFlags) >> half) & 1u) &&
                        !(args.probe & 16);
    float s[32], dp[32];
    sm90_bwd_issue_s_dp<T, D, R>(s, dp, sKh, sQ, sVh, sDO);
    sm90::wgmma_wait<1>();
    sm90::fence_regs(s);
    if (!(args.probe & 2))
      sm90_bwd_probs(s, lse, reinterpret_cast<const uint64_t*>(meta + Cfg::kMetaMask) + half * R, masked, kvalid,
                     kr0, qid, args.scale_log2);
    sm90::wgmma_wait<0>();
    sm90::fence_regs(dp);
    if (!(args.probe & 2)) sm90_bwd_dscores(dp, s, dlt, qid);
    uint32_t pf[4][4];
    sm90_pack_a<T>(s, pf);
    sm90_bwd_store_ds<T>(dp, sDSh, kr0, qid);
    // dS^T as register A fragments too: dK += dS^T Q is an RS product (no operand reads of the
    // dS^T panel).
    uint32_t dsf[4][4];
    sm90_pack_a<T>(dp, dsf);

    // dV += P^T dO now (P^T from registers; it needs no dS). MN-major operand descriptors are
    // built where they are used (stepped by desc_advance), keeping them out of the S^T / dP^T
    // phase's registers.
    const uint64_t d_do = sm90::desc_mnmajor(sDO, R * 128);
    sm90::fence_regs(acc_dv);
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      sm90::wgmma_rs<T, D, 1>(acc_dv, pf[kk], sm90::desc_advance(d_do, kk * 16 * 128), 1);
    sm90::wgmma_commit();
    // Tile-contiguous dQ: this half's staging image is rewritten after the barrier below, so
    // its previous bulk reduction must have finished reading it (the issuing thread waits; the
    // barrier orders the other threads' stores after that).
    if (kDqTiled && wtid == 0) sm90::bulk_wait_read<0>();
    consumers_sync();  // both halves' dS^T rows are in place

    float dq[32];
    const uint64_t d_ds = sm90::desc_mnmajor(sDS, R * 128);  // A of dQ: the dS^T panel, transposed
    const uint64_t d_q = sm90::desc_mnmajor(sQ, R * 128);
    sm90::fence_regs(acc_dk);
    sm90::wgmma_fence();
    // dQ columns [64 half, 64 half + 64): dS (A = the 128-key dS^T panel read MN-major, i.e.
    // transposed) times K (B MN-major: keys 16 kk.. of tile kk / 4, column panel `half`).
#pragma unroll
    for (int kk = 0; kk < 8; ++kk)
      sm90::wgmma_ss_tt<T, 64, 1, 1>(dq, sm90::desc_advance(d_ds, kk * 16 * 128),
                                     sm90::desc_advance(d_kh, (kk / 4) * Cfg::kTile + (kk % 4) * 16 * 128), kk > 0);
    sm90::wgmma_commit();
    // dK += dS^T Q.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      sm90::wgmma_rs<T, D, 1>(acc_dk, dsf[kk], sm90::desc_advance(d_q, kk * 16 * 128), 1);
    sm90::wgmma_commit();
    sm90::wgmma_wait<1>();  // dV and dQ done: P^T's registers are free from here
    sm90::fence_regs(dq);
    sm90::fence_regs(acc_dv);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) sm90::fence_regs(pf[kk]);
    if (!(args.probe & 1)) {
      const int64_t* dqo = reinterpret_cast<const int64_t*>(meta + Cfg::kMetaDqo);
      if constexpr (kDqTiled) {
        // Block image -> async proxy -> this half's 128 threads -> one 16 KB bulk reduction.
        const int64_t o = dqo[0];  // the same for the whole warpgroup
        if (o >= 0) {
          const uint32_t stg = base + Cfg::kOffStg + half * kDqBlockBytes;  // this half's image
          sm90_bwd_stage_dq(dq, stg, qr0, grp, qid);
          sm90::fence_proxy_async_smem();
          // Named barrier 2 + half over this warpgroup (immediate ids: with a register id
          // ptxas reserves all 16 barriers).
          if (half == 0) {
            asm volatile("bar.sync 2, 128;\n" ::: "memory");
          } else {
            asm volatile("bar.sync 3, 128;\n" ::: "memory");
          }
          if (wtid == 0 && !(args.probe & 64)) {
            sm90::bulk_reduce_add_f32(args.dq_acc + o + half * kDqBlockFloats, stg, kDqBlockBytes);
            sm90::bulk_commit();
          }
        }
      } else if (args.probe & 32) {
        sm90_bwd_red_dq_v4(args.dq_acc, dq, dqo[qr0], dqo[qr0 + 8], half * 64, qid);
      } else {
        sm90_bwd_red_dq(args.dq_acc, dq, dqo[qr0], dqo[qr0 + 8], half * 64, qid);
      }
    }
    sm90::wgmma_wait<0>();
    sm90::fence_regs(acc_dk);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) sm90::fence_regs(dsf[kk]);
    sm90::mbar_arrive_warp(bar_empty + 8 * st, lane);  // Q, dO, lse, delta, metadata of this stage done
  }

  // The bulk reductions read shared memory until they complete: done before the CTA exits.
  if (kDqTiled && wtid == 0) sm90::bulk_wait<0>();
  sm90_bwd_store_dkdv<T, D>(args, policy, tiles.kt[half], b, kvh, kr0, qid, acc_dk, acc_dv);
#else
  __trap();
#endif
}

}  // namespace cuda
}  // namespace effattn
