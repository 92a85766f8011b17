// Block-list tile policy for the SM80-class attention core (DESIGN.md §1, §5): block-sparse
// attention expressed on the same core as neighborhood attention (see na_policy.cuh for the
// policy interface).
//
// Geometry (1D, token axis 0 only; coord[1] = coord[2] = 0):
//   - query tiles of 2^q_log rows (the core's query tile: 64 forward / dQ, 32 or 64 for the
//     dK/dV pass), key tiles of 64 keys (the core's BN);
//   - query block m = rows [m * block_q, (m + 1) * block_q), key block n likewise with
//     block_k; block_q, block_k in {64, 128}, so a query block holds block_q >> q_log whole
//     query tiles and a key block block_k / 64 whole key tiles.
//   Forward / dQ (query-tile major): query tile t -> query block m = (t << q_log) / block_q
//     -> key tiles of the key blocks kv_indices[b, h, m, :kv_num_blocks[b, h, m]] (each block
//     contributes its block_k / 64 key tiles, in list order).
//   dK / dV (key-tile major): key tile t -> key block n = 64 t / block_k -> the transposed map
//     q_indices[b, h, n, :q_num_blocks[b, h, n]] (query blocks listing n) -> their query tiles.
//   Element masks only where a tile is partly allowed: a key tile reaching past the sequence's
//   key length (ragged tail) or, with is_causal, one crossing the bottom-right aligned
//   diagonal (key j allowed for query i iff j <= i + k_len - q_len). Padding query rows (past
//   q_len) are never written; the core ignores their values.
//
// Sequences: blockIdx.z is the batch index b (dense) or the sequence index s (packed varlen,
// cu_q / cu_k non-null, every batch stride of the core then 0 and coordinates absolute).
// Heads: blockIdx.y is the query head for the forward and dQ passes and the kv head for the
// dK/dV pass; the map head is blockIdx.y * head_mul + head_add (head_mul = 1, head_add = 0
// except for the dK/dV pass with per-head maps under GQA, which the launcher runs once per
// member g of the head group with head_mul = H / H_kv, head_add = g). The policy reads
// blockIdx (the core does not pass b and h to the policy); every call happens inside the
// kernels of the core, so blockIdx is that of the calling CTA.
//
// Map strides are element strides (0 on a broadcast axis); the last axis of kv_indices and
// q_indices is contiguous.
#pragma once

#ifdef __CUDACC__
#include <cuda_runtime.h>
#endif  // host-only tests (tests/cpp) compile the policy with their own blockIdx

#include <cstdint>

namespace effattn {
namespace cuda {

struct BlockListPolicy {
  // Maps.
  const int32_t* kv_num_blocks;  // [Bm, Hm, Mq]
  const int32_t* kv_indices;     // [Bm, Hm, Mq, max_blocks]
  const int32_t* q_num_blocks;   // [Bm, Hm, Mk] (transposed map; backward dK/dV only)
  const int32_t* q_indices;      // [Bm, Hm, Mk, Mq]
  int64_t nb_stride[3];          // kv_num_blocks strides (b, h, m)
  int64_t ix_stride[3];          // kv_indices strides (b, h, m)
  int64_t qnb_stride[3];         // q_num_blocks strides (b, h, n)
  int64_t qix_stride[3];         // q_indices strides (b, h, n)
  // Sequences.
  const int64_t* cu_q;  // [num_seqs + 1] or nullptr (dense batch)
  const int64_t* cu_k;
  int32_t q_tokens;  // Nq (dense batch)
  int32_t k_tokens;  // Nk
  // Blocks and tiles.
  int32_t block_q;
  int32_t block_k;
  int32_t q_log;  // log2 of the query-tile rows of the pass
  int32_t causal;
  int32_t head_mul;
  int32_t head_add;
  int32_t max_blocks;  // kv_indices.size(-1)

  static constexpr int kKLog = 6;  // key tiles of 64 keys

  struct QTile {
    int64_t q_start;  // absolute token of the sequence's first query
    int64_t k_start;
    int32_t q_len;
    int32_t k_len;
    int32_t q_lo;   // sequence-local first row of the tile
    int32_t num_k;  // key tiles to visit (forward / dQ)
    int64_t row;    // element offset of this tile's kv_indices row (forward / dQ)
  };
  struct KTile {
    int64_t k_start;
    int32_t k_len;
    int32_t tile;  // sequence-local key tile index
  };
  struct QRange {
    int64_t q_start;
    int64_t k_start;
    int32_t q_len;
    int32_t k_len;
    int64_t row;    // element offset of the q_indices row of this key tile's block
    int32_t count;  // query tiles to visit
  };
  struct RowInfo {
    int32_t end;  // allowed keys of the row: [0, end) (0 for padding rows)
  };
  struct ColInfo {
    int32_t key;
  };

  __device__ __forceinline__ int64_t map_b() const { return static_cast<int64_t>(blockIdx.z); }
  __device__ __forceinline__ int64_t map_h() const {
    return static_cast<int64_t>(blockIdx.y) * head_mul + head_add;
  }

  __device__ __forceinline__ void seq_bounds(int64_t& q_start, int32_t& q_len, int64_t& k_start,
                                             int32_t& k_len) const {
    if (cu_q != nullptr) {
      const int64_t s = blockIdx.z;
      q_start = cu_q[s];
      q_len = static_cast<int32_t>(cu_q[s + 1] - q_start);
      k_start = cu_k[s];
      k_len = static_cast<int32_t>(cu_k[s + 1] - k_start);
    } else {
      q_start = 0;
      q_len = q_tokens;
      k_start = 0;
      k_len = k_tokens;
    }
  }

  // ---- forward / dQ: query-tile major ----------------------------------------------------

  __device__ __forceinline__ bool setup_q_tile(int64_t linear, QTile& qt) const {
    seq_bounds(qt.q_start, qt.q_len, qt.k_start, qt.k_len);
    qt.num_k = 0;
    qt.row = 0;
    if (linear >= ((static_cast<int64_t>(qt.q_len) + (1 << q_log) - 1) >> q_log)) {
      qt.q_lo = 0;
      return false;
    }
    qt.q_lo = static_cast<int32_t>(linear << q_log);
    const int64_t m = qt.q_lo / block_q;
    const int64_t b = map_b(), h = map_h();
    // Counts and (k_tile) block indices are clamped although the op checked them: a map the
    // checked-map cache remembers may have been changed behind PyTorch's back since (numpy /
    // DLPack aliases, raw pointers); clamping keeps every read in bounds (results of such a map
    // are wrong, never out of bounds).
    int32_t nb = kv_num_blocks[b * nb_stride[0] + h * nb_stride[1] + m * nb_stride[2]];
    nb = nb < 0 ? 0 : (nb > max_blocks ? max_blocks : nb);
    qt.num_k = nb * (block_k >> kKLog);
    qt.row = b * ix_stride[0] + h * ix_stride[1] + m * ix_stride[2];
    return true;
  }

  __device__ __forceinline__ int num_k(const QTile& qt) const { return qt.num_k; }

  __device__ __forceinline__ KTile k_tile(const QTile& qt, int i) const {
    const int per = block_k >> kKLog;  // 1 or 2
    // Key blocks of the sequence: ceil(k_len / block_k) (see setup_q_tile on clamping).
    const int32_t k_tiles = (qt.k_len + (1 << kKLog) - 1) >> kKLog;
    const int32_t last = (per == 2 ? (k_tiles + 1) >> 1 : k_tiles) - 1;
    int32_t n = kv_indices[qt.row + i / per];
    n = n > last ? last : n;
    n = n < 0 ? 0 : n;
    KTile kt;
    kt.k_start = qt.k_start;
    kt.k_len = qt.k_len;
    kt.tile = n * per + i % per;
    return kt;
  }

  // ---- shared -----------------------------------------------------------------------------

  // False iff every key of the tile is in bounds and allowed for every valid row of the query
  // tile (the first row is the most restricted one under the causal mask).
  __device__ __forceinline__ bool needs_mask(const QTile& qt, const KTile& kt) const {
    const int64_t k_hi = (static_cast<int64_t>(kt.tile) + 1) << kKLog;  // one past the last key
    if (k_hi > kt.k_len) return true;
    if (causal) {
      const int64_t last_allowed = static_cast<int64_t>(qt.q_lo) + qt.k_len - qt.q_len;
      if (k_hi - 1 > last_allowed) return true;
    }
    return false;
  }

  __device__ __forceinline__ RowInfo row_info(const QTile& qt, int r) const {
    RowInfo ri;
    const int64_t row = static_cast<int64_t>(qt.q_lo) + r;
    if (row >= qt.q_len) {
      ri.end = 0;
      return ri;
    }
    int64_t end = qt.k_len;
    if (causal) {
      const int64_t c = row + qt.k_len - qt.q_len + 1;
      end = c < end ? c : end;
    }
    ri.end = static_cast<int32_t>(end > 0 ? end : 0);
    return ri;
  }

  __device__ __forceinline__ ColInfo col_info(const KTile& kt, int c) const {
    ColInfo ci;
    ci.key = (kt.tile << kKLog) + c;
    return ci;
  }

  __device__ __forceinline__ static bool allowed(const RowInfo& ri, const ColInfo& ci) {
    return ci.key < ri.end;
  }

  // Bit c set iff key c of the 64-key tile is allowed for the row: a prefix of the tile.
  __device__ __forceinline__ uint64_t row_mask64(const RowInfo& ri, const KTile& kt) const {
    int64_t n = static_cast<int64_t>(ri.end) - (static_cast<int64_t>(kt.tile) << kKLog);
    if (n <= 0) return 0ull;
    if (n >= 64) return ~0ull;
    return (1ull << n) - 1ull;
  }

  __device__ __forceinline__ bool q_coord(const QTile& qt, int r, int64_t (&c)[3]) const {
    const int64_t row = static_cast<int64_t>(qt.q_lo) + r;
    c[0] = qt.q_start + row;
    c[1] = 0;
    c[2] = 0;
    return row < qt.q_len;
  }

  __device__ __forceinline__ bool k_coord(const KTile& kt, int col, int64_t (&c)[3]) const {
    const int64_t key = (static_cast<int64_t>(kt.tile) << kKLog) + col;
    c[0] = kt.k_start + key;
    c[1] = 0;
    c[2] = 0;
    return key < kt.k_len;
  }

  // ---- dK / dV: key-tile major ---------------------------------------------------------------

  __device__ __forceinline__ bool setup_k_tile(int64_t linear, KTile& kt, QRange& qr) const {
    seq_bounds(qr.q_start, qr.q_len, qr.k_start, qr.k_len);
    kt.k_start = qr.k_start;
    kt.k_len = qr.k_len;
    kt.tile = static_cast<int32_t>(linear);
    qr.row = 0;
    qr.count = 0;
    if ((linear << kKLog) >= qr.k_len) return false;
    const int64_t n = (linear << kKLog) / block_k;
    const int64_t b = map_b(), h = map_h();
    const int32_t nq = q_num_blocks[b * qnb_stride[0] + h * qnb_stride[1] + n * qnb_stride[2]];
    qr.count = nq * (block_q >> q_log);
    qr.row = b * qix_stride[0] + h * qix_stride[1] + n * qix_stride[2];
    return true;
  }

  // 128-key CTAs (attn_bwd_fused128_sm90_kernel; the launcher uses them only with
  // block_k = 128): pair `linear` = key block `linear`, whose two 64-key tiles share one
  // query list. The second tile may lie past k_len (ragged tail): no valid key, empty masks.
  __device__ __forceinline__ bool setup_k_pair(int64_t linear, KTile& kt0, KTile& kt1, QRange& qr) const {
    const bool any = setup_k_tile(2 * linear, kt0, qr);
    kt1 = kt0;
    kt1.tile = kt0.tile + 1;
    return any;
  }

  // ---- tile-contiguous dQ accumulator (attn_bwd_fused128_sm90_kernel, dq_tile_layout.cuh) ----
  // Forward-grid index of a query tile (blockIdx.x of the forward / dQ launch with tiles of
  // 2^q_log rows; the sequence is blockIdx.z).
  __host__ __device__ __forceinline__ int64_t q_tile_linear(const QTile& qt) const {
    return static_cast<int64_t>(qt.q_lo) >> q_log;
  }
  // Accumulator slot inside one (batch, head) of a tile of the calling CTA's sequence. Dense
  // batches: the forward index (ceil(Nq / 2^q_log) slots per (b, head), dq_num_slots). Packed
  // varlen (every batch stride 0): sequence s = blockIdx.z starts at slot (cu_q[s] >> q_log) + s
  // and holds ceil(q_len / 2^q_log) slots; floor(c / T) + ceil(L / T) <= floor((c + L) / T) + 1
  // makes the runs of consecutive sequences disjoint and all of them end at or before
  // (cu_q[num_seqs] >> q_log) + num_seqs <= (Nq >> q_log) + num_seqs (instead of num_seqs x
  // ceil(max_q_len / T) slots for the forward grid's (tile, sequence) pairs, most of them
  // empty when lengths are skewed).
  __device__ __forceinline__ int64_t dq_slot(const QTile& qt) const {
    const int64_t t = static_cast<int64_t>(qt.q_lo) >> q_log;
    return cu_q != nullptr ? (qt.q_start >> q_log) + static_cast<int64_t>(blockIdx.z) + t : t;
  }
  // Slots per (batch, head): q_tokens = Nq (dense: per sequence; varlen: packed total),
  // num_seqs = 0 for dense batches.
  __host__ __device__ __forceinline__ static int64_t dq_num_slots(int64_t q_tokens, int64_t num_seqs, int q_log) {
    return num_seqs > 0 ? (q_tokens >> q_log) + num_seqs : (q_tokens + (int64_t(1) << q_log) - 1) >> q_log;
  }

  // Query tile i of the range; false when it holds no valid row (past the sequence's q_len).
  __device__ __forceinline__ bool q_tile(const QRange& qr, int i, QTile& qt) const {
    const int per = block_q >> q_log;  // 1, 2 or 4
    const int32_t m = q_indices[qr.row + i / per];
    qt.q_start = qr.q_start;
    qt.k_start = qr.k_start;
    qt.q_len = qr.q_len;
    qt.k_len = qr.k_len;
    qt.q_lo = m * block_q + (i % per) * (1 << q_log);
    qt.num_k = 0;
    qt.row = 0;
    return qt.q_lo < qt.q_len;
  }
};

}  // namespace cuda
}  // namespace effattn
