// Pass 3 of the CUDA estimation on Hopper (sm_90a), head_dim 128: the bit map of
// estimate_int8.cu (same CTA work split and chunk lists, same pre-filter, same exact fp32
// check, estimate_common.cuh), with Q8 K8^T on int8 wgmma instead of mma.sync, which the H200
// ran latency bound (tensor pipe < 20 %). Selected by EFFATTN_ESTIMATE_IMPL=wgmma
// (estimate_api.cu).
//
// CTA (384 threads, 1 per SM) = the 8 tiles (query head x 64 rows) of estimate_int8.cu's CTA:
//   warpgroup 0 produces: cp.async of each 64-key chunk of K8 and of its per-key record into
//     a kRing-stage ring (mbarriers `full` / `empty`). A K8 row is 128 bytes, one row of the
//     128-byte swizzle, so swz<128> is the wgmma K-major B layout (that of a 64 x 64 bf16 tile)
//     and a k32 step advances the descriptor by 32 bytes.
//   warpgroups 1 and 2 consume 4 tiles each (tiles wg, wg + 2, ...: interleaved, since later
//     rows of a causal span estimate more chunks). A tile's Q8 stays in registers as wgmma's A
//     operand (16 registers: the A fragment of mma.m16n8k32), so shared memory only feeds B.
//   Unit = (chunk, tile): S = Q8 K8^T (64 x 64, s32) by 4 wgmma m64n64k32, then per 32-key
//   half the pre-filter and, on rows it does not reject, the exact check, as estimate_int8.cu.
//   Per chunk the 4 units are pipelined one deep into two accumulator sets: tile t + 1's is
//   issued before tile t's is checked, so the tensor core runs while the warps check. All 4
//   are issued even when some tile does not estimate the chunk's key block (their checks are
//   skipped): a conditional wgmma would serialise the pipeline (see the main loop).
// Early exit: once a key block is kept for a tile, its other units of that block skip their
// checks, and a 128-key block's second chunk is skipped whole (wgmmas too) for a warpgroup
// whose 4 tiles all kept the block in the first chunk (see `flag_slot`).
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

__global__ void __launch_bounds__(kThreadsSm90, 1) estimate_sm90_kernel(const EstArgs a, int gp, int span) {
#ifdef EFFATTN_SM90_ENABLED
  constexpr unsigned kAll = 0xffffffffu;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  unsigned char* smem = smem_raw + (base - raw);
  const uint32_t bar_full = base + kOffBars;
  const uint32_t bar_empty = bar_full + 8 * kRing;
  int* flags = reinterpret_cast<int*>(smem + kOffFlags);
  const int tid = threadIdx.x;
  const MapGeometry g = a.geo;
  const int N = g.n;
  const Pass3Cta c = pass3_cta(a, gp, span, blockIdx.x);
  if (c.n_iter == 0) return;  // every block of these rows is always kept (or invisible)
  const int cpb = g.block_k / kChunkKeys;

  if (tid < 2 * kPass3Tiles) flags[tid] = -1;
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
    sm90::regs_dealloc<kProducerRegs>();
    for (int it = 0; it < c.n_iter; ++it) {
      const int s = it % kRing;
      if (it >= kRing) sm90::mbar_wait(bar_empty + 8 * s, ((it / kRing) + 1) & 1);
      pass3_load_chunk<kD, 128>(base + s * kKBytes, base + kOffAux + s * kAuxBytes, a, c, gp, c.chunk_at(it), tid);
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
  auto tile_of = [&](int t) { return pass3_tile(a, c, gp, span, wg + kWgs * t); };

  // This warp's Q8 rows of its tiles -> registers; row records -> shared memory (own rows).
  uint32_t qf[kWgTiles][kD / 32][4];
  float wq[kWgTiles][2], thr[kWgTiles][2];
  KeptBlocks mine[kWgTiles];
  int rec_off[kWgTiles];  // offset of the tile's query head's key biases in a chunk record
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
      if (tl.live) {
        mine[t] = kept_blocks(g, tl.qb);
      } else {
        mine[t].sink_end = 0;  // every block "always kept": nothing estimated
        mine[t].lo = 0;
        mine[t].hi = INT_MAX;
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

  // Early exit. A warp that keeps a key block for a tile writes the chunk's list position `it`
  // to the tile's flag slot (it / 2) % 2; a check skips its unit when the slot holds a position
  // of the same key block. Read without synchronisation: a stale value only costs work, and the
  // range test ignores other blocks' positions whatever the warps' skew. With 128-key blocks a
  // block's chunks are at positions 2 j, 2 j + 1 (a0, n1 and b0 are even) and the units of 2 j
  // are all checked before the warpgroup barrier at 2 j + 1, so `slot == 2 j` read after it is
  // the same in every warp: the slot next changes through chunk 2 j + 1 (tag 2 j + 1, and only
  // for tiles not kept) or through block j + 2, after the barrier at 2 j + 3, which no warp
  // passes before every warp has read. A chunk whose 4 tiles are all kept or not estimated is
  // skipped whole (the wgmmas too).
  auto flag_slot = [&](int it, int t) -> volatile int* {
    return flags + ((it >> 1) & 1) * kPass3Tiles + wg + kWgs * t;
  };

  const uint32_t k_ring = base;
  const float* aux_ring = reinterpret_cast<const float*>(smem + kOffAux);
  auto issue = [&](int (&acc)[32], const uint32_t (&q)[kD / 32][4], int s) {
    sm90::wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < kD / 32; ++ks)
      sm90::wgmma_m64n64k32_s8_rs(acc, q[ks], sm90::desc_kmajor(k_ring + s * kKBytes + 32 * ks), ks > 0 ? 1 : 0);
    sm90::wgmma_commit();
  };

  // Unit (list position it, tile t): acc[4 n + 2 rr + e] = row 16 wv + grp + 8 rr, key
  // 8 n + 2 qid + e of the chunk (the f32 accumulator layout); keys 32 hf .. are n = 4 hf ...
  auto check = [&](int t, const int (&acc)[32], int it, int chunk, int s) {
    volatile int* flag = flag_slot(it, t);
    const int first = it - (it & (cpb - 1));  // list position of the key block's first chunk
    const int tag = __shfl_sync(kAll, *flag, 0);  // one value per warp: the votes below need all lanes
    if (tag >= first && tag < first + cpb) return;  // the block is already kept for this tile
    const float* aux = aux_ring + s * kPass3AuxFloats;
    const float* hrec = aux + rec_off[t];
    unsigned maybe = 0;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const float sk_max = aux[kRecStat + hf];
      const float kb_max = hrec[kRecStat + hf];
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        const int o = 16 * hf + 2 * rr;  // n = 4 hf + j, e: acc[o + 4 j + e]
        int mx = __vimax3_s32(acc[o], acc[o + 1], acc[o + 4]);
        mx = __vimax3_s32(mx, acc[o + 5], acc[o + 8]);
        mx = __vimax3_s32(mx, acc[o + 9], acc[o + 12]);
        mx = __vimax3_s32(mx, acc[o + 13], 0);
        if (pass3_may_reach(mx, wq[t][rr], sk_max, kb_max, thr[t][rr])) maybe |= 1u << (2 * hf + rr);
      }
    }
    if (!__any_sync(kAll, maybe != 0u)) return;
    // Exact: the CPU op's fp32 expression on the rows not rejected, half by half.
    const Pass3Tile tl = tile_of(t);
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      bool hit = false;
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        if (!((maybe >> (2 * hf + rr)) & 1u)) continue;
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
          const int kb = chunk / cpb;
          atomicOr(a.bits + ((static_cast<int64_t>(c.b) * a.heads + tl.h) * g.mq + tl.qb) * a.words + (kb >> 5),
                   1u << (kb & 31));
          *flag = it;
        }
        return;
      }
    }
  };

  int acc[2][32];
  for (int it = 0; it < c.n_iter; ++it) {
    const int s = it % kRing;
    const int chunk = c.chunk_at(it);
    const int kb = chunk / cpb;
    sm90::mbar_wait(bar_full + 8 * s, (it / kRing) & 1);
    // The stage was written by cp.async (generic proxy); wgmma reads it through the async
    // proxy (as lightning_pass_v3.cuh). Ordering only, not part of the hang.
    sm90::fence_proxy_async_smem();
    unsigned kept = 0;  // tiles whose key block the previous chunk kept (128-key blocks)
    if (cpb == 2 && (it & 1)) {
      sm90::named_bar_sync(1 + wg, 128);
#pragma unroll
      for (int t = 0; t < kWgTiles; ++t)
        if (__shfl_sync(kAll, *flag_slot(it, t), 0) == it - 1) kept |= 1u << t;
    }
    bool act[kWgTiles];
    bool any = false;
#pragma unroll
    for (int t = 0; t < kWgTiles; ++t) {
      act[t] = !((kept >> t) & 1u) && estimated_block(g, mine[t], kb);
      any |= act[t];
    }
    // wgmma is issued for all 4 tiles or none: a conditional wgmma makes ptxas close a dummy
    // group at the join, and waiting for the previous unit would then wait for this one too.
    // The vote makes the (warpgroup-uniform) condition visibly warp-uniform to ptxas.
    if (__any_sync(kAll, any)) {
      // Tile t's unit is issued before tile t - 1's is checked. Nothing stays in flight across
      // the loop's back edge (ptxas would serialise every wgmma, C7518), so the last unit is
      // checked unoverlapped; the other warpgroup's units keep the tensor core busy meanwhile.
#pragma unroll
      for (int t = 0; t < kWgTiles; ++t) {
        issue(acc[t & 1], qf[t], s);
        if (t > 0) {
          sm90::wgmma_wait<1>();
          sm90::fence_regs(acc[(t + 1) & 1]);
          if (act[t - 1]) check(t - 1, acc[(t + 1) & 1], it, chunk, s);
        }
      }
      sm90::wgmma_wait<0>();
      sm90::fence_regs(acc[(kWgTiles - 1) & 1]);
      if (act[kWgTiles - 1]) check(kWgTiles - 1, acc[(kWgTiles - 1) & 1], it, chunk, s);
    }
    sm90::mbar_arrive(bar_empty + 8 * s);  // every read of the stage (wgmma, records) is done
  }
#else
  __trap();
#endif
}

}  // namespace

bool estimate_sm90_usable(const EstArgs& a) {
  if (a.head_dim != kD || !sm90_kernel_usable(estimate_sm90_kernel)) return false;
  // A build allocating fewer than kLaunchRegs per thread would hang in setmaxnreg.inc (above):
  // use the mma.sync kernel instead.
  cudaFuncAttributes fa;
  return cudaFuncGetAttributes(&fa, estimate_sm90_kernel) == cudaSuccess && fa.numRegs >= kLaunchRegs;
}

cudaError_t launch_estimate_sm90(const EstArgs& a, cudaStream_t stream) {
  if (a.head_dim != kD) return cudaErrorInvalidValue;
  const int gp = pass3_heads_per_cta(a);
  const int64_t blocks = pass3_ctas(a, gp);
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const cudaError_t err =
      cudaFuncSetAttribute(estimate_sm90_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemSm90);
  if (err != cudaSuccess) return err;
  estimate_sm90_kernel<<<static_cast<unsigned>(blocks), kThreadsSm90, kSmemSm90, stream>>>(
      a, gp, kPass3Tiles * 64 / gp);
  return cudaGetLastError();
}

}  // namespace est
}  // namespace cuda
}  // namespace effattn
