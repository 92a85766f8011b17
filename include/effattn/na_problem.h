// Torch-free description of one neighborhood-attention problem, shared by the CPU
// kernels and the CUDA launchers. Ranks below 3 are padded with trivial axes
// (length 1, kernel 1), whose window is always the single key at coordinate 0.
#pragma once

#include <cstdint>

#include "effattn/window.h"

namespace effattn {

constexpr int kMaxRank = 3;

struct NaProblem {
  int rank = 1;
  int64_t batch = 0;
  AxisParams axis[kMaxRank] = {{1, 1, 1, 1, false}, {1, 1, 1, 1, false}, {1, 1, 1, 1, false}};
  int64_t heads = 0;
  int64_t kv_heads = 0;
  int64_t head_dim = 0;
  double scale = 1.0;

  // Tokens per batch element: the product of the axis lengths.
  int64_t tokens() const { return axis[0].length * axis[1].length * axis[2].length; }
  // Upper bound on the keys one query attends to (exact when nothing is causal).
  int64_t max_window() const { return axis[0].kernel * axis[1].kernel * axis[2].kernel; }
  // Query heads sharing one key/value head (GQA/MQA).
  int64_t group_size() const { return heads / kv_heads; }
};

}  // namespace effattn
