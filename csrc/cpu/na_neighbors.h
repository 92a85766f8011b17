// Enumerating a query's keys (forward, dQ) and a key's queries (dK, dV) on the token grid.
// Both sets are Cartesian products of per-axis coordinate lists, because a query attends
// to a key exactly when every axis attends (DESIGN.md §4).
#pragma once

#include <cstdint>
#include <vector>

#include "effattn/na_problem.h"

namespace effattn::cpu {

// Row-major token index strides of the (padded to rank 3) grid.
struct GridStrides {
  int64_t s0, s1;  // token = x * s0 + y * s1 + z
  explicit GridStrides(const NaProblem& p)
      : s0(p.axis[1].length * p.axis[2].length), s1(p.axis[2].length) {}
};

// Calls f(key_token) for every key of the query at grid coordinates c.
template <typename F>
inline void for_each_key(const NaProblem& p, const GridStrides& g, const int64_t c[kMaxRank], F&& f) {
  AxisWindow w[kMaxRank];
  for (int a = 0; a < kMaxRank; ++a) w[a] = axis_window(p.axis[a], c[a]);
  for (int64_t i = w[0].start; i < w[0].end; ++i) {
    const int64_t x = window_key(p.axis[0], w[0], i) * g.s0;
    for (int64_t j = w[1].start; j < w[1].end; ++j) {
      const int64_t xy = x + window_key(p.axis[1], w[1], j) * g.s1;
      for (int64_t l = w[2].start; l < w[2].end; ++l) f(xy + window_key(p.axis[2], w[2], l));
    }
  }
}

// For each axis, the queries (global coordinates) whose window holds each key, in
// compressed-row form: queries of key c are index[offset[c] .. offset[c + 1]).
struct InverseNeighbors {
  std::vector<int64_t> offset[kMaxRank];
  std::vector<int64_t> index[kMaxRank];

  explicit InverseNeighbors(const NaProblem& p) {
    for (int a = 0; a < kMaxRank; ++a) {
      const AxisParams& ax = p.axis[a];
      std::vector<std::vector<int64_t>> lists(ax.length);
      for (int64_t qc = 0; qc < ax.length; ++qc) {
        const AxisWindow w = axis_window(ax, qc);
        for (int64_t j = w.start; j < w.end; ++j) lists[window_key(ax, w, j)].push_back(qc);
      }
      offset[a].assign(1, 0);
      for (const auto& l : lists) {
        index[a].insert(index[a].end(), l.begin(), l.end());
        offset[a].push_back(static_cast<int64_t>(index[a].size()));
      }
    }
  }

  // Calls f(query_token) for every query that attends to the key at coordinates c.
  template <typename F>
  void for_each_query(const GridStrides& g, const int64_t c[kMaxRank], F&& f) const {
    for (int64_t i = offset[0][c[0]]; i < offset[0][c[0] + 1]; ++i) {
      const int64_t x = index[0][i] * g.s0;
      for (int64_t j = offset[1][c[1]]; j < offset[1][c[1] + 1]; ++j) {
        const int64_t xy = x + index[1][j] * g.s1;
        for (int64_t l = offset[2][c[2]]; l < offset[2][c[2] + 1]; ++l) f(xy + index[2][l]);
      }
    }
  }
};

// Grid coordinates of a token index.
inline void token_coords(const NaProblem& p, int64_t token, int64_t c[kMaxRank]) {
  c[2] = token % p.axis[2].length;
  token /= p.axis[2].length;
  c[1] = token % p.axis[1].length;
  c[0] = token / p.axis[1].length;
}

}  // namespace effattn::cpu
