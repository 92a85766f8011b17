// Torch-free description of one lightning-attention problem (DESIGN.md §7), shared by the
// argument checks (csrc/ops/lightning_checks.h), the CPU kernels and the CUDA launchers.
#pragma once

#include <cstdint>

namespace effattn {

// q, k [B, N, H, D], v [B, N, H, E], states [num_states, H, D, E]. Without cu_seqlens there
// is one sequence per batch row (num_states == B); with cu_seqlens, B == 1 and
// num_states == len(cu_seqlens) - 1.
struct LightningProblem {
  int64_t batch = 0;
  int64_t tokens = 0;
  int64_t heads = 0;
  int64_t dim_k = 0;  // D
  int64_t dim_v = 0;  // E
  int64_t num_states = 0;
  bool varlen = false;
  double scale = 1.0;
};

}  // namespace effattn
