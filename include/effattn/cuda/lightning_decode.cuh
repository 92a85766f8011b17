// Decode step kernels: one token per (batch, head), state <- lambda state + k^T v in place (fp32
// [B, H, D, E]), o = scale q state_new. Purely a stream over the state (read + write once).
#pragma once

#include "effattn/cuda/lightning_common.cuh"

namespace effattn {
namespace cuda {
namespace lightning {

// ---- v1 (EFFATTN_LIGHTNING_DECODE_IMPL=v1) ---------------------------------------------------

// One CTA per (batch, head): the fp32 state is read and written once with 16-byte streaming
// accesses (thread = 4 columns x D/RG rows).
template <typename T, int D, int E>
__global__ void __launch_bounds__(256) lightning_decode_kernel(const LightningDecodeParams p) {
  constexpr int CG = E / 4;     // float4 column groups per row
  constexpr int RG = 256 / CG;  // row groups
  constexpr int RPT = D / RG;   // rows per thread
  static_assert(RPT >= 1 && D % RG == 0, "bad decode shape");
  __shared__ float qs[D], ks[D];
  __shared__ float red[RG][E];
  const int64_t bh = blockIdx.x;
  const int h = static_cast<int>(bh % p.heads);
  const int tid = threadIdx.x, cg = tid % CG, rg = tid / CG;
  float4* st = reinterpret_cast<float4*>(p.state + bh * D * E);
  float4 s[RPT];
#pragma unroll
  for (int i = 0; i < RPT; ++i) s[i] = __ldcs(st + (rg + i * RG) * CG + cg);
  const T* q = static_cast<const T*>(p.q) + bh * D;
  const T* k = static_cast<const T*>(p.k) + bh * D;
  const T* v = static_cast<const T*>(p.v) + bh * E + cg * 4;
  for (int i = tid; i < D; i += 256) {
    qs[i] = to_float(q[i]);
    ks[i] = to_float(k[i]);
  }
  const float v0 = to_float(v[0]), v1 = to_float(v[1]), v2 = to_float(v[2]), v3 = to_float(v[3]);
  const float lam = expf(-p.slope[h]);
  __syncthreads();
  float o0 = 0.f, o1 = 0.f, o2 = 0.f, o3 = 0.f;
#pragma unroll
  for (int i = 0; i < RPT; ++i) {
    const int d = rg + i * RG;
    const float kd = ks[d], qd = qs[d];
    float4 x = s[i];
    x.x = lam * x.x + kd * v0;
    x.y = lam * x.y + kd * v1;
    x.z = lam * x.z + kd * v2;
    x.w = lam * x.w + kd * v3;
    o0 += qd * x.x;
    o1 += qd * x.y;
    o2 += qd * x.z;
    o3 += qd * x.w;
    __stcs(st + d * CG + cg, x);
  }
  red[rg][cg * 4 + 0] = o0;
  red[rg][cg * 4 + 1] = o1;
  red[rg][cg * 4 + 2] = o2;
  red[rg][cg * 4 + 3] = o3;
  __syncthreads();
  T* out = static_cast<T*>(p.o) + bh * E;
  for (int e = tid; e < E; e += 256) {
    float acc = 0.f;
#pragma unroll
    for (int r = 0; r < RG; ++r) acc += red[r][e];
    out[e] = from_float<T>(p.scale * acc);
  }
}

// ---- v2 / v3 (EFFATTN_LIGHTNING_DECODE_IMPL=v2: kWPU = 1, v3: kWPU = 4) -----------------------

// Warp streaming. A unit is one (batch, head); its kWPU warps split the D rows, a lane owns 4
// state columns (one float4) of its rows, so o needs no reduction inside a warp when E == 128
// (one shuffle when E == 64: a warp step covers two rows) and one through shared memory across
// the kWPU warps. Rows go kU per lane at a time, the next kU loads issued before the current
// stores, so a warp always has loads in flight and no barrier sits between loads and stores.
template <int D, int E, int kWPU>
struct DecodeV2Shape {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int CG = E / 4;             // lanes per state row
  static constexpr int RPW = 32 / CG;          // rows per warp step
  static constexpr int kUnits = kWarps / kWPU;  // (batch, head) units per CTA
  static constexpr int RL = D / kWPU / RPW;    // rows per lane
  static constexpr int kU = 4;                 // rows per lane per batch
  static constexpr int NB = RL / kU;
  static_assert(RL % kU == 0 && NB >= 1, "bad decode shape");
};

template <typename T, int D, int E, int kWPU>
__global__ void __launch_bounds__(128, 8) lightning_decode_v2_kernel(const LightningDecodeParams p) {
  using Sh = DecodeV2Shape<D, E, kWPU>;
  constexpr int CG = Sh::CG, RPW = Sh::RPW, kU = Sh::kU, NB = Sh::NB;
  __shared__ float qk[Sh::kUnits][2][D];
  __shared__ float4 part[kWPU > 1 ? Sh::kWarps : 1][CG];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int unit = warp / kWPU, wu = warp % kWPU;
  const int cg = lane % CG, rh = lane / CG;
  const int64_t bh = static_cast<int64_t>(blockIdx.x) * Sh::kUnits + unit;
  const bool active = bh < p.batch * p.heads;
  float4* st = reinterpret_cast<float4*>(p.state + (active ? bh : 0) * D * E) + cg;
  auto row = [&](int b, int u) { return wu * (D / kWPU) + (b * kU + u) * RPW + rh; };
  // The first state rows are requested before q and k are staged (their latency overlaps).
  float4 cur[kU], nxt[kU];
  if (active) {
#pragma unroll
    for (int u = 0; u < kU; ++u) cur[u] = __ldcs(st + row(0, u) * CG);
    const T* q = static_cast<const T*>(p.q) + bh * D;
    const T* k = static_cast<const T*>(p.k) + bh * D;
    for (int i = wu * 32 + lane; i < D; i += kWPU * 32) {
      qk[unit][0][i] = to_float(q[i]);
      qk[unit][1][i] = to_float(k[i]);
    }
  }
  __syncthreads();
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
  if (active) {
    const float lam = expf(-p.slope[bh % p.heads]);
    const T* v = static_cast<const T*>(p.v) + bh * E + cg * 4;
    const float v0 = to_float(v[0]), v1 = to_float(v[1]), v2 = to_float(v[2]), v3 = to_float(v[3]);
    const float* qs = qk[unit][0];
    const float* ks = qk[unit][1];
#pragma unroll
    for (int b = 0; b < NB; ++b) {
      if (b + 1 < NB) {
#pragma unroll
        for (int u = 0; u < kU; ++u) nxt[u] = __ldcs(st + row(b + 1, u) * CG);
      }
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int d = row(b, u);
        const float kd = ks[d], qd = qs[d];
        float4 x = cur[u];
        x.x = lam * x.x + kd * v0;
        x.y = lam * x.y + kd * v1;
        x.z = lam * x.z + kd * v2;
        x.w = lam * x.w + kd * v3;
        o.x += qd * x.x;
        o.y += qd * x.y;
        o.z += qd * x.z;
        o.w += qd * x.w;
        __stcs(st + d * CG, x);
      }
      if (b + 1 < NB) {
#pragma unroll
        for (int u = 0; u < kU; ++u) cur[u] = nxt[u];
      }
    }
  }
  if constexpr (RPW == 2) {  // lanes cg and cg + 16 summed rows of opposite parity
    o.x += __shfl_xor_sync(0xffffffffu, o.x, 16);
    o.y += __shfl_xor_sync(0xffffffffu, o.y, 16);
    o.z += __shfl_xor_sync(0xffffffffu, o.z, 16);
    o.w += __shfl_xor_sync(0xffffffffu, o.w, 16);
  }
  if constexpr (kWPU > 1) {
    if (rh == 0) part[warp][cg] = o;
    __syncthreads();
    if (wu == 0 && rh == 0) {
#pragma unroll
      for (int w = 1; w < kWPU; ++w) {
        const float4 y = part[warp + w][cg];
        o.x += y.x;
        o.y += y.y;
        o.z += y.z;
        o.w += y.w;
      }
    }
  }
  if (active && wu == 0 && rh == 0) {
    T* out = static_cast<T*>(p.o) + bh * E + cg * 4;
    out[0] = from_float<T>(p.scale * o.x);
    out[1] = from_float<T>(p.scale * o.y);
    out[2] = from_float<T>(p.scale * o.z);
    out[3] = from_float<T>(p.scale * o.w);
  }
}

}  // namespace lightning
}  // namespace cuda
}  // namespace effattn
