// Internal pieces of the CUDA quantized QK estimation (include/effattn/estimate_cuda.h),
// shared by csrc/kernels/estimate_*.cu: the int8 MMA wrappers, the fragment addressing,
// the workspace layout, pass 3's work split and decision formulas, and the kernel launch
// entry points.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "effattn/estimate_cuda.h"

#if defined(__CUDACC__)
#include "effattn/cuda/sm80_ptx.cuh"  // cp_async_16
#endif

namespace effattn {
namespace cuda {
namespace est {

// ---- Per-key record (pass 1 -> pass 3) ---------------------------------------------------
// For each (batch, kv head, 64-key chunk): one block of kRecFloats floats with the key scales
// and, per 32-key group, their maximum; then one such block per query head of the group with
// the exact key biases and, per 32-key group, a bound on them. 16-byte multiples (cp.async).
constexpr int kChunkKeys = 64;
constexpr int kGroupKeys = 32;
constexpr int kRecFloats = 68;          // 64 values + 2 group maxima + 2 pad
constexpr int kRecStat = 64;            // offset of the group maxima
constexpr float kBoundSlack = 1e-5f;    // relative slack of the pre-filter (>> fp32 rounding)

// ---- Fragment addressing (ldmatrix.x4 on 16 rows x 32 bytes; shared by int8 k32 / 16-bit k16)
// A: matrix q = (row half q & 1, 16-byte chunk q >> 1) -> registers a0..a3 of mma.m16n8k32
// (.s8) and of mma.m16n8k16 (.f16/.bf16): row g / g + 8, bytes 4t.. / 16 + 4t..
EFFATTN_HOST_DEVICE int lda_row(int lane) { return (lane & 7) + ((lane >> 3) & 1) * 8; }
EFFATTN_HOST_DEVICE int lda_chunk(int lane) { return lane >> 4; }
// B (keys as rows, dims contiguous): matrix q = (key half q >> 1, chunk q & 1) -> b0, b1 of
// the n8 tile of keys 0..7, then b0, b1 of keys 8..15.
EFFATTN_HOST_DEVICE int ldb_row(int lane) { return (lane & 7) + ((lane >> 4) & 1) * 8; }
EFFATTN_HOST_DEVICE int ldb_chunk(int lane) { return (lane >> 3) & 1; }

// Byte offset of 16-byte chunk `chunk` of row `row` in a tile whose rows are kRowBytes long:
// XOR swizzle so the 8 rows one ldmatrix phase reads hit 8 distinct 16-byte bank groups.
template <int kRowBytes>
EFFATTN_HOST_DEVICE uint32_t swz(int row, int chunk) {
  constexpr int kChunks = kRowBytes / 16;
  constexpr int kRowsPerLine = kChunks >= 8 ? 1 : 8 / kChunks;
  constexpr int kXor = kChunks >= 8 ? 8 : kChunks;
  return static_cast<uint32_t>(row * kRowBytes + 16 * (chunk ^ ((row / kRowsPerLine) % kXor)));
}

#if defined(__CUDACC__)
// d = a * b (+ c), int8 x int8 -> int32, m16n8k32. The zero-C form starts a tile without
// clearing the accumulators first.
__device__ __forceinline__ void mma_s8(int (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_s8_zero(int (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                            uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 "
      "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%10,%10,%10};\n"
      : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "r"(0));
}
#endif

// ---- Everything the kernels need, by value --------------------------------------------
struct EstArgs {
  MapGeometry geo;
  int batch = 1, heads = 1, kv_heads = 1, group = 1, head_dim = 64;
  int quant_block = 1, scale_rows = 1;  // scale_rows = ceil(N / quant_block)
  float scale = 1.f;
  const void* q = nullptr;
  const void* k = nullptr;
  const int8_t* q8 = nullptr;
  const int8_t* k8 = nullptr;
  const float* q_scale = nullptr;
  const float* k_scale = nullptr;
  const float* q_mean = nullptr;
  const float* k_mean = nullptr;
  const float* log_threshold = nullptr;
  // Workspace.
  float4* rowinfo = nullptr;  // [B, H, N]: (q scale, query bias, bound, pre-filter threshold)
  float* aux = nullptr;       // [B, H_kv, chunks, (1 + G) * kRecFloats]
  uint32_t* bits = nullptr;   // [B, H, Mq, words]: estimated kept blocks
  int chunks = 0, words = 0, rec_floats = 0;
  // Outputs.
  int32_t* num_blocks = nullptr;
  int32_t* indices = nullptr;
};

// Host: fills the workspace pointers of `a` from `base` (nullptr: sizes only); returns bytes.
size_t layout_workspace(EstArgs& a, void* base);

// ---- Pass 2 geometry (estimate_stats.cu; host-checked by tests/cuda/estimate_prepass_check.cpp)
// The 64-key chunks the statistics of query rows [r0, r0 + 64) visit, in this order:
// [0, ns) (sink), then [c0, hi] (local window and diagonal blocks; c0 >= ns, empty if c0 > hi).
// Rows past N: nothing.
struct StatsChunks {
  int ns = 0, c0 = 1, hi = 0;
};

EFFATTN_HOST_DEVICE StatsChunks stats_chunks(const MapGeometry& g, int r0) {
  StatsChunks L;
  if (r0 >= g.n) return L;
  const int r1 = r0 + 64 < g.n ? r0 + 64 : g.n;
  const int lim = g.causal ? r1 : g.n;
  const int sink_keys = g.sink < lim ? g.sink : lim;
  L.ns = (sink_keys + kChunkKeys - 1) / kChunkKeys;
  int lo_tok = g.local > 0 ? (r0 - g.local + 1 > 0 ? r0 - g.local + 1 : 0) : r0;
  const int diag0 = (r0 / g.block_k) * g.block_k;
  lo_tok = lo_tok < diag0 ? lo_tok : diag0;
  int hi_tok = r1 - 1;
  if (!g.causal) {
    const int dend = ((r1 - 1) / g.block_k + 1) * g.block_k - 1;
    hi_tok = g.n - 1 < dend ? g.n - 1 : dend;
    if (g.local > 0) {
      const int wend = g.n - 1 < r1 - 1 + g.local - 1 ? g.n - 1 : r1 - 1 + g.local - 1;
      hi_tok = hi_tok > wend ? hi_tok : wend;
    }
  }
  L.c0 = lo_tok / kChunkKeys > L.ns ? lo_tok / kChunkKeys : L.ns;
  L.hi = hi_tok / kChunkKeys;
  return L;
}

EFFATTN_HOST_DEVICE bool stats_visits(const StatsChunks& L, int c) { return c < L.ns || (c >= L.c0 && c <= L.hi); }

// The first chunk >= c that L visits; kNoChunk if none.
constexpr int kNoChunk = 0x7fffffff;
EFFATTN_HOST_DEVICE int stats_next(const StatsChunks& L, int c) {
  if (c < L.ns) return c;
  const int x = c > L.c0 ? c : L.c0;
  return x <= L.hi ? x : kNoChunk;
}

// The always-kept keys of query row i, as key c is kept iff c < sink_hi or lo <= c <= hi: the
// CPU op's test (visible, and sink, local window or i's diagonal key block) rewritten as
// intervals, for every key c >= 0 including the zero-filled ones past N (MapGeometry's sink and
// local are clamped to [0, n]). Rows past N keep nothing.
struct RowKeep {
  int sink_hi = 0, lo = 1, hi = 0;
};

EFFATTN_HOST_DEVICE RowKeep row_keep(const MapGeometry& g, int i) {
  RowKeep k;
  if (i >= g.n) return k;
  const int diag_lo = (i / g.block_k) * g.block_k;
  const int win_lo = i - g.local + 1;  // local > 0: the window's first key (may be < 0)
  k.lo = g.local > 0 && win_lo < diag_lo ? win_lo : diag_lo;
  if (g.causal) {  // window [i - local + 1, i], diagonal block up to i, sinks up to i
    k.hi = i;
    k.sink_hi = g.sink < i + 1 ? g.sink : i + 1;
  } else {  // window (i - local, i + local), the whole diagonal block, keys < N
    const int diag_hi = diag_lo + g.block_k - 1, win_hi = i + g.local - 1;
    const int hi = g.local > 0 && win_hi > diag_hi ? win_hi : diag_hi;
    k.hi = hi < g.n - 1 ? hi : g.n - 1;
    k.sink_hi = g.sink < g.n ? g.sink : g.n;
  }
  return k;
}

EFFATTN_HOST_DEVICE bool row_keeps(const RowKeep& k, int c) { return c < k.sink_hi || (c >= k.lo && c <= k.hi); }

// Every key of [c, c + kChunkKeys) is kept for the row.
EFFATTN_HOST_DEVICE bool row_keeps_chunk(const RowKeep& k, int c) {
  return c + kChunkKeys - 1 < k.sink_hi || (c >= k.lo && c + kChunkKeys - 1 <= k.hi);
}

// ---- Pass 3 work split (estimate_int8.cu and estimate_int8_sm90.cu) ----------------------
// A CTA owns kPass3Tiles tiles of 64 query rows: G' query heads of one kv head (G' = 8, 4, 2
// or 1, the largest dividing the group with T = 512 / G' >= block_q) x a span of T tokens;
// tile w = query head w / (T / 64) of the G', rows t0 + (w % (T / 64)) * 64 ... + 63. The CTA
// streams the 64-key chunks any of its rows estimates: [a0, a0 + n1), then [b0, chunks)
// (non-causal: keys after the windows). CTAs are issued heaviest span first (causal).
constexpr int kPass3Tiles = 8;
constexpr int kPass3MaxHeads = 8;
constexpr int kPass3AuxFloats = (1 + kPass3MaxHeads) * kRecFloats;  // per-chunk record, staged

inline int pass3_heads_per_cta(const EstArgs& a) {
  for (int gp = kPass3MaxHeads; gp > 1; gp >>= 1)
    if (a.group % gp == 0 && kPass3Tiles * 64 / gp >= a.geo.block_q) return gp;
  return 1;
}

inline int64_t pass3_ctas(const EstArgs& a, int gp) {
  const int span = kPass3Tiles * 64 / gp;
  return static_cast<int64_t>((a.geo.n + span - 1) / span) * a.batch * a.kv_heads * (a.group / gp);
}

struct Pass3Cta {
  int b = 0, hk = 0, hg = 0, t0 = 0;  // batch, kv head, head subgroup, first query token
  int a0 = 0, n1 = 0, b0 = 0, n_iter = 0;
  EFFATTN_HOST_DEVICE int chunk_at(int it) const { return it < n1 ? a0 + it : b0 + (it - n1); }
};

EFFATTN_HOST_DEVICE Pass3Cta pass3_cta(const EstArgs& a, int gp, int span, int64_t bid) {
  const MapGeometry& g = a.geo;
  Pass3Cta c;
  const int subgroups = a.group / gp;
  const int64_t units = static_cast<int64_t>(a.batch) * a.kv_heads * subgroups;
  const int nspans = (g.n + span - 1) / span;
  const int64_t u = bid % units;
  c.hg = static_cast<int>(u % subgroups);
  c.hk = static_cast<int>((u / subgroups) % a.kv_heads);
  c.b = static_cast<int>(u / (static_cast<int64_t>(subgroups) * a.kv_heads));
  c.t0 = (nspans - 1 - static_cast<int>(bid / units)) * span;
  const int cpb = g.block_k / kChunkKeys;
  const int t1 = c.t0 + span < g.n ? c.t0 + span : g.n;
  const KeptBlocks first = kept_blocks(g, c.t0 / g.block_q), last = kept_blocks(g, (t1 - 1) / g.block_q);
  c.a0 = first.sink_end * cpb;
  const int lo = last.lo * cpb < a.chunks ? last.lo * cpb : a.chunks;
  const int a1 = c.a0 > lo ? c.a0 : lo;
  const int hi = (first.hi + 1) * cpb < a.chunks ? (first.hi + 1) * cpb : a.chunks;
  c.b0 = g.causal ? a.chunks : (a1 > hi ? a1 : hi);
  c.n1 = a1 - c.a0;
  c.n_iter = c.n1 + (a.chunks - c.b0);
  return c;
}

struct Pass3Tile {
  int h = 0, row0 = 0, gl = 0, qb = 0;  // query head (gl: its index in the CTA), first row, block
  bool live = false;                    // row0 < N
};

EFFATTN_HOST_DEVICE Pass3Tile pass3_tile(const EstArgs& a, const Pass3Cta& c, int gp, int span, int w) {
  Pass3Tile t;
  const int segs = span / 64;
  t.gl = w / segs;
  t.h = c.hk * a.group + c.hg * gp + t.gl;
  t.row0 = c.t0 + (w % segs) * 64;
  t.live = t.row0 < a.geo.n;
  t.qb = t.live ? t.row0 / a.geo.block_q : 0;
  return t;
}

#if defined(__CUDACC__)
// Chunk `chunk` of K8 (64 rows of D bytes, swz<D>) to k_dst and its per-key record (key
// scales, then the exact key biases of the CTA's gp query heads) to aux_dst (shared-memory
// addresses), by cp.async from threads tid = 0 .. kThreads - 1. Keys >= N are zero-filled.
template <int D, int kThreads>
__device__ __forceinline__ void pass3_load_chunk(uint32_t k_dst, uint32_t aux_dst, const EstArgs& a,
                                                 const Pass3Cta& c, int gp, int chunk, int tid) {
  const int N = a.geo.n;
  for (int i = tid; i < kChunkKeys * D / 16; i += kThreads) {
    const int r = i / (D / 16), col = i % (D / 16);
    const int key = chunk * kChunkKeys + r;
    const bool ok = key < N;
    const int8_t* src = a.k8 + ((static_cast<int64_t>(c.b) * N + (ok ? key : 0)) * a.kv_heads + c.hk) * D + col * 16;
    cp_async_16(k_dst + swz<D>(r, col), src, ok);
  }
  const float* rec = a.aux + ((static_cast<int64_t>(c.b) * a.kv_heads + c.hk) * a.chunks + chunk) * a.rec_floats;
  constexpr int kPieces = kRecFloats / 4;
  for (int i = tid; i < (1 + gp) * kPieces; i += kThreads) {
    const int blk = i / kPieces, p = i % kPieces;
    const int src_blk = blk == 0 ? 0 : 1 + c.hg * gp + (blk - 1);
    cp_async_16(aux_dst + 4 * (blk * kRecFloats + 4 * p), rec + src_blk * kRecFloats + 4 * p, true);
  }
}

// Pre-filter (see estimate_int8.cu): with mx = max(0, this lane's products of a row over one
// 32-key group), false means no entry of them can reach the row's bound. wq = sq (1 + slack)
// (pass3_wq); a NaN bound never rejects.
EFFATTN_HOST_DEVICE float pass3_wq(float sq) { return sq * (1.f + kBoundSlack); }
__device__ __forceinline__ bool pass3_may_reach(int mx, float wq, float sk_max, float kb_max, float thr) {
  return !(fmaf(__int2float_rn(mx), wq * sk_max, kb_max) < thr);
}

// The CPU op's fp32 decision for one entry, in its operation order: ri = the row's
// (q scale, query bias, bound, -), sk / kbias = the key's scale and key bias, acc = q8 . k8.
__device__ __forceinline__ bool pass3_entry_hit(float4 ri, float sk, float kbias, int acc, float scale) {
  float v = __fmul_rn(__fmul_rn(ri.x, sk), __int2float_rn(acc));
  v = __fadd_rn(__fadd_rn(v, kbias), ri.y);
  return __fmul_rn(scale, v) >= ri.z;
}
#endif

// Launches (each returns the launch status).
cudaError_t launch_key_prep(const EstArgs& a, bool f16, cudaStream_t stream);
cudaError_t launch_stats(const EstArgs& a, bool f16, cudaStream_t stream);
cudaError_t launch_estimate(const EstArgs& a, cudaStream_t stream);
// Pass 3 on Hopper (estimate_int8_sm90.cu): usable for head_dim 128 when the kernel was built
// for sm_90a and the device is sm_90 (and EFFATTN_FORCE_SM80 is unset). Kernels: v2 (one wgmma
// pipeline over the unit stream) with its chunk loop unrolled by 2 (the default) or not (kept
// for A/B runs: EFFATTN_ESTIMATE_IMPL=wgmma).
enum class Sm90Estimate : int { kV2 = 0, kV2Unroll2 = 1 };
bool estimate_sm90_usable(const EstArgs& a, Sm90Estimate v = Sm90Estimate::kV2);
cudaError_t launch_estimate_sm90(const EstArgs& a, cudaStream_t stream, Sm90Estimate v = Sm90Estimate::kV2);
cudaError_t launch_compact(const EstArgs& a, cudaStream_t stream);

}  // namespace est
}  // namespace cuda
}  // namespace effattn
