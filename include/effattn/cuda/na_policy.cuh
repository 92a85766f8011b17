// Tile policies for the attention core (DESIGN.md §1).
//
// A policy tells the core, for one (batch, head):
//   forward  (query-tile major): setup_q_tile(linear) -> QTile; num_k(QTile); k_tile(QTile, i)
//   backward (key-tile major):   setup_k_tile(linear) -> KTile + QRange; q_tile(QRange, i)
//   both:    needs_mask(QTile, KTile)   -- false: every (query, key) pair of the tiles is
//                                          allowed and in bounds, skip element masks
//            row_info(QTile, r) / col_info(KTile, c) + allowed(RowInfo, ColInfo)
//                                       -- the element predicate on partial tiles
//            q_coord(QTile, r, c[3]) / k_coord(KTile, c, c[3])
//                                       -- token coordinates of tile row r / column c
//                                          (false: padding row, zero-fill, never written)
// The core computes memory offsets as sum_a coord[a] * stride_token[a], so a 1D policy
// (block list, dense, causal) just fills coord[0] and leaves the others 0.
//
// NaPolicy: neighborhood attention of rank 1..3, always evaluated on 3 axes (unused axes
// have length 1, kernel 1, dilation 1, stride 1 and tile extent 1). A query tile is a box of
// 2^q_log[0] x 2^q_log[1] x 2^q_log[2] tokens of one dilation group, in group-local
// coordinates; key tiles likewise with k_log. Tile row r is the row-major linearisation of
// the box offsets (last axis fastest).
#pragma once

#include <cstdint>

#include "effattn/window.h"

namespace effattn {
namespace cuda {

struct NaAxisGeom {
  int32_t length;
  int32_t kernel;
  int32_t dilation;
  int32_t stride;
  int32_t causal;
  int32_t max_group_len;  // ceil(length / dilation)
  int32_t q_log;          // log2 of the query-tile extent on this axis
  int32_t k_log;          // log2 of the key-tile extent on this axis
  int32_t q_tiles;        // query tiles per dilation group: ceil(max_group_len / 2^q_log)
  int32_t k_tiles;        // key tiles per dilation group
};

struct NaGeom {
  NaAxisGeom ax[3];
};

struct NaPolicy {
  NaGeom geom;

  struct QTile {
    int32_t group[3];
    int32_t base[3];        // group-local coordinate of the tile's first row
    int32_t hi[3];          // one past the last valid group-local query coordinate
    int32_t k_lo[3];        // first key tile (group-local tile index) to visit
    int32_t k_n[3];         // number of key tiles per axis
    int32_t start_last[3];  // window start of the last valid query
    int32_t end_first[3];   // window end of the first valid query
    int32_t num_k;          // product of k_n
  };
  struct KTile {
    int32_t group[3];
    int32_t tile[3];  // group-local key tile index
  };
  struct QRange {  // query tiles touching a key tile (backward)
    int32_t group[3];
    int32_t lo[3];
    int32_t n[3];
    int32_t count;
  };
  struct RowInfo {
    int32_t start[3];
    int32_t end[3];
  };
  struct ColInfo {
    int32_t local[3];
  };

  // (Dilation 1, the common case, skips the division: g is then 0.)
  __host__ __device__ __forceinline__ static int32_t group_len(const NaAxisGeom& a, int32_t g) {
    return a.dilation == 1 ? a.length - g : (a.length - g + a.dilation - 1) / a.dilation;
  }

  // Group-local window [s, e) of the query at group-local coordinate `local` of group g.
  // Same function as effattn::axis_window (window.h), in 32-bit arithmetic (lengths are
  // < 2^31) with the divisions skipped for dilation 1 / stride 1: this runs per tile and per
  // masked row, and the 64-bit divisions of the generic version dominated the tile setup.
  __host__ __device__ __forceinline__ static void window(const NaAxisGeom& a, int32_t g,
                                                         int32_t local, int32_t& s,
                                                         int32_t& e) {
    const int32_t len = a.dilation == 1 ? a.length : group_len(a, g);
    const int32_t st = a.stride;
    const int32_t lead0 = st == 1 ? local : (local / st) * st;
    if (a.causal) {
      int32_t leader = lead0 + st - 1;
      leader = leader < len - 1 ? leader : len - 1;
      const int32_t start = leader - a.kernel + 1;
      s = start > 0 ? start : 0;
      e = local + 1 < len ? local + 1 : len;
    } else {
      const int32_t left = a.kernel >> 1;
      const int32_t right = (a.kernel >> 1) + (a.kernel & 1) - 1;
      int32_t leader = lead0 + (st >> 1);
      leader = leader < len - 1 ? leader : len - 1;
      int32_t start = leader - left > 0 ? leader - left : 0;
      if (leader + right >= len) start += len - right - leader - 1;
      s = start;
      e = start + a.kernel;
    }
  }

  __host__ __device__ __forceinline__ int64_t num_q_tiles() const {
    int64_t n = 1;
    for (int a = 0; a < 3; ++a) n *= static_cast<int64_t>(geom.ax[a].dilation) * geom.ax[a].q_tiles;
    return n;
  }
  __host__ __device__ __forceinline__ int64_t num_k_tiles() const {
    int64_t n = 1;
    for (int a = 0; a < 3; ++a) n *= static_cast<int64_t>(geom.ax[a].dilation) * geom.ax[a].k_tiles;
    return n;
  }

  // Query tile from group + group-local tile index per axis. False if it has no valid row.
  __device__ __forceinline__ bool setup_q_tile(const int32_t (&g)[3], const int32_t (&t)[3],
                                               QTile& qt) const {
    bool any = true;
    int32_t num = 1;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const NaAxisGeom& ax = geom.ax[a];
      const int32_t len = group_len(ax, g[a]);
      qt.group[a] = g[a];
      qt.base[a] = t[a] << ax.q_log;
      int32_t hi = qt.base[a] + (1 << ax.q_log);
      hi = hi < len ? hi : len;
      qt.hi[a] = hi;
      if (hi <= qt.base[a]) {
        any = false;
        qt.k_lo[a] = 0;
        qt.k_n[a] = 0;
        qt.start_last[a] = 0;
        qt.end_first[a] = 0;
        num = 0;
        continue;
      }
      int32_t s_first, e_first, s_last, e_last;
      window(ax, g[a], qt.base[a], s_first, e_first);
      window(ax, g[a], hi - 1, s_last, e_last);
      qt.start_last[a] = s_last;
      qt.end_first[a] = e_first;
      qt.k_lo[a] = s_first >> ax.k_log;
      qt.k_n[a] = ((e_last - 1) >> ax.k_log) - qt.k_lo[a] + 1;
      num *= qt.k_n[a];
    }
    qt.num_k = num;
    return any;
  }

  __device__ __forceinline__ bool setup_q_tile(int64_t linear, QTile& qt) const {
    int32_t g[3], t[3];
#pragma unroll
    for (int a = 2; a >= 0; --a) {
      const NaAxisGeom& ax = geom.ax[a];
      const int64_t n = static_cast<int64_t>(ax.dilation) * ax.q_tiles;
      const int32_t idx = static_cast<int32_t>(linear % n);
      linear /= n;
      g[a] = idx / ax.q_tiles;
      t[a] = idx % ax.q_tiles;
    }
    return setup_q_tile(g, t, qt);
  }

  __device__ __forceinline__ int num_k(const QTile& qt) const { return qt.num_k; }

  __device__ __forceinline__ KTile k_tile(const QTile& qt, int i) const {
    KTile kt;
#pragma unroll
    for (int a = 2; a >= 0; --a) {
      kt.group[a] = qt.group[a];
      kt.tile[a] = qt.k_lo[a] + i % qt.k_n[a];
      i /= qt.k_n[a];
    }
    return kt;
  }

  // Key tile fully inside every query's window on every axis -> no element mask needed.
  // (Window ends never pass the group length, so such a tile is also fully in bounds.
  // Padding query rows are not considered: their results are discarded.)
  __device__ __forceinline__ bool needs_mask(const QTile& qt, const KTile& kt) const {
    bool full = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const int32_t lo = kt.tile[a] << geom.ax[a].k_log;
      const int32_t hi = lo + (1 << geom.ax[a].k_log);
      full = full && lo >= qt.start_last[a] && hi <= qt.end_first[a];
    }
    return !full;
  }

  __device__ __forceinline__ void q_offsets(int r, int32_t (&off)[3]) const {
    off[2] = r & ((1 << geom.ax[2].q_log) - 1);
    off[1] = (r >> geom.ax[2].q_log) & ((1 << geom.ax[1].q_log) - 1);
    off[0] = r >> (geom.ax[2].q_log + geom.ax[1].q_log);
  }
  __device__ __forceinline__ void k_offsets(int c, int32_t (&off)[3]) const {
    off[2] = c & ((1 << geom.ax[2].k_log) - 1);
    off[1] = (c >> geom.ax[2].k_log) & ((1 << geom.ax[1].k_log) - 1);
    off[0] = c >> (geom.ax[2].k_log + geom.ax[1].k_log);
  }

  // Window of tile row r; padding rows get an empty window.
  __device__ __forceinline__ RowInfo row_info(const QTile& qt, int r) const {
    int32_t off[3];
    q_offsets(r, off);
    RowInfo ri;
    bool valid = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) valid = valid && (qt.base[a] + off[a] < qt.hi[a]);
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      if (valid) {
        window(geom.ax[a], qt.group[a], qt.base[a] + off[a], ri.start[a], ri.end[a]);
      } else {
        ri.start[a] = 0;
        ri.end[a] = 0;
      }
    }
    return ri;
  }

  __device__ __forceinline__ ColInfo col_info(const KTile& kt, int c) const {
    int32_t off[3];
    k_offsets(c, off);
    ColInfo ci;
#pragma unroll
    for (int a = 0; a < 3; ++a) ci.local[a] = (kt.tile[a] << geom.ax[a].k_log) + off[a];
    return ci;
  }

  // Window ends never exceed the group length, so out-of-bounds keys are rejected too.
  __device__ __forceinline__ static bool allowed(const RowInfo& ri, const ColInfo& ci) {
    bool ok = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) ok = ok && ci.local[a] >= ri.start[a] && ci.local[a] < ri.end[a];
    return ok;
  }

  // Bit c set iff allowed(ri, col_info(kt, c)), for key tiles of exactly 64 tokens
  // (k_log summing to 6). Built from per-axis ranges: the key tile is a box whose column
  // index is the row-major linearisation of the per-axis offsets, so the allowed set is the
  // AND of three "field in range" masks.
  __device__ __forceinline__ static uint64_t ones(int n) {
    return n >= 64 ? ~0ull : ((1ull << n) - 1ull);
  }
  // ~0 / ones(2^l) (l = 0..6): bit j * 2^l set for every j, i.e. the multiplier that repeats a
  // 2^l-bit field across 64 bits; a 64-bit division costs ~100 instructions, this a shift.
  __device__ __forceinline__ static uint64_t every_nth_bit(int l) {
    uint64_t m = 1ull;
    for (int w = 64 >> 1; w >= (1 << l); w >>= 1) m |= m << w;  // doubles the pattern: 64 / 2^l ones
    return m;
  }
  __device__ __forceinline__ uint64_t row_mask64(const RowInfo& ri, const KTile& kt) const {
    int rs[3], re[3];
    bool empty = false;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const int ext = 1 << geom.ax[a].k_log;
      const int base = kt.tile[a] << geom.ax[a].k_log;
      int lo = ri.start[a] - base, hi = ri.end[a] - base;
      lo = lo < 0 ? 0 : (lo > ext ? ext : lo);
      hi = hi < 0 ? 0 : (hi > ext ? ext : hi);
      rs[a] = lo;
      re[a] = hi;
      empty = empty || hi <= lo;
    }
    if (empty) return 0ull;
    const int l2 = geom.ax[2].k_log;
    const int l12 = geom.ax[1].k_log + l2;
    const uint64_t f2 = ones(re[2]) - ones(rs[2]);
    const uint64_t rep2 = f2 * every_nth_bit(l2);
    const uint64_t f1 = ones(re[1] << l2) - ones(rs[1] << l2);
    const uint64_t rep1 = f1 * every_nth_bit(l12);
    const uint64_t f0 = ones(re[0] << l12) - ones(rs[0] << l12);
    return rep2 & rep1 & f0;
  }

  // Global token coordinates of query-tile row r; false for padding rows.
  __device__ __forceinline__ bool q_coord(const QTile& qt, int r, int64_t (&c)[3]) const {
    int32_t off[3];
    q_offsets(r, off);
    bool valid = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const int32_t local = qt.base[a] + off[a];
      valid = valid && local < qt.hi[a];
      c[a] = qt.group[a] + static_cast<int64_t>(local) * geom.ax[a].dilation;
    }
    return valid;
  }

  __device__ __forceinline__ bool k_coord(const KTile& kt, int col, int64_t (&c)[3]) const {
    int32_t off[3];
    k_offsets(col, off);
    bool valid = true;
#pragma unroll
    for (int a = 0; a < 3; ++a) {
      const NaAxisGeom& ax = geom.ax[a];
      const int32_t local = (kt.tile[a] << ax.k_log) + off[a];
      valid = valid && local < group_len(ax, kt.group[a]);
      c[a] = kt.group[a] + static_cast<int64_t>(local) * ax.dilation;
    }
    return valid;
  }

  // ---- backward: key-tile major -------------------------------------------------------

  // Key tile from its linear index plus the query tiles whose windows touch it.
  // Returns false if the key tile holds no valid key (nothing to compute or write).
  __device__ __forceinline__ bool setup_k_tile(int64_t linear, KTile& kt, QRange& qr) const {
    bool any = true;
    int32_t count = 1;
#pragma unroll
    for (int a = 2; a >= 0; --a) {
      const NaAxisGeom& ax = geom.ax[a];
      const int64_t n = static_cast<int64_t>(ax.dilation) * ax.k_tiles;
      const int32_t idx = static_cast<int32_t>(linear % n);
      linear /= n;
      const int32_t g = idx / ax.k_tiles;
      kt.group[a] = g;
      kt.tile[a] = idx % ax.k_tiles;
      qr.group[a] = g;
      const int32_t len = group_len(ax, g);
      const int32_t klo = kt.tile[a] << ax.k_log;
      int32_t khi = klo + (1 << ax.k_log);
      khi = khi < len ? khi : len;
      if (khi <= klo) {
        any = false;
        qr.lo[a] = 0;
        qr.n[a] = 0;
        count = 0;
        continue;
      }
      // First query q with end(q) > klo (end is nondecreasing in q).
      int32_t lo = 0, hi = len;  // answer in [lo, hi]
      while (lo < hi) {
        const int32_t mid = (lo + hi) >> 1;
        int32_t s, e;
        window(ax, g, mid, s, e);
        if (e > klo) hi = mid; else lo = mid + 1;
      }
      const int32_t q_first = lo;
      // First query q with start(q) >= khi (start is nondecreasing in q); last = that - 1.
      lo = 0;
      hi = len;
      while (lo < hi) {
        const int32_t mid = (lo + hi) >> 1;
        int32_t s, e;
        window(ax, g, mid, s, e);
        if (s >= khi) hi = mid; else lo = mid + 1;
      }
      const int32_t q_last = lo - 1;
      if (q_first > q_last) {
        qr.lo[a] = 0;
        qr.n[a] = 0;
        count = 0;
        continue;
      }
      qr.lo[a] = q_first >> ax.q_log;
      qr.n[a] = (q_last >> ax.q_log) - qr.lo[a] + 1;
      count *= qr.n[a];
    }
    qr.count = count;
    return any;
  }

  // ---- backward with 128-key CTAs (attn_bwd_fused128_sm90_kernel) ------------------------
  // A CTA owns two key tiles adjacent on the pair axis (tiles 2p and 2p + 1 of one dilation
  // group, the other axes' tiles equal) and visits the union of their query ranges. The
  // ranges agree on the other axes; on the pair axis each is a run of query tiles, and the
  // runs of adjacent key tiles overlap or touch (a query after the first tile's last query
  // starts its window at or after that tile's end, so it reaches the second tile), so the
  // union is one run and the pair's range is again a box. Each half masks its own key tile:
  // a query tile outside one half's range gets needs_mask() = true and empty row masks there
  // (no window meets that key tile), i.e. P = 0 and dS = 0 for that half. With an odd number
  // of key tiles per group the last pair's second tile is past the group (no valid key).
  //
  // Query tiles [lo, lo + n) of axis `ax` (dilation group g) whose windows touch key tile
  // `tile` on that axis: the per-axis step of setup_k_tile (which keeps its own copy so that
  // the 64-key kernels compile to the same code). False when the key tile holds no key of the
  // group on this axis (n = 0); n = 0 also when no query reaches it.
  __device__ __forceinline__ static bool k_axis_range(const NaAxisGeom& ax, int32_t g, int32_t tile,
                                                       int32_t& lo_out, int32_t& n_out) {
    const int32_t len = group_len(ax, g);
    const int32_t klo = tile << ax.k_log;
    int32_t khi = klo + (1 << ax.k_log);
    khi = khi < len ? khi : len;
    if (khi <= klo) {
      lo_out = 0;
      n_out = 0;
      return false;
    }
    // First query q with end(q) > klo (end is nondecreasing in q).
    int32_t lo = 0, hi = len;  // answer in [lo, hi]
    while (lo < hi) {
      const int32_t mid = (lo + hi) >> 1;
      int32_t s, e;
      window(ax, g, mid, s, e);
      if (e > klo) hi = mid; else lo = mid + 1;
    }
    const int32_t q_first = lo;
    // First query q with start(q) >= khi (start is nondecreasing in q); last = that - 1.
    lo = 0;
    hi = len;
    while (lo < hi) {
      const int32_t mid = (lo + hi) >> 1;
      int32_t s, e;
      window(ax, g, mid, s, e);
      if (s >= khi) hi = mid; else lo = mid + 1;
    }
    const int32_t q_last = lo - 1;
    if (q_first > q_last) {
      lo_out = 0;
      n_out = 0;
      return true;
    }
    lo_out = q_first >> ax.q_log;
    n_out = (q_last >> ax.q_log) - lo_out + 1;
    return true;
  }

  // Pair axis: the last axis with more than one key tile (axis 0 for 1D problems).
  __host__ __device__ __forceinline__ int pair_axis() const {
    return geom.ax[2].k_tiles > 1 ? 2 : (geom.ax[1].k_tiles > 1 ? 1 : (geom.ax[0].k_tiles > 1 ? 0 : 2));
  }
  __host__ __device__ __forceinline__ int64_t num_k_pairs() const {
    const int pa = pair_axis();
    int64_t n = 1;
    for (int a = 0; a < 3; ++a)
      n *= static_cast<int64_t>(geom.ax[a].dilation) * (a == pa ? (geom.ax[a].k_tiles + 1) / 2 : geom.ax[a].k_tiles);
    return n;
  }

  // Key tiles of pair `linear` and the union of their query ranges. False if the first tile
  // (hence the pair) holds no valid key.
  __device__ __forceinline__ bool setup_k_pair(int64_t linear, KTile& kt0, KTile& kt1, QRange& qr) const {
    const int pa = pair_axis();
    bool any = true;
    int32_t count = 1;
#pragma unroll
    for (int a = 2; a >= 0; --a) {
      const NaAxisGeom& ax = geom.ax[a];
      const int32_t per = a == pa ? (ax.k_tiles + 1) / 2 : ax.k_tiles;
      const int64_t n = static_cast<int64_t>(ax.dilation) * per;
      const int32_t idx = static_cast<int32_t>(linear % n);
      linear /= n;
      const int32_t g = idx / per;
      const int32_t t = idx % per;
      kt0.group[a] = kt1.group[a] = qr.group[a] = g;
      if (a == pa) {
        kt0.tile[a] = 2 * t;
        kt1.tile[a] = 2 * t + 1;
        int32_t lo1, n1;
        if (!k_axis_range(ax, g, 2 * t, qr.lo[a], qr.n[a])) any = false;
        k_axis_range(ax, g, 2 * t + 1, lo1, n1);
        if (qr.n[a] == 0) {
          qr.lo[a] = lo1;
          qr.n[a] = n1;
        } else if (n1 > 0) {
          const int32_t lo = qr.lo[a] < lo1 ? qr.lo[a] : lo1;
          const int32_t e0 = qr.lo[a] + qr.n[a], e1 = lo1 + n1;
          qr.lo[a] = lo;
          qr.n[a] = (e0 > e1 ? e0 : e1) - lo;
        }
      } else {
        kt0.tile[a] = kt1.tile[a] = t;
        if (!k_axis_range(ax, g, t, qr.lo[a], qr.n[a])) any = false;
      }
      count *= qr.n[a];
    }
    qr.count = count;
    return any;
  }

  // ---- tile-contiguous dQ accumulator (attn_bwd_fused128_sm90_kernel, dq_tile_layout.cuh) ----
  // Linear index of a query tile in the forward grid's numbering (the inverse of
  // setup_q_tile(linear): axis 2 fastest, per axis group-major then tile), in this policy's
  // geometry (the backward's 64-row tiles). In [0, num_q_tiles()).
  __host__ __device__ __forceinline__ int64_t q_tile_linear(const QTile& qt) const {
    int64_t lin = 0;
    for (int a = 0; a < 3; ++a) {  // (no #pragma unroll: host code too; -O3 unrolls it)
      const NaAxisGeom& ax = geom.ax[a];
      lin = lin * (static_cast<int64_t>(ax.dilation) * ax.q_tiles) +
            (static_cast<int64_t>(qt.group[a]) * ax.q_tiles + (qt.base[a] >> ax.q_log));
    }
    return lin;
  }
  // Accumulator slot of a query tile inside one (batch, head): the forward numbering; the
  // accumulator holds num_q_tiles() slots per (batch, head).
  __host__ __device__ __forceinline__ int64_t dq_slot(const QTile& qt) const { return q_tile_linear(qt); }

  // i < qr.count = n[0] n[1] n[2], so axis 0 needs no modulo; axes with one tile (all but
  // one on 1D problems) need no division.
  __device__ __forceinline__ bool q_tile(const QRange& qr, int i, QTile& qt) const {
    int32_t t[3];
#pragma unroll
    for (int a = 2; a >= 1; --a) {
      if (qr.n[a] == 1) {
        t[a] = qr.lo[a];
      } else {
        t[a] = qr.lo[a] + i % qr.n[a];
        i /= qr.n[a];
      }
    }
    t[0] = qr.lo[0] + i;
    return setup_q_tile(qr.group, t, qt);
  }
};

}  // namespace cuda
}  // namespace effattn
