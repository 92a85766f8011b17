// Work split of the CUDA smooth_quantize kernels (estimate_quant.cu), host/device so that a
// host-side check (tests/cuda/estimate_prepass_check.cpp, run by scripts/check_estimate_prepass.sh)
// runs the same index math.
//
// x [B, N, H, D] is read as B x N token rows of `cols` = H * D elements; a kernel loads a row
// as `nv` = cols / V vectors of V elements (one 16-byte load each, or V = 1). A CTA of
// kTileThreads threads covers R row slots of P threads: thread tid of column tile `tile`
// (blockIdx.x % tiles) owns vector v = tile * P + tid % P of row slot r = tid / P, and is
// idle when r >= R or v >= nv. With nv <= kTileThreads, P = nv (R rows at a time, one tile);
// else P = kTileThreads, R = 1 and ceil(nv / P) tiles. A thread's vector (its columns) is
// the same for every row it visits, so the column means stay in registers.
//
// Quantization (W = D / V vectors per head, a power of two <= 32): P is a multiple of W and a
// tile starts at a multiple of W, so the W threads of one (row, head) are W aligned lanes of
// one warp (xor shuffles with offsets < W reduce over them), all live or all idle.
#pragma once

#include <cstdint>

#include "effattn/macros.h"

namespace effattn {
namespace cuda {
namespace quant {

constexpr int kTileThreads = 256;

struct RowTiling {
  int64_t nv = 1;  // vectors per token row
  int P = 1;       // threads per row slot
  int R = 1;       // row slots per CTA
  int64_t tiles = 1;
};

EFFATTN_HOST_DEVICE RowTiling row_tiling(int64_t nv) {
  RowTiling t;
  t.nv = nv;
  if (nv <= kTileThreads) {
    t.P = static_cast<int>(nv);
    t.R = kTileThreads / t.P;
    t.tiles = 1;
  } else {
    t.P = kTileThreads;
    t.R = 1;
    t.tiles = (nv + kTileThreads - 1) / kTileThreads;
  }
  return t;
}

struct ThreadSlot {
  int r = 0;       // row slot
  int64_t v = 0;   // vector index in the row
  bool live = false;
};

EFFATTN_HOST_DEVICE ThreadSlot thread_slot(const RowTiling& t, int64_t tile, int tid) {
  ThreadSlot s;
  s.r = tid / t.P;
  s.v = tile * t.P + tid % t.P;
  s.live = s.r < t.R && s.v < t.nv;
  return s;
}

// Column sums: token chunks of kSumRows rows; CTA group `grp` (blockIdx.x / tiles) sums chunk
// grp * R + r in its row slot r, token by token in increasing order (one fp64 chain per column,
// so the order depends on N only, not on V, R or the launch). The mean pass then adds the
// chunks of a column in a fixed order (kMeanSlices interleaved slices, then the slices in order).
constexpr int64_t kSumRows = 128;
constexpr int kMeanSlices = 32;

EFFATTN_HOST_DEVICE int64_t sum_chunks(int64_t tokens) { return (tokens + kSumRows - 1) / kSumRows; }

// The launches of smooth_quantize for x [B, N, H, D] of `elem_bytes`-byte elements, x 16-byte
// aligned or not, x_quant's address; V = 16 / elem_bytes elements per 16-byte vector.
struct SumPlan {
  int V = 1;  // elements per load: 16 / elem_bytes, or 1 (x misaligned or H * D % V != 0)
  RowTiling tl;
  int64_t chunks = 1, groups = 1;  // grid (groups * tl.tiles, B); group g sums chunks g * R + r
};

inline SumPlan plan_column_sums(int64_t tokens, int64_t cols, int elem_bytes, bool x_aligned16) {
  SumPlan s;
  const int v = 16 / elem_bytes;
  s.V = x_aligned16 && cols % v == 0 ? v : 1;
  s.tl = row_tiling(cols / s.V);
  s.chunks = sum_chunks(tokens);
  s.groups = (s.chunks + s.tl.R - 1) / s.tl.R;
  return s;
}

struct QuantPlan {
  bool vec = false;       // quantize_vec_kernel; else quantize_rows_kernel (any shape)
  int kVecs = 1, kLanes = 1;  // 16-byte vectors per thread, threads per (row, head)
  RowTiling tl;           // over thread vectors of kVecs * V elements
  int64_t blocks = 1, groups = 1;  // grid (groups * tl.tiles, B)
};

inline QuantPlan plan_quantize(int64_t batch, int64_t tokens, int64_t heads, int64_t head_dim,
                               int64_t quant_block, int elem_bytes, bool x_aligned16,
                               uintptr_t x_quant_addr, int sms) {
  QuantPlan q;
  const int v = 16 / elem_bytes;
  q.blocks = (tokens + quant_block - 1) / quant_block;
  const int64_t W = head_dim / v;  // 16-byte vectors per head
  q.kVecs = W >= 2 ? 2 : 1;
  q.kLanes = static_cast<int>(W / q.kVecs);
  q.vec = x_aligned16 && head_dim % v == 0 && W >= 1 && W <= 32 && (W & (W - 1)) == 0 &&
          x_quant_addr % static_cast<uintptr_t>(q.kVecs * v) == 0;
  if (!q.vec) return q;
  q.tl = row_tiling(heads * head_dim / (q.kVecs * v));
  // About eight CTAs per SM in all (two resident per SM), each sweeping many rows.
  const int64_t want = 8 * static_cast<int64_t>(sms) / (q.tl.tiles * batch);
  const int64_t need = (q.blocks + q.tl.R - 1) / q.tl.R;
  q.groups = need < want ? need : (want > 1 ? want : 1);
  return q;
}

}  // namespace quant
}  // namespace cuda
}  // namespace effattn
