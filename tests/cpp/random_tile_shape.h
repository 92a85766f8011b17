// Random 64-token tile shapes for the host tests of the tile policies.
#pragma once

#include <random>

// Splits a 64-token tile (2^6) over the first `rank` axes at random: l[a] = log2 of the
// tile's extent along axis a (the last axis takes what is left; axes >= rank get 0).
inline void random_tile_logs(std::mt19937& rng, int rank, int (&l)[3]) {
  l[0] = l[1] = l[2] = 0;
  int left = 6;
  for (int a = 0; a < rank; ++a) {
    const int e = a == rank - 1 ? left : static_cast<int>(rng() % (left + 1));
    l[a] = e;
    left -= e;
  }
}
