// Pass 3 of the CUDA estimation (include/effattn/estimate_cuda.h): int8 tensor-core Q8 K8^T
// over every key block that is not always kept, deciding per (query head, query block, key
// block) whether some entry reaches the row's bound, without materialising S.
//
// CTA (8 warps, 1 per SM): one batch, one kv head, G' of its query heads and a span of
// T = 512 / G' query tokens (G' = 8, 4, 2 or 1: the largest dividing the GQA group with
// T >= block_q). Warp = one query head x 64 rows, Q8 fragments held in registers for the whole
// pass; the CTA streams 64-key chunks of K8 (plus the per-key record of pass 1) through a
// 4-stage cp.async pipeline shared by all warps, so each K chunk is read once for G' heads.
// Per warp and 32-key half chunk: 4 x 4 mma.m16n8k32 tiles per 32 dims, then
//   pre-filter: with A = max(0, max_c acc_ic) (integer maxima), sq >= 0 and sk in [0, SKmax],
//     sq sk acc + kbias <= A sq SKmax + KBmax, so the tile cannot reach the bound when
//     A (sq (1 + eps)) SKmax + KBmax' < thr_i for every row (thr_i, KBmax' carry the slack);
//   exact: otherwise the rows not rejected evaluate the CPU op's fp32 formula
//     scale * (sq * sk * acc + kbias + qbias) >= bound element by element.
// Once a key block is kept for a warp its remaining chunks are skipped (the CPU op stops at
// the first qualifying entry too). CTAs are issued heaviest span first (causal).
// The work split, the pre-filter and the exact check are estimate_common.cuh's pass3_* helpers,
// shared with the Hopper kernel (estimate_int8_sm90.cu); the chunk load is inline (load_stage).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "effattn/cuda/sm80_ptx.cuh"
#include "estimate_common.cuh"

namespace effattn {
namespace cuda {
namespace est {
namespace {

constexpr int kWarps = kPass3Tiles;  // warp w = tile w of the CTA (pass3_tile)
constexpr int kThreads = 32 * kWarps;
constexpr int kStages = 4;
constexpr unsigned kAll = 0xffffffffu;

template <int D>
struct Cfg {
  static constexpr int kQBytes = kWarps * 64 * D;  // Q8 staging, one 64 x D tile per warp
  static constexpr int kKBytes = kChunkKeys * D;   // one K8 chunk
  static constexpr int kAuxBytes = kPass3AuxFloats * 4;
  static constexpr int kStageBytes = kKBytes + kAuxBytes;
  static constexpr int kInfoBytes = kWarps * 64 * 16;  // row records
  static constexpr int kSmem = kQBytes + kStages * kStageBytes + kInfoBytes;
};

// acc[mt][nt] = Q8 rows 16 mt.. (this warp) x keys 32 half + 8 nt.. of the chunk, over D.
template <int D>
__device__ __forceinline__ void tile_mma(int (&acc)[4][4][4], const uint32_t (&qf)[4][D / 32][4],
                                         const unsigned char* kt, int half, int lane) {
#pragma unroll
  for (int ks = 0; ks < D / 32; ++ks) {
#pragma unroll
    for (int np = 0; np < 2; ++np) {
      uint32_t bf[4];
      ldmatrix_x4(bf, smem_u32(kt + swz<D>(32 * half + 16 * np + ldb_row(lane), 2 * ks + ldb_chunk(lane))));
#pragma unroll
      for (int mt = 0; mt < 4; ++mt) {
        if (ks == 0) {
          mma_s8_zero(acc[mt][2 * np], qf[mt][0], bf[0], bf[1]);
          mma_s8_zero(acc[mt][2 * np + 1], qf[mt][0], bf[2], bf[3]);
        } else {
          mma_s8(acc[mt][2 * np], qf[mt][ks], bf[0], bf[1]);
          mma_s8(acc[mt][2 * np + 1], qf[mt][ks], bf[2], bf[3]);
        }
      }
    }
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads, 1) estimate_kernel(const EstArgs a, int heads_per_cta,
                                                               int span) {
  using C = Cfg<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  unsigned char* q_s = smem;
  unsigned char* stage_s = smem + C::kQBytes;
  float4* info_s = reinterpret_cast<float4*>(stage_s + kStages * C::kStageBytes);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const MapGeometry g = a.geo;
  const int N = g.n;

  // CTA -> (span, batch, kv head, head subgroup) and the chunks any of its warps estimates,
  // heaviest spans first; warp -> tile (query head, 64 rows).
  const Pass3Cta cta = pass3_cta(a, heads_per_cta, span, blockIdx.x);
  const Pass3Tile tile = pass3_tile(a, cta, heads_per_cta, span, warp);
  const int b = cta.b, hk = cta.hk, hg = cta.hg, h = tile.h, row0 = tile.row0, qb = tile.qb;
  const bool live = tile.live;
  const KeptBlocks mine = kept_blocks(g, qb);
  const int cpb = g.block_k / kChunkKeys;
  const int nch = a.chunks;
  const int n_iter = cta.n_iter;
  if (n_iter == 0) return;  // every block of these rows is always kept (or invisible)

  // The bytes of pass3_load_chunk<D, kThreads>, with its record loop as the one guarded copy it
  // amounts to here ((1 + G') 17 <= 153 < kThreads pieces): nvcc knows neither tid >= 0 nor
  // G' <= 8, so the helper's loop compiles to a 4x unrolled one and costs 6 to 8 registers.
  auto load_stage = [&](int stage, int chunk) {
    unsigned char* dst = stage_s + stage * C::kStageBytes;
    for (int i = tid; i < kChunkKeys * D / 16; i += kThreads) {
      const int r = i / (D / 16), c = i % (D / 16);
      const int key = chunk * kChunkKeys + r;
      const bool ok = key < N;
      const int8_t* src = a.k8 + ((static_cast<int64_t>(b) * N + (ok ? key : 0)) * a.kv_heads + hk) * D + c * 16;
      cp_async_16(smem_u32(dst + swz<D>(r, c)), src, ok);
    }
    const float* rec = a.aux + ((static_cast<int64_t>(b) * a.kv_heads + hk) * nch + chunk) * a.rec_floats;
    float* aux = reinterpret_cast<float*>(dst + C::kKBytes);
    constexpr int kPieces = kRecFloats / 4;
    if (tid < (1 + heads_per_cta) * kPieces) {
      const int blk = tid / kPieces, p = tid % kPieces;
      const int src_blk = blk == 0 ? 0 : 1 + hg * heads_per_cta + (blk - 1);
      cp_async_16(smem_u32(aux + blk * kRecFloats + 4 * p), rec + src_blk * kRecFloats + 4 * p, true);
    }
  };

  // Prologue: this warp's Q8 tile (group 0), then the first kStages - 1 chunks.
  unsigned char* my_q = q_s + warp * 64 * D;
  for (int i = lane; i < 64 * D / 16; i += 32) {
    const int r = i / (D / 16), col = i % (D / 16);
    const bool ok = row0 + r < N;
    const int8_t* src = a.q8 + ((static_cast<int64_t>(b) * N + (ok ? row0 + r : 0)) * a.heads + h) * D + col * 16;
    cp_async_16(smem_u32(my_q + swz<D>(r, col)), src, ok);
  }
  cp_async_commit();
  float4* info = info_s + warp * 64;
  for (int r = lane; r < 64; r += 32) {
    const int row = row0 + r;
    info[r] = row < N ? a.rowinfo[(static_cast<int64_t>(b) * a.heads + h) * N + row]
                      : make_float4(0.f, 0.f, INFINITY, INFINITY);  // dead rows never pass
  }
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < n_iter) load_stage(s, cta.chunk_at(s));
    cp_async_commit();
  }
  cp_async_wait<kStages - 1>();
  __syncwarp();

  uint32_t qf[4][D / 32][4];
#pragma unroll
  for (int mt = 0; mt < 4; ++mt)
#pragma unroll
    for (int ks = 0; ks < D / 32; ++ks)
      ldmatrix_x4(qf[mt][ks], smem_u32(my_q + swz<D>(16 * mt + lda_row(lane), 2 * ks + lda_chunk(lane))));
  // Per-lane rows: slot = 2 mt + hf -> row 16 mt + 8 hf + lane / 4.
  float thr[8], wq[8];
#pragma unroll
  for (int slot = 0; slot < 8; ++slot) {
    const float4 v = info[16 * (slot >> 1) + 8 * (slot & 1) + (lane >> 2)];
    thr[slot] = v.w;
    wq[slot] = pass3_wq(v.x);
  }

  uint32_t* my_bits = a.bits + ((static_cast<int64_t>(b) * a.heads + h) * g.mq + qb) * a.words;
  int cur_block = -1;
  bool cur_kept = false;
  for (int it = 0; it < n_iter; ++it) {
    cp_async_wait<kStages - 2>();
    __syncthreads();
    {
      const int nx = it + kStages - 1;
      if (nx < n_iter) load_stage(nx % kStages, cta.chunk_at(nx));
      cp_async_commit();
    }
    const int chunk = cta.chunk_at(it);
    const int kb = chunk / cpb;
    if (!live || !estimated_block(g, mine, kb)) continue;
    if (kb != cur_block) {
      cur_block = kb;
      cur_kept = false;
    }
    if (cur_kept) continue;
    const unsigned char* st = stage_s + (it % kStages) * C::kStageBytes;
    const float* aux = reinterpret_cast<const float*>(st + C::kKBytes);
    const float* hrec = aux + kRecFloats * (1 + tile.gl);
    for (int half = 0; half < 2 && !cur_kept; ++half) {
      int acc[4][4][4];
      tile_mma<D>(acc, qf, st, half, lane);
      // Pre-filter: per slot, this lane's 8 columns.
      const float sk_max = aux[kRecStat + half];
      const float kb_max = hrec[kRecStat + half];
      unsigned maybe = 0;
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          int mx = __vimax3_s32(acc[mt][0][2 * hf], acc[mt][0][2 * hf + 1], acc[mt][1][2 * hf]);
          mx = __vimax3_s32(mx, acc[mt][1][2 * hf + 1], acc[mt][2][2 * hf]);
          mx = __vimax3_s32(mx, acc[mt][2][2 * hf + 1], acc[mt][3][2 * hf]);
          mx = __vimax3_s32(mx, acc[mt][3][2 * hf + 1], 0);
          const int slot = 2 * mt + hf;
          if (pass3_may_reach(mx, wq[slot], sk_max, kb_max, thr[slot])) maybe |= 1u << slot;
        }
      if (!__any_sync(kAll, maybe != 0u)) continue;
      // Exact: the CPU op's fp32 expression, in its order, on the rows not rejected.
      bool hit = false;
      const int cl0 = 32 * half + 2 * (lane & 3);
#pragma unroll
      for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          if (!((maybe >> (2 * mt + hf)) & 1u)) continue;
          const int r = 16 * mt + 8 * hf + (lane >> 2);
          if (row0 + r >= N) continue;
          const float4 ri = info[r];  // (sq, qbias, bound, thr)
#pragma unroll
          for (int nt = 0; nt < 4; ++nt)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int cl = cl0 + 8 * nt + e;
              hit |= chunk * kChunkKeys + cl < N &&
                     pass3_entry_hit(ri, aux[cl], hrec[cl], acc[mt][nt][2 * hf + e], a.scale);
            }
        }
      if (__any_sync(kAll, hit)) {
        cur_kept = true;
        if (lane == 0) atomicOr(my_bits + (kb >> 5), 1u << (kb & 31));
      }
    }
  }
  cp_async_wait<0>();
}

template <int D>
cudaError_t launch_d(const EstArgs& a, cudaStream_t stream) {
  const int gp = pass3_heads_per_cta(a);
  const int64_t blocks = pass3_ctas(a, gp);
  if (blocks > 0x7fffffff) return cudaErrorInvalidConfiguration;
  const cudaError_t err =
      cudaFuncSetAttribute(estimate_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg<D>::kSmem);
  if (err != cudaSuccess) return err;
  const int span = kPass3Tiles * 64 / gp;
  estimate_kernel<D><<<static_cast<unsigned>(blocks), kThreads, Cfg<D>::kSmem, stream>>>(a, gp, span);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_estimate(const EstArgs& a, cudaStream_t stream) {
  switch (a.head_dim) {
    case 32: return launch_d<32>(a, stream);
    case 64: return launch_d<64>(a, stream);
    case 128: return launch_d<128>(a, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace est
}  // namespace cuda
}  // namespace effattn
