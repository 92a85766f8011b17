// Pass 3 of the CUDA estimation on Hopper (sm_90a), head_dim 128: the bit map of
// estimate_int8.cu (same CTA work split and chunk lists, same pre-filter, same exact fp32
// check, estimate_common.cuh), with Q8 K8^T on int8 wgmma instead of mma.sync, which the H200
// ran latency bound (tensor pipe < 20 %). One kernel, v2::estimate_sm90_v2_kernel<kUnroll>
// (estimate_api.cu picks it per call): <2> by default (H200 N 65536 H 32 D 128 causal: 13.8 ms
// = 1260 int8 TOPS), <1> with EFFATTN_ESTIMATE_IMPL=wgmma (14.7 ms). The first version (v1:
// 26 ms, the tensor core idle while a warpgroup drained its units at the end of every chunk) is
// described in benchmarks/ESTIMATE_NOTES.md and was removed once v2 had run on the device.
//
// CTA (384 threads, 1 per SM) = the 8 tiles (query head x 64 rows) of estimate_int8.cu's CTA:
//   warpgroup 0 produces: cp.async of each 64-key chunk of K8 and of its per-key record into
//     a kRing-stage ring (mbarriers `full` / `empty`). A K8 row is 128 bytes, one row of the
//     128-byte swizzle, so swz<128> is the wgmma K-major B layout (that of a 64 x 64 bf16 tile)
//     and a k32 step advances the descriptor by 32 bytes.
//   warpgroups 1 and 2 consume 4 tiles each (tiles wg, wg + 2, ...: interleaved, since later
//     rows of a causal span estimate more chunks). A tile's Q8 stays in registers as wgmma's A
//     operand (16 registers: the A fragment of mma.m16n8k32), so shared memory only feeds B.
//   Unit = (chunk, tile): S = Q8 K8^T (64 x 64, s32) by 4 wgmma m64n64k32, then the pre-filter
//     and, on rows it does not reject, the exact check, as estimate_int8.cu (v2 section below).
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "effattn/cuda/sm80_ptx.cuh"
#include "effattn/cuda/sm90_dispatch.cuh"
#include "effattn/cuda/sm90_ptx.cuh"
#include "estimate_common.cuh"

namespace effattn {
namespace cuda {
namespace est {
namespace {

constexpr int kD = 128;
constexpr int kWgs = 2;                         // consumer warpgroups
constexpr int kWgTiles = kPass3Tiles / kWgs;    // tiles per consumer warpgroup
constexpr int kThreadsSm90 = 128 * (1 + kWgs);
constexpr int kRing = 8;                        // K8 chunk stages
constexpr int kKBytes = kChunkKeys * kD;        // one K8 chunk (1024-byte multiple)
constexpr int kAuxBytes = kPass3AuxFloats * 4;  // one chunk record (16-byte multiple)
constexpr int kQWarpBytes = kWgTiles * 16 * kD; // Q8 staging: a warp's 16 rows of its 4 tiles
// Shared memory, from a 1024-byte aligned base (the swizzle's alignment).
constexpr int kOffQ = kRing * kKBytes;
constexpr int kOffAux = kOffQ + 4 * kWgs * kQWarpBytes;
constexpr int kOffInfo = kOffAux + kRing * kAuxBytes;        // float4 per row of the 8 tiles
constexpr int kOffFlags = kOffInfo + kPass3Tiles * 64 * 16;  // int [2][kPass3Tiles]
constexpr int kOffBars = kOffFlags + 2 * kPass3Tiles * 4;    // full[kRing], empty[kRing]
constexpr int kSmemSm90 = kOffBars + 2 * kRing * 8 + 1024;
static_assert(kWgTiles == 4, "the unit pipeline below alternates 2 accumulator sets over 4 tiles");
static_assert(kSmemSm90 <= 227 * 1024, "estimate_sm90: shared memory");
// setmaxnreg only moves registers inside the CTA's launch allocation: 384 threads x 168
// (__launch_bounds__(384, 1) on 64 K registers; ptxas -v: "Used 168 registers") = 64512,
// not 64 K. setmaxnreg.inc blocks until the registers it asks for are free, so the former
// 128 x 48 + 256 x 232 = 65536 > 64512 never let the consumers' increase complete: they never
// reached their first `full` wait, the producer filled the ring and waited on `empty` forever
// (the hang on the first call). Same budget and split as lightning_pass_v3.cuh
// (attn_bwd_sm90_fused.cuh asserts the same bound): 56 / 224 build without spills (ptxas -v),
// while 40 / 232 spills the producer's 64-bit address arithmetic. estimate_sm90_usable checks
// the built kernel's allocation.
constexpr int kLaunchRegs = 168;  // 65536 / 384, rounded down to the allocation unit of 8
constexpr int kProducerRegs = 56;
constexpr int kConsumerRegs = 224;
static_assert(kProducerRegs % 8 == 0 && kConsumerRegs % 8 == 0 && kProducerRegs >= 24 && kConsumerRegs <= 256,
              "setmaxnreg: multiples of 8 in [24, 256]");
static_assert(128 * kProducerRegs + 256 * kConsumerRegs <= kThreadsSm90 * kLaunchRegs,
              "setmaxnreg: the warpgroups' registers must fit the launch allocation (384 x 168)");

// ---------------------------------------------------------------------------------------------
// Pass 3 v2 (unrolled by 2: the default, =wgmma2u; =wgmma: not unrolled): v1's CTA, tiles, shared
// memory layout, barriers and register split, with a consumer loop in which the tensor core does not wait for
// the checks, and about half of v1's instructions per chunk (benchmarks/ESTIMATE_NOTES.md,
// "Pass 3 v2": cycle budget, SASS, what the device run checks):
//   * One pipeline over the warpgroup's unit stream (chunk it, tile t): unit (it, t + 1) is
//     issued before (it, t) is checked, into the other of two accumulator sets (accA: tiles 0,
//     2; accB: tiles 1, 3), and (it, 3) is checked after (it + 1, 0) is issued, at the top of the
//     next iteration. The iteration ends on wait<0> once the next chunk's state is ready, so no
//     wgmma is in flight across the back edge (ptxas serialises every wgmma of a loop with one
//     in flight there: C7514) and the warpgroup only leaves the tensor core idle between (it, 3)
//     completing and (it + 1, 0) issuing (~20 instructions; the other warpgroup's unit runs).
//     SASS per iteration: 4 x (WARPGROUP.ARRIVE, 4 IGMMA, the last with gsb0), DEPBAR.LE gsb0 1
//     after units 1..3, DEPBAR.LE gsb0 0 at the bottom (and a no-op one at the top).
//   * Every unit's wgmmas are issued unconditionally; only checks are skipped (tiles that do
//     not estimate the chunk's key block, or that already kept it). v1 skipped a chunk's wgmmas
//     where none of the warpgroup's tiles needed them, which cost the overlap. The lost skips
//     are rare: chunks near the diagonal for the lower tiles of a causal span (< 8 per tile)
//     and, with 128-key blocks, second chunks of blocks all 4 tiles kept in the first.
//   * Per-chunk bookkeeping instead of per-unit: one 16-byte read of the warpgroup's flag slots
//     and one shuffle give a warp-uniform 4-bit mask of the tiles to check, from per-tile chunk
//     ranges computed at start (no division, no kept_blocks in the loop).
//   * Pre-filter per row over the chunk's 64 keys (v1: per 32-key group), see `check`: 8 float
//     instructions per unit instead of 16, and a 3-deep max tree.
//   * Producer with its addressing hoisted out of the loop (~70 instructions per chunk and warp,
//     v1's ~150).
// Flags: slot 4 wg + t holds the last key block a warp kept for the warpgroup's tile t (block
// indices increase along the chunk list). Read without synchronisation: a stale value only
// costs a check; a skip only happens for a block whose bit some warp has set (the writer sets
// the bit itself). The cold path re-reads the slot before the exact check.
// Decisions: the exact check (pass3_entry_hit) is v1's on every row the pre-filter lets
// through, and the pre-filter rejects nothing v1's keeps, so the map is the same bit for bit.
// scripts/sim_estimate_sm90.py simulates this protocol (setmaxnreg, mbarrier phases,
// warpgroup-collective wgmma, stage and accumulator hazards, flags) under random interleavings.
namespace v2 {

// kUnroll: chunks per trip of the consumer loop (1, or 2: the default, ~9 % fewer instructions per
// chunk, twice the loop's code; H200: 6 % faster).
template <int kUnroll>
__global__ void __launch_bounds__(kThreadsSm90, 1) estimate_sm90_v2_kernel(const EstArgs a, int gp, int span) {
#ifdef EFFATTN_SM90_ENABLED
  constexpr unsigned kAll = 0xffffffffu;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  unsigned char* smem = smem_raw + (base - raw);
  const uint32_t bar_full = base + kOffBars;
  const uint32_t bar_empty = bar_full + 8 * kRing;
  const int tid = threadIdx.x;
  const MapGeometry g = a.geo;
  const int N = g.n;
  const Pass3Cta c = pass3_cta(a, gp, span, blockIdx.x);
  if (c.n_iter == 0) return;  // every block of these rows is always kept (or invisible)
  const int cpb = g.block_k / kChunkKeys;

  if (tid < kPass3Tiles) reinterpret_cast<int*>(smem + kOffFlags)[tid] = -1;
  if (tid == 0) {
    for (int s = 0; s < kRing; ++s) {
      sm90::mbar_init(bar_full + 8 * s, 128);    // every producer thread (cp.async, noinc)
      sm90::mbar_init(bar_empty + 8 * s, 256);   // every consumer thread
    }
    sm90::mbar_init_fence();
  }
  __syncthreads();

  if (tid < 128) {
    // ---------------- producer ----------------
    // The copies of pass3_load_chunk<kD, 128> (v1's producer), with the per-thread addressing
    // hoisted out of the loop: thread tid copies the 16-byte pieces (key row tid / 8 + 16 j,
    // column tid % 8), j = 0..3, of each K8 chunk (row + 16 j keeps row % 8, so the swizzled
    // destinations are 2048 j apart), and record pieces tid and tid + 128 where they exist
    // ((1 + gp) 17 <= 153). v1's generic loops cost ~150 instructions per chunk and warp (the
    // compiler knows neither the trip counts nor the bounds), this ~70 (SASS).
    sm90::regs_dealloc<kProducerRegs>();
    const int pr = tid / 8, pc = tid % 8;
    const uint32_t k_dst = base + swz<kD>(pr, pc);
    const int64_t kstride = static_cast<int64_t>(a.kv_heads) * kD;  // bytes from key to key
    const int8_t* kbase = a.k8 + (static_cast<int64_t>(c.b) * N * a.kv_heads + c.hk) * kD + 16 * pc;
    constexpr int kPieces = kRecFloats / 4;
    const int rec_pieces = (1 + gp) * kPieces;
    const float* rec_base = a.aux + (static_cast<int64_t>(c.b) * a.kv_heads + c.hk) * a.chunks * a.rec_floats;
    auto rec_piece = [&](int i, int& src_off, uint32_t& dst) {  // floats from the chunk record, shared address
      const int blk = i / kPieces, p = i % kPieces;
      src_off = (blk == 0 ? 0 : 1 + c.hg * gp + (blk - 1)) * kRecFloats + 4 * p;
      dst = base + kOffAux + 4 * (blk * kRecFloats + 4 * p);
    };
    int rsrc0 = 0, rsrc1 = 0;
    uint32_t rdst0 = 0, rdst1 = 0;
    rec_piece(tid, rsrc0, rdst0);
    rec_piece(tid + 128, rsrc1, rdst1);
    const bool has_rec0 = tid < rec_pieces, has_rec1 = tid + 128 < rec_pieces;
    const float* rec0 = rec_base + rsrc0;
    const float* rec1 = rec_base + rsrc1;
    for (int it = 0; it < c.n_iter; ++it) {
      const int s = it % kRing;
      if (it >= kRing) sm90::mbar_wait(bar_empty + 8 * s, ((it / kRing) + 1) & 1);
      const int chunk = c.chunk_at(it);
      const int key0 = chunk * kChunkKeys + pr;
      const int8_t* src = kbase + key0 * kstride;
      const uint32_t dst = k_dst + s * kKBytes;
      if (chunk * kChunkKeys + kChunkKeys <= N) {  // every key of the chunk exists
#pragma unroll
        for (int j = 0; j < 4; ++j) cp_async_16(dst + 2048 * j, src + 16 * j * kstride, true);
      } else {
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const bool ok = key0 + 16 * j < N;  // keys >= N: zero-filled, nothing read (key 0's address)
          cp_async_16(dst + 2048 * j, ok ? src + 16 * j * kstride : kbase, ok);
        }
      }
      const int64_t rec_off = static_cast<int64_t>(chunk) * a.rec_floats;
      if (has_rec0) cp_async_16(rdst0 + s * kAuxBytes, rec0 + rec_off, true);
      if (has_rec1) cp_async_16(rdst1 + s * kAuxBytes, rec1 + rec_off, true);
      sm90::mbar_arrive_cp_async(bar_full + 8 * s);
    }
    cp_async_wait<0>();
    return;
  }

  // ---------------- consumers ----------------
  sm90::regs_alloc<kConsumerRegs>();
  const int wg = tid / 128 - 1;
  const int wv = (tid / 32) % 4;  // warp in the warpgroup: rows 16 wv .. 16 wv + 15 of each tile
  const int lane = tid % 32;
  const int grp = lane / 4, qid = lane % 4;
  float4* info = reinterpret_cast<float4*>(smem + kOffInfo);
  const uint32_t flag_wg = base + kOffFlags + 16 * wg;  // slots of tiles t = 0..3: + 4 t
  auto tile_of = [&](int t) { return pass3_tile(a, c, gp, span, wg + kWgs * t); };

  // This warp's Q8 rows of its tiles -> registers; row records -> shared memory (own rows).
  // Per tile, the chunks it estimates: [e0, e0 + ew) (key blocks [sink_end, lo)) and, not
  // causal, [e1, chunks) (blocks after the window and the sink): estimated_block in chunks.
  uint32_t qf[kWgTiles][kD / 32][4];
  float wq[kWgTiles][2], thr[kWgTiles][2];
  int e0[kWgTiles], ew[kWgTiles], e1[kWgTiles];
  int rec_off[kWgTiles];  // offset of the tile's query head's key biases in a chunk record (floats)
  {
    unsigned char* qs = smem + kOffQ + (wg * 4 + wv) * kQWarpBytes;
#pragma unroll
    for (int t = 0; t < kWgTiles; ++t) {
      const Pass3Tile tl = tile_of(t);
      const int r0 = tl.row0 + 16 * wv;
      for (int i = lane; i < 16 * kD / 16; i += 32) {
        const int r = i / (kD / 16), col = i % (kD / 16);
        const bool ok = r0 + r < N;
        const int8_t* src = a.q8 + ((static_cast<int64_t>(c.b) * N + (ok ? r0 + r : 0)) * a.heads + tl.h) * kD + col * 16;
        cp_async_16(smem_u32(qs + t * 16 * kD + swz<kD>(r, col)), src, ok);
      }
      if (lane < 16) {
        info[(wg + kWgs * t) * 64 + 16 * wv + lane] =
            r0 + lane < N ? a.rowinfo[(static_cast<int64_t>(c.b) * a.heads + tl.h) * N + r0 + lane]
                          : make_float4(0.f, 0.f, INFINITY, INFINITY);  // dead rows never pass
      }
      rec_off[t] = kRecFloats * (1 + tl.gl);
      e0[t] = 0;
      ew[t] = 0;
      e1[t] = INT_MAX;
      if (tl.live) {
        const KeptBlocks kb = kept_blocks(g, tl.qb);
        e0[t] = kb.sink_end * cpb;
        ew[t] = kb.lo * cpb > e0[t] ? kb.lo * cpb - e0[t] : 0;
        if (!g.causal) e1[t] = (kb.hi + 1 > kb.sink_end ? kb.hi + 1 : kb.sink_end) * cpb;
      }
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncwarp();
#pragma unroll
    for (int t = 0; t < kWgTiles; ++t) {
#pragma unroll
      for (int ks = 0; ks < kD / 32; ++ks)
        ldmatrix_x4(qf[t][ks], smem_u32(qs + t * 16 * kD + swz<kD>(lda_row(lane), 2 * ks + lda_chunk(lane))));
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const float4 v = info[(wg + kWgs * t) * 64 + 16 * wv + grp + 8 * rr];
        thr[t][rr] = v.w;
        wq[t][rr] = pass3_wq(v.x);
      }
    }
  }

  const uint32_t k_ring = base;
  const float* aux_ring = reinterpret_cast<const float*>(smem + kOffAux);
  // Descriptor of stage s, k32 step ks: stage 0's plus (s kKBytes + 32 ks) / 16 in the address
  // field (its low 14 bits, 16-byte units: no carry out of the low word below 256 KB).
  const uint64_t desc0 = sm90::desc_kmajor(k_ring);
  const uint32_t desc0_lo = static_cast<uint32_t>(desc0), desc0_hi = static_cast<uint32_t>(desc0 >> 32);
  auto issue = [&](int (&acc)[32], const uint32_t (&q)[kD / 32][4], int s) {
    sm90::wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kD / 32; ++ks) {
      const uint32_t lo = desc0_lo + static_cast<uint32_t>(s * (kKBytes / 16) + 2 * ks);
      sm90::wgmma_m64n64k32_s8_rs(acc, q[ks], (static_cast<uint64_t>(desc0_hi) << 32) | lo, ks > 0 ? 1 : 0);
    }
    sm90::wgmma_commit();
  };

  // Unit (chunk, tile t) with the chunk's record `aux`: acc[4 n + 2 rr + e] = row
  // 16 wv + grp + 8 rr, key 8 n + 2 qid + e of the chunk; keys 32 hf .. are n = 4 hf ...
  // Pre-filter per row over the chunk's 64 keys (v1: per row and 32-key group): with mx the
  // max of 0 and the lane's 16 products of the row, and the chunk's maxima of the two groups'
  // key scale maxima (skm) and key bias bounds (kbm), pass3_may_reach(mx, wq, skm, kbm, thr).
  // That is never below either group's own bound, pass3_may_reach(mx_g, wq, skm_g, kbm_g, thr):
  // float conversion, products of non-negatives (mx >= 0, wq * skm >= 0 wherever thr is
  // finite) and fmaf are monotone under round-to-nearest. A NaN key scale comes with a +inf
  // bias bound for its group (estimate_prep.cu), so the merged bound is +inf there too. So it
  // rejects no row that v1's keeps, and the exact check decides as before: the same map. It
  // costs 8 float instructions per unit instead of 16; on the synthetic inputs (N 16384,
  // benchmarks/prefilter_passrate.py) the exact check runs on 2.08 % of the warps' units
  // instead of 1.99 %.
  auto check = [&](int t, const int (&acc)[32], int chunk, int kb, const float* aux, float skm) {
    const float* hrec = aux + rec_off[t];
    const float2 kbm2 = *reinterpret_cast<const float2*>(hrec + kRecStat);
    const float kbm = fmaxf(kbm2.x, kbm2.y);
    bool maybe[2];
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      // max(0, acc[2 rr + 4 j + e]), j = 0 .. 7, e = 0, 1: 8 three-input maxima, 3 deep.
      const int* v = acc + 2 * rr;
      const int m0 = __vimax3_s32(v[0], v[1], v[4]), m1 = __vimax3_s32(v[5], v[8], v[9]);
      const int m2 = __vimax3_s32(v[12], v[13], v[16]), m3 = __vimax3_s32(v[17], v[20], v[21]);
      const int m4 = __vimax3_s32(v[24], v[25], v[28]);
      const int mx = __vimax3_s32(__vimax3_s32(m0, m1, m2), __vimax3_s32(m3, m4, v[29]), 0);
      maybe[rr] = pass3_may_reach(mx, wq[t][rr], skm, kbm, thr[t][rr]);
    }
    if (!__any_sync(kAll, maybe[0] || maybe[1])) return;
    // Cold path. Another warp may have kept the block meanwhile.
    if (__shfl_sync(kAll, sm90::ld_volatile_shared(flag_wg + 4 * t), 0) == kb) return;
    // Exact: the CPU op's fp32 expression on the rows not rejected, half by half (v1's).
    const Pass3Tile tl = tile_of(t);
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      bool hit = false;
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        if (!maybe[rr]) continue;
        const int r = 16 * wv + grp + 8 * rr;
        if (tl.row0 + r >= N) continue;
        const float4 ri = info[(wg + kWgs * t) * 64 + r];
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int cl = 32 * hf + 8 * j + 2 * qid + e;
            hit |= chunk * kChunkKeys + cl < N &&
                   pass3_entry_hit(ri, aux[cl], hrec[cl], acc[16 * hf + 4 * j + 2 * rr + e], a.scale);
          }
      }
      if (__any_sync(kAll, hit)) {
        if (lane == 0) {
          atomicOr(a.bits + ((static_cast<int64_t>(c.b) * a.heads + tl.h) * g.mq + tl.qb) * a.words + (kb >> 5),
                   1u << (kb & 31));
          sm90::st_volatile_shared(flag_wg + 4 * t, kb);
        }
        return;
      }
    }
  };

  const int n = c.n_iter;
  const int cshift = cpb == 2 ? 1 : 0;
  // A chunk's state: its stage, chunk, key block, group maxima of the key scales, and the tiles
  // to check (estimate the block and have not kept it; warp-uniform: lane 0's view).
  struct Chunk {
    int s = 0, chunk = 0, kb = 0;
    unsigned act = 0;
    float skm = 0.f;  // max of the two 32-key groups' key scale maxima
  };
  auto head = [&](int it) {  // waits for chunk `it`'s stage
    Chunk h;
    h.s = it & (kRing - 1);
    h.chunk = c.chunk_at(it);
    h.kb = h.chunk >> cshift;
    sm90::mbar_wait(bar_full + 8 * h.s, (it / kRing) & 1);
    // cp.async wrote the stage (generic proxy), wgmma reads it (async proxy).
    sm90::fence_proxy_async_smem();
    const int4 f = sm90::ld_volatile_shared_v4(flag_wg);
    const int fl[kWgTiles] = {f.x, f.y, f.z, f.w};
    unsigned m = 0;
#pragma unroll
    for (int t = 0; t < kWgTiles; ++t) {
      const bool est = static_cast<unsigned>(h.chunk - e0[t]) < static_cast<unsigned>(ew[t]) || h.chunk >= e1[t];
      if (est && fl[t] != h.kb) m |= 1u << t;
    }
    h.act = __shfl_sync(kAll, m, 0);
    const float2 skm = *reinterpret_cast<const float2*>(aux_ring + h.s * kPass3AuxFloats + kRecStat);
    h.skm = fmaxf(skm.x, skm.y);
    return h;
  };
  auto check_in = [&](int t, const int (&acc)[32], const Chunk& h) {
    check(t, acc, h.chunk, h.kb, aux_ring + h.s * kPass3AuxFloats, h.skm);
  };

  // Units (it, 0) .. (it, 3) -> accA, accB, accA, accB. Unit (it, 3) is checked after (it + 1, 0)
  // is issued; the iteration ends on wait<0>, so no wgmma is in flight across the back edge
  // (ptxas serialises every wgmma of a loop that has one: C7514), and the tensor core only
  // waits for this warpgroup between (it, 3)'s completion and (it + 1, 0)'s issue: the
  // iteration's tail, with the next chunk's state already computed before the wait<0>.
  // The wait<0> at the top finds nothing in flight (a no-op), but ptxas does not carry the
  // bottom one across the back edge: without it, it injects a wait for (it, 0) before (it - 1,
  // 3)'s check reads accB (C7517), which serialises that check.
  int accA[32], accB[32];
  Chunk cur = head(0), prev;
#pragma unroll kUnroll
  for (int it = 0; it < n; ++it) {
    sm90::wgmma_wait<0>();
    issue(accA, qf[0], cur.s);
    if (it > 0) {
      if (prev.act & 8u) check_in(3, accB, prev);
      sm90::mbar_arrive(bar_empty + 8 * prev.s);  // units (it - 1, 0..3) done, records read
    }
    issue(accB, qf[1], cur.s);
    sm90::wgmma_wait<1>();
    sm90::fence_regs(accA);
    if (cur.act & 1u) check_in(0, accA, cur);
    issue(accA, qf[2], cur.s);
    sm90::wgmma_wait<1>();
    sm90::fence_regs(accB);
    if (cur.act & 2u) check_in(1, accB, cur);
    issue(accB, qf[3], cur.s);
    sm90::wgmma_wait<1>();
    sm90::fence_regs(accA);
    if (cur.act & 4u) check_in(2, accA, cur);
    prev = cur;
    if (it + 1 < n) cur = head(it + 1);
    sm90::wgmma_wait<0>();
    sm90::fence_regs(accB);
  }
  if (prev.act & 8u) check_in(3, accB, prev);
  sm90::mbar_arrive(bar_empty + 8 * prev.s);  // (no producer waits for it: symmetry)
#else
  __trap();
#endif
}

}  // namespace v2

}  // namespace

namespace {

// The kernel of variant v (estimate_common.cuh).
void (*sm90_kernel_of(Sm90Estimate v))(const EstArgs, int, int) {
  switch (v) {
    case Sm90Estimate::kV2Unroll2: return v2::estimate_sm90_v2_kernel<2>;
    default: return v2::estimate_sm90_v2_kernel<1>;
  }
}

}  // namespace

// The kernel runs here: head dim 128, built for sm_90a, an sm_90 device. A build allocating
// fewer than kLaunchRegs per thread would hang in setmaxnreg.inc (above): the caller then runs
// the mma.sync kernel instead.
bool estimate_sm90_usable(const EstArgs& a, Sm90Estimate v) {
  const auto k = sm90_kernel_of(v);
  if (a.head_dim != kD || !sm90_kernel_usable(k)) return false;
  cudaFuncAttributes fa;
  return cudaFuncGetAttributes(&fa, k) == cudaSuccess && fa.numRegs >= kLaunchRegs;
}

cudaError_t launch_estimate_sm90(const EstArgs& a, cudaStream_t stream, Sm90Estimate v) {
  if (a.head_dim != kD) return cudaErrorInvalidValue;
  const auto k = sm90_kernel_of(v);
  const int gp = pass3_heads_per_cta(a);
  const int64_t blocks = pass3_ctas(a, gp);
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const cudaError_t err = cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemSm90);
  if (err != cudaSuccess) return err;
  k<<<static_cast<unsigned>(blocks), kThreadsSm90, kSmemSm90, stream>>>(a, gp, kPass3Tiles * 64 / gp);
  return cudaGetLastError();
}

}  // namespace est
}  // namespace cuda
}  // namespace effattn
