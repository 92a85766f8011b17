// Segment start states from the local states of a split pass (see lightning_cuda.h).
#pragma once

#include "effattn/cuda/lightning_common.cuh"

namespace effattn {
namespace cuda {
namespace lightning {

// Segment start states from local states, per (sequence, head), in fp32:
// slot_0 <- S_init; slot_j <- S_j and S_{j+1} = lambda^L S_j + U_j (U_j read from slot_j).
struct ScanArgs {
  const float* slope;
  const int64_t* seqs;
  int heads;
  int dim_k, dim_v;
  int64_t seg_len;
  int init_shift;  // as PassArgs::init_shift
  float* slots;
  const float* init;
  int64_t init_seq, init_head, init_row, init_col;
};

template <int kBlock>
__global__ void __launch_bounds__(kBlock) lightning_scan_kernel(const ScanArgs a) {
  const int64_t seq = blockIdx.z;
  const int h = blockIdx.y;
  const int64_t de = static_cast<int64_t>(a.dim_k) * a.dim_v;
  const int64_t i4 = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
  if (i4 * 4 >= de) return;
  const int64_t n = a.seqs[4 * seq + 2], first = a.seqs[4 * seq + 3];
  const int64_t nseg = n > 0 ? (n + a.seg_len - 1) / a.seg_len : 1;
  float sv[4] = {0.f, 0.f, 0.f, 0.f};
  if (a.init != nullptr) {
#pragma unroll
    for (int x = 0; x < 4; ++x) {
      const int64_t l = i4 * 4 + x, d = l / a.dim_v, e = l % a.dim_v;
      sv[x] = a.init[seq * a.init_seq + h * a.init_head + d * a.init_row + e * a.init_col];
    }
  }
  const float log2_lambda = -a.slope[h] * 1.4426950408889634f;
  const float dl = a.seg_len == 0 ? 1.0f : exp2f(log2_lambda * static_cast<float>(a.seg_len));
  const float dl_first = a.init_shift ? exp2f(log2_lambda * static_cast<float>(a.seg_len - 1)) : dl;
  for (int64_t j = 0; j < nseg; ++j) {
    const float f = j == 0 ? dl_first : dl;  // only the start state is in sv at j == 0
    float4* slot = reinterpret_cast<float4*>(a.slots + ((first + j) * a.heads + h) * de) + i4;
    if (j + 1 < nseg) {
      const float4 u = *slot;
      *slot = make_float4(sv[0], sv[1], sv[2], sv[3]);
      sv[0] = f * sv[0] + u.x;
      sv[1] = f * sv[1] + u.y;
      sv[2] = f * sv[2] + u.z;
      sv[3] = f * sv[3] + u.w;
    } else {
      *slot = make_float4(sv[0], sv[1], sv[2], sv[3]);
    }
  }
}

}  // namespace lightning
}  // namespace cuda
}  // namespace effattn
