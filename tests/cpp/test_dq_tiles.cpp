// Tile-contiguous dQ accumulator of the 128-key fused backward (dq_tile_layout.cuh), on the
// host:
//   - the in-block XOR swizzle: a bijection, 16-byte groups kept together (the convert kernel's
//     float4 reads), the consumers' fragment addresses (dq_frag_byte_offset) equal to the
//     layout, and their 8-byte stores free of bank conflicts per half-warp;
//   - NaPolicy (1D with dilation / stride / causal / odd lengths, and 2D / 3D, which fused128
//     runs under EFFATTN_SM90_BWD=fused128) and BlockListPolicy (dense and packed varlen,
//     block_q 64 / 128, causal, GQA with per-head maps): every query tile the backward's CTAs
//     visit (setup_k_pair + q_tile) has the forward grid's index (setup_q_tile(q_tile_linear)
//     gives the same tile) and the same accumulator slot as the convert kernel's CTA for that
//     tile; every valid token of every head is exactly one (slot, row) of the accumulator; and
//     the accumulator offsets the kernels form (same formulas as the launchers) stay inside
//     the allocation, which is at least the [B, tokens, H, D] one (the atomics fallback).
// The policies compile on the host with the CUDA qualifiers defined away; BlockListPolicy reads
// blockIdx, which this file provides.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

#ifndef __CUDACC__
#define __device__
#define __host__
#define __forceinline__ inline
struct FakeBlockIdx {
  unsigned x, y, z;
};
static FakeBlockIdx blockIdx;
#endif
#include "effattn/cuda/block_list_policy.cuh"
#include "effattn/cuda/dq_tile_layout.cuh"
#include "effattn/cuda/na_policy.cuh"
#include "random_tile_shape.h"

using effattn::cuda::BlockListPolicy;
using effattn::cuda::dq_block_offset;
using effattn::cuda::dq_frag_byte_offset;
using effattn::cuda::dq_slot_floats;
using effattn::cuda::kDqBlockFloats;
using effattn::cuda::NaAxisGeom;
using effattn::cuda::NaPolicy;

namespace {

constexpr int kD = 128;  // the 128-key kernel's head dim

TEST(DqTileLayout, SwizzleIsBijectiveAndKeeps16ByteGroups) {
  std::vector<int> hit(kDqBlockFloats, 0);
  for (int r = 0; r < 64; ++r)
    for (int c = 0; c < 64; ++c) {
      const int o = dq_block_offset(r, c);
      ASSERT_GE(o, r * 64);  // stays in its row
      ASSERT_LT(o, r * 64 + 64);
      ++hit[o];
      if (c % 4 == 0) {
        ASSERT_EQ(o % 4, 0);
        for (int e = 1; e < 4; ++e) ASSERT_EQ(dq_block_offset(r, c + e), o + e);
      }
    }
  for (int v : hit) ASSERT_EQ(v, 1);
}

TEST(DqTileLayout, FragmentStoresMatchLayoutAndAreConflictFree) {
  // wgmma m64nNk16 f32 accumulator: warp w, lane (grp = lane / 4, qid = lane % 4) holds rows
  // 16 w + grp (+ 8) and columns 8 n + 2 qid + {0, 1}.
  for (int w = 0; w < 4; ++w)
    for (int n = 0; n < 8; ++n)
      for (int rr = 0; rr < 2; ++rr) {
        for (int hw = 0; hw < 2; ++hw) {  // 8-byte accesses: served per half-warp
          std::set<int> banks2;           // 8-byte bank pairs (bank / 2) of the 16 lanes
          for (int lane = 16 * hw; lane < 16 * hw + 16; ++lane) {
            const int grp = lane / 4, qid = lane % 4;
            const int row0 = 16 * w + grp;
            const uint32_t byte = dq_frag_byte_offset(row0, grp, qid, n) + rr * 8 * 256;
            ASSERT_EQ(byte, 4u * static_cast<uint32_t>(dq_block_offset(row0 + 8 * rr, 8 * n + 2 * qid)));
            ASSERT_EQ(byte % 8, 0u);
            // sm90_bwd_stage_dq's form (1024-aligned image): the n = 0 address XOR 32 n.
            ASSERT_EQ((1024u + dq_frag_byte_offset(row0, grp, qid, 0)) ^ static_cast<uint32_t>(n << 5),
                      1024u + dq_frag_byte_offset(row0, grp, qid, n));
            banks2.insert(static_cast<int>((byte % 128) / 8));
          }
          ASSERT_EQ(banks2.size(), 16u) << "warp " << w << " n " << n << " rr " << rr;
        }
        // Without the swizzle the same stores would conflict 4-way (sanity of the check).
        std::set<int> plain;
        for (int lane = 0; lane < 16; ++lane) plain.insert(((8 * n + 2 * (lane % 4)) * 4 % 128) / 8);
        ASSERT_EQ(plain.size(), 4u);
      }
}

// ---- NaPolicy -----------------------------------------------------------------------------

NaPolicy make_na(int rank, const int32_t (&len)[3], const int32_t (&kernel)[3], const int32_t (&dil)[3],
                 const int32_t (&stride)[3], const int32_t (&causal)[3], const int (&ql)[3], const int (&kl)[3]) {
  NaPolicy pol;
  for (int a = 0; a < 3; ++a) {
    NaAxisGeom& ax = pol.geom.ax[a];
    if (a < rank) {
      ax.length = len[a];
      ax.kernel = kernel[a];
      ax.dilation = dil[a];
      ax.stride = stride[a];
      ax.causal = causal[a];
    } else {
      ax.length = ax.kernel = ax.dilation = ax.stride = 1;
      ax.causal = 0;
    }
    ax.max_group_len = (ax.length + ax.dilation - 1) / ax.dilation;
    ax.q_log = a < rank ? ql[a] : 0;
    ax.k_log = a < rank ? kl[a] : 0;
    ax.q_tiles = (ax.max_group_len + (1 << ax.q_log) - 1) >> ax.q_log;
    ax.k_tiles = (ax.max_group_len + (1 << ax.k_log) - 1) >> ax.k_log;
  }
  return pol;
}

NaPolicy random_na(std::mt19937& rng, int rank) {
  int ql[3], kl[3];  // rank 1: 64 x 1 x 1, as na_choose_tiles
  random_tile_logs(rng, rank, ql);
  random_tile_logs(rng, rank, kl);
  int32_t len[3], kernel[3], dil[3], stride[3], causal[3];
  for (int a = 0; a < 3; ++a) {
    const int max_len = rank == 1 ? 3000 : (rank == 2 ? 60 : 18);
    len[a] = 2 + static_cast<int32_t>(rng() % max_len);
    if (rank == 1 && rng() % 2) len[a] |= 1;  // odd lengths
    dil[a] = rng() % 2 ? 1 + static_cast<int32_t>(rng() % 4) : 1;
    if (2 * dil[a] > len[a]) dil[a] = 1;
    const int32_t gl = len[a] / dil[a];  // shortest group
    kernel[a] = 2 + static_cast<int32_t>(rng() % (gl - 1));
    stride[a] = rng() % 2 ? 1 : 1 + static_cast<int32_t>(rng() % kernel[a]);
    causal[a] = rng() % 3 == 0 ? 1 : 0;
  }
  return make_na(rank, len, kernel, dil, stride, causal, ql, kl);
}

void check_na(const NaPolicy& pol, const std::string& what) {
  const int64_t slots = pol.num_q_tiles();
  const int64_t L[3] = {pol.geom.ax[0].length, pol.geom.ax[1].length, pol.geom.ax[2].length};
  const int64_t tokens = L[0] * L[1] * L[2];
  // Backward: every visited query tile is the forward's tile q_tile_linear(qt).
  std::set<int64_t> visited;
  for (int64_t lin = 0; lin < pol.num_k_pairs(); ++lin) {
    NaPolicy::KTile kt0, kt1;
    NaPolicy::QRange qr;
    if (!pol.setup_k_pair(lin, kt0, kt1, qr)) continue;
    for (int i = 0; i < qr.count; ++i) {
      NaPolicy::QTile qt, fq;
      if (!pol.q_tile(qr, i, qt)) continue;
      const int64_t t = pol.q_tile_linear(qt);
      ASSERT_EQ(pol.dq_slot(qt), t);
      ASSERT_GE(t, 0) << what;
      ASSERT_LT(t, slots) << what;
      ASSERT_TRUE(pol.setup_q_tile(t, fq)) << what;
      for (int a = 0; a < 3; ++a) {
        ASSERT_EQ(fq.group[a], qt.group[a]) << what << " pair " << lin << " tile " << i;
        ASSERT_EQ(fq.base[a], qt.base[a]) << what;
        ASSERT_EQ(fq.hi[a], qt.hi[a]) << what;
      }
      visited.insert(t);
    }
  }
  // Forward grid (the convert kernel's): every valid token exactly once; the index
  // round-trips; every tile the backward visits is one the convert kernel converts.
  std::vector<int> count(static_cast<size_t>(tokens), 0);
  for (int64_t t = 0; t < slots; ++t) {
    NaPolicy::QTile qt;
    if (!pol.setup_q_tile(t, qt)) {
      ASSERT_EQ(visited.count(t), 0u) << what;
      continue;
    }
    ASSERT_EQ(pol.q_tile_linear(qt), t) << what;
    int valid = 0;
    for (int r = 0; r < 64; ++r) {
      int64_t c[3];
      if (!pol.q_coord(qt, r, c)) continue;
      ++valid;
      for (int a = 0; a < 3; ++a) {
        ASSERT_GE(c[a], 0);
        ASSERT_LT(c[a], L[a]) << what;
      }
      ++count[static_cast<size_t>((c[0] * L[1] + c[1]) * L[2] + c[2])];
    }
    ASSERT_GT(valid, 0) << what << " tile " << t;
  }
  for (int64_t i = 0; i < tokens; ++i) ASSERT_EQ(count[static_cast<size_t>(i)], 1) << what << " token " << i;
  // Offsets (na_launch.cuh): acc + b * (H slots 64 D) + hq * (slots 64 D) + slot * 64 D + half * 4096 + in-block.
  const int64_t B = 2, H = 3;
  const int64_t total = B * H * slots * dq_slot_floats(kD);  // na_dq_tile_floats
  const int64_t head = slots * dq_slot_floats(kD), batch = H * head;
  const int64_t last = (B - 1) * batch + (H - 1) * head + (slots - 1) * dq_slot_floats(kD) +
                       (kD / 64 - 1) * kDqBlockFloats + (kDqBlockFloats - 1);  // in-block: [0, 4096)
  ASSERT_EQ(last, total - 1) << what;
  ASSERT_GE(total, B * tokens * H * kD) << what;  // holds the atomics layout too
}

TEST(DqTileNumbering, Na1D) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 400; ++trial) {
    const NaPolicy pol = random_na(rng, 1);
    const NaAxisGeom& ax = pol.geom.ax[0];
    check_na(pol, "1D trial " + std::to_string(trial) + " L " + std::to_string(ax.length) + " K " +
                      std::to_string(ax.kernel) + " dil " + std::to_string(ax.dilation) + " causal " +
                      std::to_string(ax.causal));
    if (HasFatalFailure()) return;
  }
  // The benchmark problem's axis (L 32768, K 2049) and a dilated odd variant.
  check_na(make_na(1, {32768, 1, 1}, {2049, 1, 1}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {6, 0, 0}, {6, 0, 0}), "bench");
  check_na(make_na(1, {32767, 1, 1}, {1025, 1, 1}, {3, 1, 1}, {1, 1, 1}, {1, 0, 0}, {6, 0, 0}, {6, 0, 0}),
           "bench dilated causal");
}

TEST(DqTileNumbering, SizeGuard) {
  // dq_tiles_size_ok (the launchers' choice of layout): slots of mostly padding rows fall back to
  // the atomics once they cost more than 2x and 64 MiB; small or well-filled problems keep tiles.
  using effattn::cuda::dq_tiles_size_ok;
  auto ok = [](const NaPolicy& pol, int64_t B, int64_t H) {
    const int64_t L = pol.geom.ax[0].length;
    return dq_tiles_size_ok(B * H * pol.num_q_tiles() * dq_slot_floats(kD), B * L * H * kD);
  };
  // The benchmark axis: every slot full.
  EXPECT_TRUE(ok(make_na(1, {32768, 1, 1}, {2049, 1, 1}, {1, 1, 1}, {1, 1, 1}, {0, 0, 0}, {6, 0, 0}, {6, 0, 0}), 2, 16));
  // Dilation 2048 on 4096 tokens: 2 valid rows per 64-row slot (32x): atomics at B2 H16 ...
  const NaPolicy sparse = make_na(1, {4096, 1, 1}, {2, 1, 1}, {2048, 1, 1}, {1, 1, 1}, {0, 0, 0}, {6, 0, 0}, {6, 0, 0});
  EXPECT_EQ(sparse.num_q_tiles(), 2048);
  EXPECT_FALSE(ok(sparse, 2, 16));
  // ... but tiles on a small problem (B1 H1: 64 MiB of slack at most).
  EXPECT_TRUE(ok(sparse, 1, 1));
  EXPECT_TRUE(dq_tiles_size_ok(200, 100));
  EXPECT_FALSE(dq_tiles_size_ok((int64_t(1) << 24) + 201, 100));
}

TEST(DqTileNumbering, Na2D3D) {
  std::mt19937 rng(12);
  for (int trial = 0; trial < 300; ++trial) {
    const int rank = 2 + trial % 2;
    check_na(random_na(rng, rank), std::to_string(rank) + "D trial " + std::to_string(trial));
    if (HasFatalFailure()) return;
  }
}

// ---- BlockListPolicy ------------------------------------------------------------------------

struct BsCase {
  int64_t batch = 1, heads = 2, kv_heads = 1, block_q = 128, q_tokens = 0, k_tokens = 0;
  bool causal = false, per_head = false;
  std::vector<int64_t> cu_q, cu_k;  // empty: dense
  int64_t num_seqs = 0, max_q = 0, max_k = 0;
  // Maps [Bm][Hm][M*] (Bm = grid batch, Hm = heads or 1).
  int64_t mq = 0, mk = 0;
  std::vector<int32_t> kv_num, kv_idx, q_num, q_idx;
};

BsCase random_bs(std::mt19937& rng, bool varlen) {
  BsCase c;
  c.block_q = rng() % 2 ? 64 : 128;
  c.causal = rng() % 3 == 0;
  c.kv_heads = rng() % 2 ? 1 : 2;
  c.heads = c.kv_heads * (1 + static_cast<int64_t>(rng() % 2));
  c.per_head = c.heads > 1 && rng() % 2;
  if (varlen) {
    c.num_seqs = 1 + static_cast<int64_t>(rng() % 5);
    c.cu_q.push_back(0);
    c.cu_k.push_back(0);
    for (int64_t s = 0; s < c.num_seqs; ++s) {
      const int64_t lq = rng() % 6 == 0 ? 0 : static_cast<int64_t>(rng() % 700);
      const int64_t lk = 1 + static_cast<int64_t>(rng() % 700);
      c.cu_q.push_back(c.cu_q.back() + lq);
      c.cu_k.push_back(c.cu_k.back() + lk);
      c.max_q = std::max(c.max_q, lq);
      c.max_k = std::max(c.max_k, lk);
    }
    c.q_tokens = c.cu_q.back() + static_cast<int64_t>(rng() % 100);  // packed Nq may hold slack
    c.k_tokens = c.cu_k.back();
  } else {
    c.batch = 1 + static_cast<int64_t>(rng() % 3);
    c.q_tokens = 1 + static_cast<int64_t>(rng() % 1200);
    c.k_tokens = 1 + static_cast<int64_t>(rng() % 1200);
    c.max_q = c.q_tokens;
    c.max_k = c.k_tokens;
  }
  const int64_t bm = varlen ? c.num_seqs : c.batch, hm = c.per_head ? c.heads : 1;
  c.mq = (c.max_q + c.block_q - 1) / c.block_q;
  c.mk = (c.max_k + 127) / 128;  // block_k = 128 (the 128-key kernel's case)
  c.kv_num.assign(static_cast<size_t>(bm * hm * c.mq), 0);
  c.kv_idx.assign(static_cast<size_t>(bm * hm * c.mq * std::max<int64_t>(c.mk, 1)), 0);
  c.q_num.assign(static_cast<size_t>(bm * hm * c.mk), 0);
  c.q_idx.assign(static_cast<size_t>(bm * hm * c.mk * std::max<int64_t>(c.mq, 1)), 0);
  for (int64_t b = 0; b < bm; ++b)
    for (int64_t h = 0; h < hm; ++h)
      for (int64_t m = 0; m < c.mq; ++m) {
        const int64_t row = (b * hm + h) * c.mq + m;
        int32_t n_live = 0;
        for (int64_t n = 0; n < c.mk; ++n)
          if (rng() % 2) {
            c.kv_idx[static_cast<size_t>(row * c.mk + n_live++)] = static_cast<int32_t>(n);
            const int64_t trow = (b * hm + h) * c.mk + n;
            c.q_idx[static_cast<size_t>(trow * c.mq + c.q_num[static_cast<size_t>(trow)]++)] = static_cast<int32_t>(m);
          }
        c.kv_num[static_cast<size_t>(row)] = n_live;
      }
  return c;
}

BlockListPolicy make_bs(const BsCase& c, int q_tile_rows) {
  const int64_t hm = c.per_head ? c.heads : 1;
  BlockListPolicy pol{};
  pol.kv_num_blocks = c.kv_num.data();
  pol.kv_indices = c.kv_idx.data();
  pol.q_num_blocks = c.q_num.data();
  pol.q_indices = c.q_idx.data();
  pol.nb_stride[0] = hm * c.mq;
  pol.nb_stride[1] = c.per_head ? c.mq : 0;
  pol.nb_stride[2] = 1;
  pol.ix_stride[0] = hm * c.mq * c.mk;
  pol.ix_stride[1] = c.per_head ? c.mq * c.mk : 0;
  pol.ix_stride[2] = c.mk;
  pol.qnb_stride[0] = hm * c.mk;
  pol.qnb_stride[1] = c.per_head ? c.mk : 0;
  pol.qnb_stride[2] = 1;
  pol.qix_stride[0] = hm * c.mk * c.mq;
  pol.qix_stride[1] = c.per_head ? c.mk * c.mq : 0;
  pol.qix_stride[2] = c.mq;
  pol.cu_q = c.cu_q.empty() ? nullptr : c.cu_q.data();
  pol.cu_k = c.cu_k.empty() ? nullptr : c.cu_k.data();
  pol.q_tokens = static_cast<int32_t>(c.q_tokens);
  pol.k_tokens = static_cast<int32_t>(c.k_tokens);
  pol.block_q = static_cast<int32_t>(c.block_q);
  pol.block_k = 128;
  pol.q_log = q_tile_rows == 64 ? 6 : 7;
  pol.causal = c.causal ? 1 : 0;
  pol.head_mul = 1;
  pol.head_add = 0;
  pol.max_blocks = static_cast<int32_t>(std::max<int64_t>(c.mk, 1));  // kv_idx rows: max(mk, 1)
  return pol;
}

void check_bs(const BsCase& c, const std::string& what) {
  const bool vl = !c.cu_q.empty();
  const int64_t grid_b = vl ? c.num_seqs : c.batch;
  const int64_t group = c.heads / c.kv_heads;
  const bool split = c.per_head && group > 1;  // per-member dK/dV passes (bs_launch.cuh)
  const int64_t slots = BlockListPolicy::dq_num_slots(c.q_tokens, vl ? c.num_seqs : 0, 6);
  const int64_t slot_row = slots * dq_slot_floats(kD);
  const int64_t total = (vl ? 1 : c.batch) * c.heads * slot_row;  // bs_dq_tile_floats
  const int64_t acc_batch = vl ? 0 : c.heads * slot_row;
  // Which (query head, slot) blocks the backward adds into, from which sequence.
  std::set<std::vector<int64_t>> bwd_blocks;
  const int64_t k_tiles = (c.max_k + 63) / 64;
  for (int64_t g = 0; g < (split ? group : 1); ++g) {
    BlockListPolicy pol = make_bs(c, 64);
    if (split) {
      pol.head_mul = static_cast<int32_t>(group);
      pol.head_add = static_cast<int32_t>(g);
    }
    const int64_t kv_group = split ? 1 : group;
    const int64_t dqt_head = slot_row * (split ? group : 1);
    const int64_t base = split ? g * slot_row : 0;
    for (int64_t s = 0; s < grid_b; ++s)
      for (int64_t kvh = 0; kvh < c.kv_heads; ++kvh)
        for (int64_t pr = 0; pr < (k_tiles + 1) / 2; ++pr) {
          blockIdx = {static_cast<unsigned>(pr), static_cast<unsigned>(kvh), static_cast<unsigned>(s)};
          BlockListPolicy::KTile kt0, kt1;
          BlockListPolicy::QRange qr;
          if (!pol.setup_k_pair(pr, kt0, kt1, qr)) continue;
          const int64_t total_it = kv_group * qr.count;
          for (int64_t it = 0; it < total_it; ++it) {
            const int64_t hq = kvh * kv_group + it / qr.count;  // the kernel's head
            BlockListPolicy::QTile qt;
            if (!pol.q_tile(qr, static_cast<int>(it % qr.count), qt)) continue;
            const int64_t sl = pol.dq_slot(qt);
            ASSERT_GE(sl, 0) << what;
            ASSERT_LT(sl, slots) << what;
            const int64_t o = base + s * acc_batch + hq * dqt_head + sl * dq_slot_floats(kD);
            ASSERT_GE(o, 0) << what;
            ASSERT_LE(o + dq_slot_floats(kD), total) << what;
            const int64_t real_h = split ? kvh * group + g : hq;
            ASSERT_EQ(o, s * acc_batch + real_h * slot_row + sl * dq_slot_floats(kD)) << what;
            // Forward numbering: same tile from the forward grid's CTA (L, real_h, s).
            const int64_t L = pol.q_tile_linear(qt);
            ASSERT_EQ(L, static_cast<int64_t>(qt.q_lo) >> 6);
            const BlockListPolicy fwd = make_bs(c, 64);
            blockIdx = {static_cast<unsigned>(L), static_cast<unsigned>(real_h), static_cast<unsigned>(s)};
            BlockListPolicy::QTile fq;
            ASSERT_TRUE(fwd.setup_q_tile(L, fq)) << what;
            ASSERT_EQ(fq.q_lo, qt.q_lo) << what;
            ASSERT_EQ(fq.q_start, qt.q_start) << what;
            ASSERT_EQ(fwd.dq_slot(fq), sl) << what;
            bwd_blocks.insert({real_h, s, sl});
            blockIdx = {static_cast<unsigned>(pr), static_cast<unsigned>(kvh), static_cast<unsigned>(s)};
          }
        }
  }
  // Convert kernel's grid: (ceil(max_q / 64), H, grid_b); every token of every head once, each
  // accumulator row of at most one (sequence, tile, row).
  const BlockListPolicy fwd = make_bs(c, 64);
  const int64_t tiles = (c.max_q + 63) / 64;
  std::vector<int> row_used(static_cast<size_t>(total / kD), 0);
  for (int64_t h = 0; h < c.heads; ++h) {
    std::vector<int> count(static_cast<size_t>((vl ? 1 : c.batch) * c.q_tokens), 0);
    std::set<std::vector<int64_t>> converted;
    for (int64_t s = 0; s < grid_b; ++s)
      for (int64_t t = 0; t < tiles; ++t) {
        blockIdx = {static_cast<unsigned>(t), static_cast<unsigned>(h), static_cast<unsigned>(s)};
        BlockListPolicy::QTile qt;
        if (!fwd.setup_q_tile(t, qt)) continue;
        const int64_t sl = fwd.dq_slot(qt);
        ASSERT_GE(sl, 0) << what;
        ASSERT_LT(sl, slots) << what;
        converted.insert({h, s, sl});
        for (int r = 0; r < 64; ++r) {
          int64_t cc[3];
          if (!fwd.q_coord(qt, r, cc)) continue;
          const int64_t tok = (vl ? 0 : s * c.q_tokens) + cc[0];
          ASSERT_LT(tok, static_cast<int64_t>(count.size())) << what;
          ++count[static_cast<size_t>(tok)];
          const int64_t row = (s * acc_batch + h * slot_row + sl * dq_slot_floats(kD)) / kD + r;
          ASSERT_LT(row, static_cast<int64_t>(row_used.size())) << what;
          ASSERT_EQ(++row_used[static_cast<size_t>(row)], 1) << what << " accumulator row reused";
        }
      }
    // Tokens inside a sequence (varlen: [cu_q[s], cu_q[s + 1]); dense: all) exactly once.
    for (int64_t s = 0; s < grid_b; ++s) {
      const int64_t lo = vl ? c.cu_q[static_cast<size_t>(s)] : s * c.q_tokens;
      const int64_t hi = vl ? c.cu_q[static_cast<size_t>(s) + 1] : (s + 1) * c.q_tokens;
      for (int64_t i = lo; i < hi; ++i) ASSERT_EQ(count[static_cast<size_t>(i)], 1) << what << " token " << i;
    }
    for (const auto& blk : bwd_blocks) {
      if (blk[0] == h) {
        ASSERT_EQ(converted.count(blk), 1u) << what << " block never converted";
      }
    }
  }
  ASSERT_GE(total, c.batch * c.q_tokens * c.heads * kD) << what;  // holds the atomics layout too
}

TEST(DqTileNumbering, BlockSparseDense) {
  std::mt19937 rng(21);
  for (int trial = 0; trial < 300; ++trial) {
    check_bs(random_bs(rng, false), "dense trial " + std::to_string(trial));
    if (HasFatalFailure()) return;
  }
}

TEST(DqTileNumbering, BlockSparseVarlen) {
  std::mt19937 rng(22);
  for (int trial = 0; trial < 300; ++trial) {
    check_bs(random_bs(rng, true), "varlen trial " + std::to_string(trial));
    if (HasFatalFailure()) return;
  }
}

// Maps changed after they were checked (the checked-map cache cannot see writes behind
// PyTorch's back): counts and block indices are clamped, so every key tile the forward visits
// lies inside its sequence's key range and no row reads past its max_blocks entries.
TEST(BlockListPolicyBounds, CorruptedMapsStayInRange) {
  std::mt19937 rng(24);
  int64_t visited = 0;
  for (int trial = 0; trial < 200; ++trial) {
    BsCase c = random_bs(rng, trial % 2 == 1);
    for (auto& n : c.kv_num) n = static_cast<int32_t>(rng() % 7) - 3 + (rng() % 2 ? 100000 : 0);
    for (auto& i : c.kv_idx) i = static_cast<int32_t>(rng() % 2 ? rng() % 1000000 : -static_cast<int32_t>(rng() % 1000));
    const BlockListPolicy pol = make_bs(c, 64);
    const int64_t grid_b = c.cu_q.empty() ? c.batch : c.num_seqs;
    for (int64_t s = 0; s < grid_b; ++s)
      for (int64_t h = 0; h < c.heads; ++h) {
        blockIdx = {0, static_cast<unsigned>(h), static_cast<unsigned>(s)};
        for (int64_t t = 0; t * 64 < c.max_q; ++t) {
          BlockListPolicy::QTile qt;
          if (!pol.setup_q_tile(t, qt)) continue;
          ASSERT_GE(qt.num_k, 0);
          ASSERT_LE(qt.num_k, pol.max_blocks * 2);  // block_k 128: two key tiles per block
          const int64_t k_tiles = (qt.k_len + 63) / 64;
          for (int i = 0; i < qt.num_k; ++i) {
            const BlockListPolicy::KTile kt = pol.k_tile(qt, i);
            ASSERT_GE(kt.tile, 0) << "trial " << trial;
            // The tile's first key is inside the sequence (the second tile of the last
            // 128-key block may start past it: its keys are masked, never loaded).
            ASSERT_LT(static_cast<int64_t>(kt.tile / 2) * 2, std::max<int64_t>(k_tiles, 1)) << "trial " << trial;
            ++visited;
          }
        }
      }
  }
  EXPECT_GT(visited, 10000);
}

TEST(DqTileNumbering, VarlenSlotBound) {
  // (cu_q[s] >> 6) + s + ceil(len_s / 64) <= (cu_q[s + 1] >> 6) + s + 1: runs never overlap,
  // the last ends by (Nq >> 6) + num_seqs.
  std::mt19937 rng(23);
  for (int trial = 0; trial < 20000; ++trial) {
    const int64_t c0 = rng() % 5000, len = rng() % 3000;
    ASSERT_LE((c0 >> 6) + (len + 63) / 64, ((c0 + len) >> 6) + 1);
  }
}

}  // namespace
