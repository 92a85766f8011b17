// Hopper (sm_90a) fused attention forward core: wgmma + warp specialisation, templated on
// the same tile policies as the SM80 core (na_policy.cuh documents the interface).
//
// One CTA = one query tile of BM = 128 rows for one (batch, head), 3 warpgroups:
//   warpgroup 0: producer. Gathers Q once and then each step's K and V rows (policy
//     coordinates, any strides) with cp.async into a kStages-deep ring of shared-memory
//     stages; cp.async completion arrives on the stage's `full` mbarrier. All four warps
//     copy (one warp alone could not issue the copies and their address arithmetic within
//     a step's compute time: that version measured 1.5x slower than the SM80 core).
//     kTma: where every query tile and every 64-key policy tile is a run of consecutive
//     tokens (1D NA with dilation 1, dense block-sparse), one thread instead issues TMA boxes
//     of 64 rows x 64 columns (sm90_tma.cuh) and arms the stage's `full` barrier with the
//     stage's byte count; the consumers and the ring protocol are the same. Registers
//     then move to the consumers (setmaxnreg 40 / 232 instead of 72 / 208).
//     kPersist (TMA, NaPolicy): #SM CTAs loop over the tiles (see the kernel's comment).
//   warpgroups 1, 2: consumers, 64 query rows each. Per step j (kPair key tiles):
//       issue S_j = Q K_j^T  and  O += P_{j-1} V_{j-1}   (both asynchronous)
//       wait for S_j; mask, online softmax of S_j        (overlaps the P V wgmma)
//       wait for P V; release stage j-1 (`empty`); rescale O; P_j = pack(S_j)
//     P is wgmma's A operand from registers; Q is too for kPair = 1, and is read from shared
//     memory for kPair = 2 (the default: EFFATTN_SM90_PAIR=1 selects 64-key steps).
//     With args.pingpong the two consumer warpgroups take turns issuing their wgmmas (named
//     barriers 1 and 2, as in FlashAttention-3), so one group's softmax runs while the
//     other's matrix products keep the tensor cores busy instead of both competing at once.
// The policies hand out key tiles of 64 tokens (row_mask64); one step of the consumers takes
// kPair of them (kPair = 2: S is 64 x 128 per warpgroup, half the per-step overhead).
// Softmax in fp32 with exp2.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "effattn/cuda/attn_fwd_sm80.cuh"  // FwdArgs, CoreStrides, token_offset
#include "effattn/cuda/sm80_ptx.cuh"
#include "effattn/cuda/sm90_ptx.cuh"
#include "effattn/cuda/sm90_tma.cuh"

namespace effattn {
namespace cuda {

template <int D, int kPair>
struct Sm90FwdConfig {
  static_assert(D == 64 || D == 128, "SM90 forward core: head dims 64 and 128");
  static_assert(kPair == 1 || kPair == 2, "SM90 forward core: 1 or 2 key tiles per step");
  static constexpr int BM = 128;         // query rows: 64 per consumer warpgroup
  static constexpr int NB = 64 * kPair;  // key rows per step
  static constexpr int kThreads = 384;
  static constexpr int kTileQ = BM * D * 2;
  static constexpr int kTileKV = NB * D * 2;
  // As many K / V stages as fit next to Q in 227 KB (+ 1 KB alignment slack, barriers).
  static constexpr int kStages = (227 * 1024 - 1024 - 256 - kTileQ) / (2 * kTileKV) < 8
                                     ? (227 * 1024 - 1024 - 256 - kTileQ) / (2 * kTileKV)
                                     : 8;
  static_assert(kStages >= 2, "SM90 forward core: not enough shared memory for 2 stages");
  static constexpr int kOffK = kTileQ;
  static constexpr int kOffV = kOffK + kStages * kTileKV;
  static constexpr int kOffBars = kOffV + kStages * kTileKV;  // q_full, full[S], empty[S], q_empty
  // + 1024: the dynamic shared memory base is aligned up to the swizzle's 1024 bytes.
  static constexpr int kSmemBytes = kOffBars + (2 + 2 * kStages) * 8 + 1024;
  // kPair = 1 keeps Q in registers (A operand from registers: shared memory then streams only
  // K and V, which matters at N = 64); kPair = 2 needs those registers for the 64 x 128 S and
  // P, and reads Q from shared memory (S = 64 x 128 per wgmma keeps that within bandwidth).
  static constexpr bool kQInRegs = kPair == 1;
  // 128 * producer + 256 * consumer registers <= 64 K. The TMA producer is one thread issuing
  // copies, so it hands more registers to the consumers (the persistent loop needs them).
  static constexpr int kProducerRegs = 72;
  static constexpr int kConsumerRegs = 208;
  static constexpr int kProducerRegsTma = 40;
  static constexpr int kConsumerRegsTma = 232;
};

// Producer warpgroup: cp.async of a ROWS x D tile. Warp w owns rows [w R, (w + 1) R),
// R = ROWS / 4; lane l < R holds the element offset of row w R + l in `my_off` (< 0: padding
// row, zero-filled). Each instruction covers 32 / (D / 8) whole rows (128-byte lines); the
// offsets travel by shuffle, so no shared-memory table or producer barrier is needed.
template <int D, int ROWS, typename T>
__device__ __forceinline__ void sm90_load_rows(uint32_t s_tile, const T* base, int64_t my_off,
                                               int warp, int lane) {
  constexpr int C = D / 8;
  constexpr int RPI = 32 / C;
  constexpr int R = ROWS / 4;
  static_assert(R <= 32 && R % RPI == 0, "sm90_load_rows: tile shape");
  const int ch = lane % C;
#pragma unroll
  for (int t = 0; t < R / RPI; ++t) {
    const int rl = t * RPI + lane / C;
    const int64_t o = __shfl_sync(0xffffffffu, my_off, rl);
    const bool valid = o >= 0;
    cp_async_16(s_tile + sm90::panel_offset<ROWS>(warp * R + rl, ch), valid ? base + o + ch * 8 : base,
                valid);
  }
}

// Producer warpgroup: the same ROWS rows of two tensors (K and V, or Q and dO), row r at
// coordinates coord_fn(r, c) (false: padding row), into tiles sa and sb.
template <int D, int ROWS, typename T, typename CoordFn>
__device__ __forceinline__ void sm90_load_row_pair(uint32_t sa, const T* base_a, const CoreStrides& st_a,
                                                   uint32_t sb, const T* base_b, const CoreStrides& st_b,
                                                   CoordFn&& coord_fn, int warp, int lane) {
  int64_t oa = -1, ob = -1;
  if (lane < ROWS / 4) {
    int64_t c[3];
    if (coord_fn(warp * (ROWS / 4) + lane, c)) {
      oa = token_offset(st_a, c);
      ob = token_offset(st_b, c);
    }
  }
  sm90_load_rows<D, ROWS>(sa, base_a, oa, warp, lane);
  sm90_load_rows<D, ROWS>(sb, base_b, ob, warp, lane);
}

// Shared memory of the warp-specialised SM90 backward kernels: the dynamic allocation from its
// first 1024-byte aligned byte (the 128-byte swizzled panels need that alignment) as a shared
// address and a pointer, the two tiles loaded once (K, V; the dQ kernel: Q, dO) and the
// pipeline's mbarriers at off_bars: the once-loaded tiles' barrier, then full[S], empty[S].
struct Sm90SmemPipe {
  uint32_t base;
  unsigned char* ptr;
  uint32_t once0, once1;
  uint32_t bar_once, bar_full, bar_empty;
};
template <int S>
__device__ __forceinline__ Sm90SmemPipe sm90_smem_pipe(unsigned char* raw_ptr, int off0, int off1, int off_bars) {
  const uint32_t raw = smem_u32(raw_ptr);
  Sm90SmemPipe m;
  m.base = (raw + 1023u) & ~1023u;
  m.ptr = raw_ptr + (m.base - raw);
  m.once0 = m.base + off0;
  m.once1 = m.base + off1;
  m.bar_once = m.base + off_bars;
  m.bar_full = m.bar_once + 8;
  m.bar_empty = m.bar_full + 8 * S;
  return m;
}

// Thread 0 initialises the pipeline's mbarriers: one for the tiles loaded once, `full` and
// `empty` per stage; then the whole CTA syncs (the only CTA-wide barrier of these kernels).
__device__ __forceinline__ void sm90_init_pipeline(uint32_t bar_once, uint32_t once_count, uint32_t bar_full,
                                                   uint32_t full_count, uint32_t bar_empty,
                                                   uint32_t empty_count, int stages) {
  if (threadIdx.x == 0) {
    sm90::mbar_init(bar_once, once_count);
    for (int s = 0; s < stages; ++s) {
      sm90::mbar_init(bar_full + 8 * s, full_count);
      sm90::mbar_init(bar_empty + 8 * s, empty_count);
    }
    sm90::mbar_init_fence();
  }
  __syncthreads();
}

// kTma: the producer loads with TMA from `maps` (see the header comment for the policies this
// is valid for: row r of the query tile is token q_coord(0) + r, column c of a key tile is
// token k_coord(0) + c, out-of-range rows fall outside [0, N) or are masked columns).
// kPersist (with kTma, for policies that do not read blockIdx: NaPolicy): gridDim.x CTAs,
// CTA c computes the linear tiles c, c + gridDim.x, ... < num_tiles (query tile fastest,
// then head, then batch). The K/V ring and its phases run on across tiles, so the producer
// streams the next tile's first stages (and, once the consumers release Q through
// `q_empty`, its Q) while the consumers finish the current tile and write its output.
template <typename T, int D, int kPair, class Policy, bool kTma = false, bool kPersist = false>
__global__ void __launch_bounds__(384, 1)
    attn_fwd_sm90_kernel(const FwdArgs args, const Policy policy, const __grid_constant__ Sm90TmaMaps maps,
                         const int64_t num_tiles) {
  static_assert(!kPersist || kTma, "SM90 forward: the persistent schedule needs the TMA producer");
#ifdef EFFATTN_SM90_ENABLED
  using Cfg = Sm90FwdConfig<D, kPair>;
  constexpr int BM = Cfg::BM;
  constexpr int NB = Cfg::NB;
  constexpr int S = Cfg::kStages;
  using Tr = ElemTraits<T>;

  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t sQ = (raw + 1023u) & ~1023u;
  const uint32_t sK0 = sQ + Cfg::kOffK;
  const uint32_t sV0 = sQ + Cfg::kOffV;
  const uint32_t bar_q = sQ + Cfg::kOffBars;
  const uint32_t bar_full = bar_q + 8;          // + 8 * stage
  const uint32_t bar_empty = bar_full + 8 * S;  // + 8 * stage
  const uint32_t bar_q_empty = bar_empty + 8 * S;  // consumers done reading Q (kPersist)

  const int tid = threadIdx.x;

  // The CTA's tiles: one (blockIdx) or, persistent, every gridDim.x-th linear tile.
  const int64_t t_first = kPersist ? static_cast<int64_t>(blockIdx.x) : 0;
  const int64_t t_step = kPersist ? static_cast<int64_t>(gridDim.x) : 1;
  const int64_t t_end = kPersist ? num_tiles : 1;
  auto tile_at = [&](int64_t t, int64_t& q_lin, int& h, int64_t& b) {
    if constexpr (kPersist) {
      const int64_t nq = policy.num_q_tiles();
      q_lin = t % nq;
      const int64_t hb = t / nq;
      h = static_cast<int>(hb % args.heads);
      b = hb / args.heads;
    } else {
      q_lin = blockIdx.x;
      h = blockIdx.y;
      b = blockIdx.z;
    }
  };
  if constexpr (!kPersist) {
    typename Policy::QTile qt;
    if (!policy.setup_q_tile(static_cast<int64_t>(blockIdx.x), qt)) return;
  }

  // cp.async: every producer thread arrives (noinc); TMA: the issuing thread's expect_tx.
  if (kPersist && tid == 0) sm90::mbar_init(bar_q_empty, 256);  // fenced by the init below
  sm90_init_pipeline(bar_q, kTma ? 1 : 128, bar_full, kTma ? 1 : 128, bar_empty, 256, S);

  if (tid < 128) {
    // ---------------- producer ----------------
    sm90::regs_dealloc<kTma ? Cfg::kProducerRegsTma : Cfg::kProducerRegs>();
    if constexpr (kTma) {
      static_assert(NB == 64 * kPair && BM % kSm90TmaBoxRows == 0 && D % 64 == 0, "TMA box shapes");
      // A box is 64 rows of one 64-column panel; a tile of ROWS rows has panel p at
      // p * ROWS * 128 bytes and its rows contiguous (128 bytes each) inside the panel.
      if (tid == 0) {
        sm90::tma_prefetch_map(&maps.q);
        sm90::tma_prefetch_map(&maps.k);
        sm90::tma_prefetch_map(&maps.v);
        int g = 0;   // steps issued by this CTA before the current tile (ring position, phase)
        int it = 0;  // tiles before the current one (q_full / q_empty phase)
        for (int64_t t = t_first; t < t_end; t += t_step) {
          int64_t q_lin, b;
          int h;
          tile_at(t, q_lin, h, b);
          typename Policy::QTile qt;
          if (!policy.setup_q_tile(q_lin, qt)) continue;
          const int n_k = policy.num_k(qt);
          const int n_steps = (n_k + kPair - 1) / kPair;
          const int kvh = h / args.kv_group;
          const int bz = static_cast<int>(b);
          auto load_q = [&]() {
            int64_t c[3];
            policy.q_coord(qt, 0, c);  // token of row 0 (valid: the tile has a valid row)
            const int q_tok = static_cast<int>(c[0]);
            sm90::tma_arrive_expect_tx(bar_q, Cfg::kTileQ);
#pragma unroll
            for (int rb = 0; rb < BM / 64; ++rb)
#pragma unroll
              for (int pn = 0; pn < D / 64; ++pn)
                sm90::tma_load_4d(sQ + pn * (BM * 128) + rb * (64 * 128), &maps.q, bar_q, pn * 64,
                                  q_tok + rb * 64, h, bz);
          };
          auto load_step = [&](int j) {
            const int gj = g + j;
            const int stage = gj % S;
            if (gj >= S) sm90::mbar_wait(bar_empty + 8 * stage, ((gj / S) + 1) & 1);
            const uint32_t bar = bar_full + 8 * stage;
            sm90::tma_arrive_expect_tx(bar, 2 * Cfg::kTileKV);
#pragma unroll
            for (int u = 0; u < kPair; ++u) {
              // A missing last tile (n_k odd) reloads the step's first one: the consumers mask
              // those columns entirely, and the box's bytes keep the expected count exact.
              const int i = j * kPair + u < n_k ? j * kPair + u : j * kPair;
              const typename Policy::KTile kt = policy.k_tile(qt, i);
              int64_t c[3];
              policy.k_coord(kt, 0, c);  // token of column 0 (rows past N are zero-filled)
              const int k_tok = static_cast<int>(c[0]);
              const uint32_t ks = sK0 + stage * Cfg::kTileKV + u * (64 * 128);
              const uint32_t vs = sV0 + stage * Cfg::kTileKV + u * (64 * 128);
#pragma unroll
              for (int pn = 0; pn < D / 64; ++pn) {
                sm90::tma_load_4d(ks + pn * (NB * 128), &maps.k, bar, pn * 64, k_tok, kvh, bz);
                sm90::tma_load_4d(vs + pn * (NB * 128), &maps.v, bar, pn * 64, k_tok, kvh, bz);
              }
            }
          };
          // After the first tile, Q is free only once the previous tile's last S product is
          // done; the first S - 1 stages of this tile only need that tile's earlier stages
          // released, so they go first (the last stage of the previous tile is still in use).
          int j = 0;
          if (kPersist && it > 0) {
            for (; j < n_steps && j < S - 1; ++j) load_step(j);
            sm90::mbar_wait(bar_q_empty, (it - 1) & 1);
          }
          load_q();
          for (; j < n_steps; ++j) load_step(j);
          g += n_steps;
          ++it;
        }
      }
      return;
    }
    // cp.async producer: one tile per CTA (blockIdx).
    typename Policy::QTile qt;
    policy.setup_q_tile(static_cast<int64_t>(blockIdx.x), qt);
    const int n_k = policy.num_k(qt);
    const int n_steps = (n_k + kPair - 1) / kPair;
    const int64_t b = blockIdx.z;
    const int h = blockIdx.y;
    const int kvh = h / args.kv_group;
    const int warp = tid / 32, lane = tid % 32;
    const T* q_base = static_cast<const T*>(args.q) + b * args.sq.batch + h * args.sq.head;
    const T* k_base = static_cast<const T*>(args.k) + b * args.sk.batch + kvh * args.sk.head;
    const T* v_base = static_cast<const T*>(args.v) + b * args.sv.batch + kvh * args.sv.head;
    {
      int64_t c[3];
      const int64_t off = policy.q_coord(qt, tid, c) ? token_offset(args.sq, c) : -1;
      sm90_load_rows<D, BM>(sQ, q_base, off, warp, lane);
      sm90::mbar_arrive_cp_async(bar_q);
    }
    constexpr int R = NB / 4;  // key rows per producer warp and step
    for (int j = 0; j < n_steps; ++j) {
      const int stage = j % S;
      if (j >= S) sm90::mbar_wait(bar_empty + 8 * stage, ((j / S) + 1) & 1);
      int64_t ok = -1, ov = -1;
      if (lane < R) {
        const int row = warp * R + lane;
        const int i = j * kPair + row / 64;  // policy tile of this row
        if (i < n_k) {
          const typename Policy::KTile kt = policy.k_tile(qt, i);
          int64_t c[3];
          if (policy.k_coord(kt, row % 64, c)) {
            ok = token_offset(args.sk, c);
            ov = token_offset(args.sv, c);
          }
        }
      }
      sm90_load_rows<D, NB>(sK0 + stage * Cfg::kTileKV, k_base, ok, warp, lane);
      sm90_load_rows<D, NB>(sV0 + stage * Cfg::kTileKV, v_base, ov, warp, lane);
      sm90::mbar_arrive_cp_async(bar_full + 8 * stage);
    }
    cp_async_wait<0>();
    return;
  }

  // ---------------- consumers ----------------
  sm90::regs_alloc<kTma ? Cfg::kConsumerRegsTma : Cfg::kConsumerRegs>();
  const int wg = tid / 128 - 1;
  const int wtid = tid % 128;
  const int warp = wtid / 32;
  const int lane = wtid % 32;
  const int grp = lane / 4;
  const int qid = lane % 4;
  const int r0 = wg * 64 + warp * 16 + grp;  // this thread's rows: r0, r0 + 8

  int g = 0;   // steps consumed by this CTA before the current tile (ring position, phase)
  int it = 0;  // tiles before the current one (q_full phase)
  for (int64_t t = t_first; t < t_end; t += t_step) {
    int64_t q_lin, b;
    int h;
    tile_at(t, q_lin, h, b);
    typename Policy::QTile qt;
    if (!policy.setup_q_tile(q_lin, qt)) continue;
    const int n_k = policy.num_k(qt);               // policy key tiles (64 keys each)
    const int n_steps = (n_k + kPair - 1) / kPair;  // consumer steps

    const typename Policy::RowInfo ri[2] = {policy.row_info(qt, r0), policy.row_info(qt, r0 + 8)};

    // Q fragments (A operand of S = Q K^T), in registers for the whole tile (kQInRegs).
    constexpr int QF = Cfg::kQInRegs ? D / 16 : 1;
    uint32_t qf[QF][4];
    sm90::mbar_wait(bar_q, it & 1);
    if constexpr (Cfg::kQInRegs) {
      const int a_row = (lane % 8) + ((lane / 8) % 2) * 8;
      const int a_chunk = lane / 16;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk)
        ldmatrix_x4(qf[kk], sQ + sm90::panel_offset<BM>(wg * 64 + warp * 16 + a_row, kk * 2 + a_chunk));
    }

    float acc[D / 2];
    float s[NB / 2];
    uint32_t pf[NB / 16][4];
#pragma unroll
    for (int j = 0; j < D / 2; ++j) acc[j] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY};
    float row_sum[2] = {0.f, 0.f};

    auto issue_s = [&](int j) {
      const uint32_t kb = sK0 + ((g + j) % S) * Cfg::kTileKV;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const uint64_t desc = sm90::desc_kmajor(kb + (kk / 4) * (NB * 128) + (kk % 4) * 32);
        if constexpr (Cfg::kQInRegs) {
          sm90::wgmma_rs<T, NB, 0>(s, qf[kk], desc, kk > 0 ? 1 : 0);
        } else {
          static_assert(NB == 128, "Q from shared memory: S tiles of 128 keys");
          const uint64_t desc_q =
              sm90::desc_kmajor(sQ + wg * 64 * 128 + (kk / 4) * (BM * 128) + (kk % 4) * 32);
          sm90::wgmma_m64n128k16_ss<T, 0>(s, desc_q, desc, kk > 0 ? 1 : 0);
        }
      }
    };
    auto issue_pv = [&](int j) {
      const uint32_t vb = sV0 + ((g + j) % S) * Cfg::kTileKV;
#pragma unroll
      for (int kk = 0; kk < NB / 16; ++kk) {
        const uint64_t desc = sm90::desc_mnmajor(vb + kk * 16 * 128, NB * 128);
        sm90::wgmma_rs<T, D, 1>(acc, pf[kk], desc, 1);
      }
    };
    // Mask + scale the step's S (log2 domain), update the running max / sum, S <- P (fp32).
    // alpha: the factor the output accumulator must be rescaled by.
    auto softmax = [&](int j, float (&alpha)[2]) {
      bool masked = false;
      uint64_t mk[kPair][2];
#pragma unroll
      for (int u = 0; u < kPair; ++u) {
        const int i = j * kPair + u;
        if (i < n_k) {
          const typename Policy::KTile kt = policy.k_tile(qt, i);
          if (policy.needs_mask(qt, kt)) {
            masked = true;
            // Pre-shift so that bit (n * 8 + e2) is column n * 8 + 2 * qid + e2.
            mk[u][0] = policy.row_mask64(ri[0], kt) >> (qid * 2);
            mk[u][1] = policy.row_mask64(ri[1], kt) >> (qid * 2);
          } else {
            mk[u][0] = mk[u][1] = ~0ull;
          }
        } else {
          masked = true;  // missing second tile of the last step
          mk[u][0] = mk[u][1] = 0ull;
        }
      }
      if (masked) {
#pragma unroll
        for (int n = 0; n < NB / 8; ++n)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            float& x = s[4 * n + e];
            const bool ok = (mk[n / 8][e / 2] >> ((n % 8) * 8 + (e & 1))) & 1ull;
            x = ok ? x * args.scale_log2 : -INFINITY;
          }
      } else {
#pragma unroll
        for (int n = 0; n < NB / 2; ++n) s[n] *= args.scale_log2;
      }
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        float mx = -INFINITY;
#pragma unroll
        for (int n = 0; n < NB / 8; ++n) mx = fmaxf(mx, fmaxf(s[4 * n + 2 * rr], s[4 * n + 2 * rr + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(row_max[rr], mx);
        const float m_base = m_new == -INFINITY ? 0.f : m_new;
        alpha[rr] = fast_exp2(row_max[rr] - m_base);  // 0 when row_max was -inf
        row_max[rr] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int n = 0; n < NB / 8; ++n) {
          const float p0 = fast_exp2(s[4 * n + 2 * rr] - m_base);
          const float p1 = fast_exp2(s[4 * n + 2 * rr + 1] - m_base);
          s[4 * n + 2 * rr] = p0;
          s[4 * n + 2 * rr + 1] = p1;
          sum += p0 + p1;
        }
        row_sum[rr] = row_sum[rr] * alpha[rr] + sum;
      }
    };
    // S accumulator (m64nNB layout) -> A-operand fragments of P V, one per 16 keys.
    auto pack_p = [&]() {
#pragma unroll
      for (int kk = 0; kk < NB / 16; ++kk) {
        pf[kk][0] = Tr::pack(s[8 * kk + 0], s[8 * kk + 1]);
        pf[kk][1] = Tr::pack(s[8 * kk + 2], s[8 * kk + 3]);
        pf[kk][2] = Tr::pack(s[8 * kk + 4], s[8 * kk + 5]);
        pf[kk][3] = Tr::pack(s[8 * kk + 6], s[8 * kk + 7]);
      }
    };
    // Register operands of in-flight wgmmas must stay allocated until the wait that covers
    // them: these empty asm statements "use" them at that point.
    auto fence_q = [&]() {
#pragma unroll
      for (int kk = 0; kk < QF; ++kk) sm90::fence_regs(qf[kk]);
    };
    auto fence_p = [&]() {
#pragma unroll
      for (int kk = 0; kk < NB / 16; ++kk) sm90::fence_regs(pf[kk]);
    };

    // Turn-taking of the wgmma issue (pingpong): warpgroup wg waits on barrier 1 + wg, then
    // hands the turn to the other one. Warpgroup 1 grants warpgroup 0 the first turn and skips
    // its last hand-back, so every barrier sees as many arrivals as waits.
    // Issue points: S_0, the loop's n_steps - 1, the last P V (`last`).
    const bool pingpong = args.pingpong != 0 && n_steps > 0;
    auto my_turn = [&]() {
      if (pingpong) asm volatile("bar.sync %0, 256;\n" ::"r"(1 + wg) : "memory");
    };
    auto pass_turn = [&](bool last) {
      if (pingpong && (wg == 0 || !last)) asm volatile("bar.arrive %0, 256;\n" ::"r"(2 - wg) : "memory");
    };
    if (pingpong && wg == 1) asm volatile("bar.arrive 1, 256;\n" ::: "memory");
    // Persistent: Q may be overwritten by the next tile's once every S wgmma of this tile is done.
    auto release_q = [&]() {
      if constexpr (kPersist) sm90::mbar_arrive(bar_q_empty);
    };

    if (n_steps > 0) {
      float alpha[2];
      sm90::mbar_wait(bar_full + 8 * (g % S), (g / S) & 1);
      my_turn();
      sm90::wgmma_fence();
      issue_s(0);
      sm90::wgmma_commit();
      pass_turn(false);
      sm90::wgmma_wait<0>();
      sm90::fence_regs(s);
      fence_q();
      softmax(0, alpha);
      pack_p();
      for (int j = 1; j < n_steps; ++j) {
        sm90::mbar_wait(bar_full + 8 * ((g + j) % S), ((g + j) / S) & 1);
        sm90::fence_regs(acc);
        fence_p();
        my_turn();
        sm90::wgmma_fence();
        issue_s(j);
        sm90::wgmma_commit();
        issue_pv(j - 1);
        sm90::wgmma_commit();
        pass_turn(false);
        sm90::wgmma_wait<1>();  // S_j is ready; P_{j-1} V_{j-1} may still run
        sm90::fence_regs(s);
        fence_q();
        softmax(j, alpha);
        sm90::wgmma_wait<0>();
        sm90::fence_regs(acc);
        fence_p();
        sm90::mbar_arrive(bar_empty + 8 * ((g + j - 1) % S));
#pragma unroll
        for (int n = 0; n < D / 8; ++n) {
          acc[4 * n + 0] *= alpha[0];
          acc[4 * n + 1] *= alpha[0];
          acc[4 * n + 2] *= alpha[1];
          acc[4 * n + 3] *= alpha[1];
        }
        pack_p();
      }
      release_q();  // the last S wgmma has completed (wait above)
      sm90::fence_regs(acc);
      fence_p();
      my_turn();
      sm90::wgmma_fence();
      issue_pv(n_steps - 1);
      sm90::wgmma_commit();
      pass_turn(true);
      sm90::wgmma_wait<0>();
      sm90::fence_regs(acc);
      fence_p();
      // The ring runs on into the next tile: release the last stage too.
      if constexpr (kPersist) sm90::mbar_arrive(bar_empty + 8 * ((g + n_steps - 1) % S));
    } else {
      release_q();
    }

    // Epilogue (same row ownership as the SM80 core's m16n8 accumulators).
    T* o_base = static_cast<T*>(args.o) + b * args.so.batch + h * args.so.head;
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float l = row_sum[rr];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      int64_t c[3];
      if (!policy.q_coord(qt, r0 + rr * 8, c)) continue;
      T* orow = o_base + token_offset(args.so, c);
#pragma unroll
      for (int n = 0; n < D / 8; ++n) {
        const uint32_t packed = Tr::pack(acc[4 * n + 2 * rr] * inv, acc[4 * n + 2 * rr + 1] * inv);
        *reinterpret_cast<uint32_t*>(orow + n * 8 + qid * 2) = packed;
      }
      if (args.lse != nullptr && qid == 0) {
        const float lse = l > 0.f ? (row_max[rr] + log2f(l)) * 0.69314718055994531f : -INFINITY;
        args.lse[b * args.slse.batch + h * args.slse.head + token_offset(args.slse, c)] = lse;
      }
    }
    g += n_steps;
    ++it;
  }  // tiles
#else
  __trap();
#endif
}

// Host: launches the forward core on `grid` (one CTA per query tile, head, batch), with the
// TMA producer when `maps` is non-null (instantiated for kPair = 2 only; other kPair values
// ignore `maps`). kPersistOk (policies that do not read blockIdx) with `persist` and TMA:
// min(#tiles, #SMs) persistent CTAs instead.
template <typename T, int D, int kPair, class Policy, bool kPersistOk = false>
cudaError_t launch_attn_fwd_sm90(const dim3 grid, const FwdArgs& a, const Policy& pol, const Sm90TmaMaps* maps,
                                 bool persist, cudaStream_t stream) {
  using Cfg = Sm90FwdConfig<D, kPair>;
  if constexpr (kPair == 2) {
    if (maps != nullptr) {
      const int64_t tiles = static_cast<int64_t>(grid.x) * grid.y * grid.z;
      if constexpr (kPersistOk) {
        int dev = 0, sms = 0;
        if (persist && cudaGetDevice(&dev) == cudaSuccess &&
            cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) == cudaSuccess && sms > 0 &&
            tiles > sms) {
          auto kernel = attn_fwd_sm90_kernel<T, D, kPair, Policy, true, true>;
          const cudaError_t err =
              cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
          if (err != cudaSuccess) return err;
          kernel<<<dim3(static_cast<unsigned>(sms)), Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a, pol, *maps, tiles);
          return cudaGetLastError();
        }
      }
      auto kernel = attn_fwd_sm90_kernel<T, D, kPair, Policy, true>;
      const cudaError_t err =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
      if (err != cudaSuccess) return err;
      kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a, pol, *maps, tiles);
      return cudaGetLastError();
    }
  }
  (void)persist;
  auto kernel = attn_fwd_sm90_kernel<T, D, kPair, Policy, false>;
  const cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const Sm90TmaMaps unused{};
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a, pol, unused, int64_t(1));
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace effattn
