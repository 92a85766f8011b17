// NaPolicy::setup_k_pair (the 128-key fused backward's pairs of key tiles) against brute
// force on random 1D/2D/3D geometries: the pairs cover every key tile with keys exactly once,
// the pair's query range holds every query tile that attends a key of either tile, and on
// those tiles needs_mask / row_mask64 are exact for each tile. The policy is host-compilable
// once the CUDA qualifiers are defined away (it only needs window.h).
#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <set>
#include <vector>

#ifndef __CUDACC__
#define __device__
#define __host__
#define __forceinline__ inline
#endif
#include "effattn/cuda/na_policy.cuh"
#include "random_tile_shape.h"

using effattn::cuda::NaAxisGeom;
using effattn::cuda::NaPolicy;

namespace {

bool has_key(const NaPolicy& pol, const NaPolicy::KTile& kt) {
  for (int c = 0; c < 64; ++c) {
    int64_t cc[3];
    if (pol.k_coord(kt, c, cc)) return true;
  }
  return false;
}

// Random geometry of rank 1..3 with query and key tiles of 64 tokens.
NaPolicy random_policy(std::mt19937& rng) {
  const int rank = 1 + static_cast<int>(rng() % 3);
  int ql[3], kl[3];
  random_tile_logs(rng, rank, ql);
  random_tile_logs(rng, rank, kl);
  NaPolicy pol;
  for (int a = 0; a < 3; ++a) {
    NaAxisGeom& ax = pol.geom.ax[a];
    if (a < rank) {
      const int max_len = rank == 1 ? 600 : (rank == 2 ? 48 : 16);
      ax.length = 2 + static_cast<int32_t>(rng() % max_len);
      ax.dilation = rng() % 3 == 0 ? 1 + static_cast<int32_t>(rng() % 3) : 1;
      if (2 * ax.dilation > ax.length) ax.dilation = 1;
      const int32_t gl = ax.length / ax.dilation;  // shortest group
      ax.kernel = 2 + static_cast<int32_t>(rng() % (gl - 1));
      ax.stride = rng() % 2 ? 1 : 1 + static_cast<int32_t>(rng() % ax.kernel);
      ax.causal = rng() % 3 == 0 ? 1 : 0;
    } else {
      ax.length = ax.kernel = ax.dilation = ax.stride = 1;
      ax.causal = 0;
    }
    ax.max_group_len = (ax.length + ax.dilation - 1) / ax.dilation;
    ax.q_log = ql[a];
    ax.k_log = kl[a];
    ax.q_tiles = (ax.max_group_len + (1 << ax.q_log) - 1) >> ax.q_log;
    ax.k_tiles = (ax.max_group_len + (1 << ax.k_log) - 1) >> ax.k_log;
  }
  return pol;
}

}  // namespace

TEST(NaPairPolicy, UnionCoversBothKeyTiles) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 600; ++trial) {
    const NaPolicy pol = random_policy(rng);
    std::set<std::vector<int>> seen;
    for (int64_t lin = 0; lin < pol.num_k_pairs(); ++lin) {
      NaPolicy::KTile kt[2];
      NaPolicy::QRange qr;
      const bool any = pol.setup_k_pair(lin, kt[0], kt[1], qr);
      ASSERT_EQ(any, has_key(pol, kt[0])) << "trial " << trial << " pair " << lin;
      ASSERT_EQ(qr.count, qr.n[0] * qr.n[1] * qr.n[2]);
      for (int h = 0; h < 2; ++h) {
        if (!has_key(pol, kt[h])) continue;
        ASSERT_TRUE(seen.insert({kt[h].group[0], kt[h].group[1], kt[h].group[2], kt[h].tile[0], kt[h].tile[1],
                                 kt[h].tile[2]})
                        .second);
        for (int t0 = 0; t0 < pol.geom.ax[0].q_tiles; ++t0)
          for (int t1 = 0; t1 < pol.geom.ax[1].q_tiles; ++t1)
            for (int t2 = 0; t2 < pol.geom.ax[2].q_tiles; ++t2) {
              const int32_t t[3] = {t0, t1, t2};
              NaPolicy::QTile qt;
              if (!pol.setup_q_tile(kt[h].group, t, qt)) continue;
              bool touch = false, full = true;
              for (int r = 0; r < 64; ++r) {
                int64_t qc[3];
                if (!pol.q_coord(qt, r, qc)) continue;
                const NaPolicy::RowInfo ri = pol.row_info(qt, r);
                const uint64_t m = pol.row_mask64(ri, kt[h]);
                for (int c = 0; c < 64; ++c) {
                  int64_t kc[3];
                  if (!pol.k_coord(kt[h], c, kc)) continue;
                  const bool ok = NaPolicy::allowed(ri, pol.col_info(kt[h], c));
                  ASSERT_EQ(ok, ((m >> c) & 1ull) != 0);
                  touch = touch || ok;
                  full = full && ok;
                }
              }
              bool in = true;
              for (int a = 0; a < 3; ++a) in = in && t[a] >= qr.lo[a] && t[a] < qr.lo[a] + qr.n[a];
              ASSERT_TRUE(in || !touch) << "trial " << trial << " pair " << lin << " half " << h
                                        << " query tile " << t0 << "," << t1 << "," << t2;
              if (in && !pol.needs_mask(qt, kt[h])) {
                ASSERT_TRUE(full);
              }
            }
      }
    }
    // Every key tile with a valid key belongs to exactly one pair.
    for (int g0 = 0; g0 < pol.geom.ax[0].dilation; ++g0)
      for (int g1 = 0; g1 < pol.geom.ax[1].dilation; ++g1)
        for (int g2 = 0; g2 < pol.geom.ax[2].dilation; ++g2)
          for (int t0 = 0; t0 < pol.geom.ax[0].k_tiles; ++t0)
            for (int t1 = 0; t1 < pol.geom.ax[1].k_tiles; ++t1)
              for (int t2 = 0; t2 < pol.geom.ax[2].k_tiles; ++t2) {
                const NaPolicy::KTile k{{g0, g1, g2}, {t0, t1, t2}};
                if (has_key(pol, k)) {
                  EXPECT_EQ(seen.count({g0, g1, g2, t0, t1, t2}), 1u) << "trial " << trial;
                }
              }
  }
}
