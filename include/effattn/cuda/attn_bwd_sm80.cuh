// SM80-class fused attention backward core (FlashAttention-2 recomputation), templated on
// a tile policy (see na_policy.cuh):
//   1. attn_bwd_delta_kernel: delta_i = rowsum(dO_i * O_i) - dlse_i   (fp32 workspace)
//   2. attn_bwd_kv_kernel:    one CTA per (key tile, kv head, batch); loops over the query
//      heads of its GQA group and the query tiles whose windows touch the key tile (inverse
//      range from the policy); recomputes P^T = exp(S^T - lse) and accumulates
//      dV = P^T dO and dK = scale * dS^T Q in registers (GQA sum without races).
//   3. attn_bwd_dq_kernel:    one CTA per query tile (forward iteration); recomputes P and
//      dP and accumulates dQ = scale * dS K in registers. No atomics, no dQ workspace.
// With ds_ij = p_ij (dp_ij - delta_i) the gradient through the returned LSE is exact.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "effattn/cuda/attn_fwd_sm80.cuh"
#include "effattn/cuda/sm80_ptx.cuh"

namespace effattn {
namespace cuda {

// Token-space description for the element-wise passes (rows = (b, token, head)).
struct TokenSpace {
  int64_t batch;
  int64_t len[3];  // X, Y, Z (1 for unused axes)
  int32_t heads;
};

__device__ __forceinline__ void token_coords(const TokenSpace& ts, int64_t t, int64_t (&c)[3]) {
  c[2] = t % ts.len[2];
  t /= ts.len[2];
  c[1] = t % ts.len[1];
  c[0] = t / ts.len[1];
}

struct BwdArgs {
  const void* q;
  const void* k;
  const void* v;
  const void* dout;
  const float* lse;
  const float* delta;  // workspace, layout sdelta
  void* dk;
  void* dv;
  CoreStrides sq, sk, sv, sdo, slse, sdelta, sdk, sdv;
  int32_t heads;
  int32_t kv_group;
  float scale;       // softmax scale
  float scale_log2;  // scale * log2(e)
};

template <int D, int kWarps, int BMb>
struct BwdConfig {
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int BN = 16 * kWarps;  // keys per CTA, 16 per warp
  static constexpr int kTileK = BN * D * 2;
  static constexpr int kTileQ = BMb * D * 2;
  // K, V once; Q, dO, lse, delta and the row masks double-buffered (the next query tile is
  // loaded while the current one is computed).
  static constexpr int kOffK = 0;
  static constexpr int kOffV = kOffK + kTileK;
  static constexpr int kOffQ = kOffV + kTileK;       // [2]
  static constexpr int kOffDO = kOffQ + 2 * kTileQ;  // [2]
  static constexpr int kOffLse = kOffDO + 2 * kTileQ;   // float [2][BMb]
  static constexpr int kOffDelta = kOffLse + 2 * BMb * 4;  // float [2][BMb]
  static constexpr int kOffMask = kOffDelta + 2 * BMb * 4;  // uint64 [2][BMb]: key mask per query row
  static constexpr int kOffTk = kOffMask + 2 * BMb * 8;     // int64 row offsets: K, V
  static constexpr int kOffTv = kOffTk + BN * 8;
  static constexpr int kSmemBytes = kOffTv + BN * 8;
};

// cp.async loads of a ROWS x D tile whose row r comes from coord_fn (no offset table: each
// thread computes the offsets of the rows it copies). Same thread/row split as
// load_rows_async.
template <int D, int ROWS, int kThreads, typename T, typename CoordFn>
__device__ __forceinline__ void load_rows_coord_async(uint32_t s_base, const T* g_base,
                                                      const CoreStrides& st, CoordFn&& coord_fn) {
  constexpr int C = D / 8;
  constexpr int RS = kThreads / C;
  static_assert(kThreads % C == 0 && RS % 8 == 0 && ROWS % RS == 0, "tile load shape");
  const int ch = threadIdx.x % C;
  const int r0 = threadIdx.x / C;
  const uint32_t dst0 = s_base + SwizzledTile<D>::offset(r0, ch);
#pragma unroll
  for (int it = 0; it < ROWS / RS; ++it) {
    int64_t c[3];
    const bool valid = coord_fn(r0 + it * RS, c);
    cp_async_16(dst0 + it * RS * D * 2, valid ? g_base + token_offset(st, c) + ch * 8 : g_base,
                valid);
  }
}

template <typename T, int D, int kWarps, int BMb, int kMinBlocks, class Policy>
__global__ void __launch_bounds__(32 * kWarps, kMinBlocks)
    attn_bwd_kv_kernel(const BwdArgs args, const Policy policy) {
  using Cfg = BwdConfig<D, kWarps, BMb>;
  constexpr int BN = Cfg::BN;
  constexpr int kThreads = Cfg::kThreads;
  constexpr int NT_Q = BMb / 8;  // n-tiles over the query tile
  constexpr int NT_D = D / 8;
  using Swz = SwizzledTile<D>;
  using Tr = ElemTraits<T>;
  static_assert(BMb % 16 == 0, "query tile must be a multiple of 16");
  static_assert(BMb <= kThreads, "one thread per query row for the row data");

  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t sK = smem_u32(smem + Cfg::kOffK);
  const uint32_t sV = smem_u32(smem + Cfg::kOffV);
  const uint32_t sQ0 = smem_u32(smem + Cfg::kOffQ);
  const uint32_t sDO0 = smem_u32(smem + Cfg::kOffDO);
  float* s_lse2 = reinterpret_cast<float*>(smem + Cfg::kOffLse);
  float* s_delta = reinterpret_cast<float*>(smem + Cfg::kOffDelta);
  uint64_t* s_mask = reinterpret_cast<uint64_t*>(smem + Cfg::kOffMask);
  int64_t* t_k = reinterpret_cast<int64_t*>(smem + Cfg::kOffTk);
  int64_t* t_v = reinterpret_cast<int64_t*>(smem + Cfg::kOffTv);

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int grp = lane / 4;
  const int qid = lane % 4;

  const int64_t b = blockIdx.z;
  const int kvh = blockIdx.y;

  typename Policy::KTile kt;
  typename Policy::QRange qr;
  if (!policy.setup_k_tile(static_cast<int64_t>(blockIdx.x), kt, qr)) return;

  const T* k_base = static_cast<const T*>(args.k) + b * args.sk.batch + kvh * args.sk.head;
  const T* v_base = static_cast<const T*>(args.v) + b * args.sv.batch + kvh * args.sv.head;
  fill_row_offsets2<BN, kThreads>(t_k, args.sk, t_v, args.sv,
                                  [&](int r, int64_t(&c)[3]) { return policy.k_coord(kt, r, c); });
  __syncthreads();
  load_rows_async<D, BN, kThreads>(sK, k_base, t_k);
  load_rows_async<D, BN, kThreads>(sV, v_base, t_v);

  const int total = args.kv_group * qr.count;

  // Issue the loads of query tile `it` (of head group member it / qr.count) into stage st:
  // Q and dO tiles, lse and delta per row (4-byte cp.async by the row's own thread, padding
  // rows get lse = +inf -> P = 0), and the key mask per row when the tile needs one.
  // Returns whether the tile has any valid row and whether it needs element masks.
  auto prepare = [&](int it, int st, bool& masked) -> bool {
    const int hq = kvh * args.kv_group + it / qr.count;
    typename Policy::QTile qt;
    masked = false;
    if (!policy.q_tile(qr, it % qr.count, qt)) return false;  // uniform over the CTA
    masked = policy.needs_mask(qt, kt);
    const T* q_base = static_cast<const T*>(args.q) + b * args.sq.batch + hq * args.sq.head;
    const T* do_base = static_cast<const T*>(args.dout) + b * args.sdo.batch + hq * args.sdo.head;
    auto coord = [&](int r, int64_t(&c)[3]) { return policy.q_coord(qt, r, c); };
    load_rows_coord_async<D, BMb, kThreads>(sQ0 + st * Cfg::kTileQ, q_base, args.sq, coord);
    load_rows_coord_async<D, BMb, kThreads>(sDO0 + st * Cfg::kTileQ, do_base, args.sdo, coord);
    if (tid < BMb) {
      const int r = tid;
      int64_t c[3];
      const bool valid = policy.q_coord(qt, r, c);
      float* lse_dst = s_lse2 + st * BMb + r;
      float* delta_dst = s_delta + st * BMb + r;
      if (valid) {
        cp_async_4(smem_u32(lse_dst),
                   args.lse + b * args.slse.batch + hq * args.slse.head + token_offset(args.slse, c), true);
        cp_async_4(smem_u32(delta_dst),
                   args.delta + b * args.sdelta.batch + hq * args.sdelta.head + token_offset(args.sdelta, c),
                   true);
      } else {
        *lse_dst = INFINITY;
        *delta_dst = 0.f;
      }
      if (masked) s_mask[st * BMb + r] = policy.row_mask64(policy.row_info(qt, r), kt);
    }
    return true;
  };

  bool mask_cur = false, valid_cur = false;
  if (total > 0) valid_cur = prepare(0, 0, mask_cur);
  cp_async_commit();

  const int kr0 = warp * 16 + grp;
  static_assert(BN == 64, "row_mask64 needs 64-token key tiles");

  float acc_dk[NT_D][4], acc_dv[NT_D][4];
#pragma unroll
  for (int j = 0; j < NT_D; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      acc_dk[j][e] = 0.f;
      acc_dv[j][e] = 0.f;
    }

  const int a_row = (lane % 8) + ((lane / 8) % 2) * 8;
  const int a_chunk = lane / 16;
  const int b_row = (lane % 8) + (lane / 16) * 8;
  const int b_chunk = (lane / 8) % 2;

  for (int it = 0; it < total; ++it) {
    const int st = it & 1;
    cp_async_wait<0>();  // stage st (and, on it == 0, K and V) landed for this thread
    if (tid < BMb) {     // lse -> log2 domain, fully masked rows (lse = -inf) -> P = 0
      const float l = s_lse2[st * BMb + tid];
      s_lse2[st * BMb + tid] = l == -INFINITY ? INFINITY : l * 1.4426950408889634f;
    }
    // Everyone's copies of stage st are visible; stage st ^ 1 was last read by the compute
    // of iteration it - 1, which every thread finished before this barrier.
    __syncthreads();
    bool mask_next = false, valid_next = false;
    if (it + 1 < total) valid_next = prepare(it + 1, st ^ 1, mask_next);
    cp_async_commit();

    if (valid_cur) {
      const uint32_t sQ = sQ0 + st * Cfg::kTileQ;
      const uint32_t sDO = sDO0 + st * Cfg::kTileQ;
      const float* lse2 = s_lse2 + st * BMb;
      const float* dlt = s_delta + st * BMb;
      const uint64_t* msk = s_mask + st * BMb;

      // S^T = K Q^T (16 keys x BMb queries per warp).
      float pt[NT_Q][4];
#pragma unroll
      for (int j = 0; j < NT_Q; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) pt[j][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t a[4];
        ldmatrix_x4(a, sK + Swz::offset(warp * 16 + a_row, kk * 2 + a_chunk));
#pragma unroll
        for (int j = 0; j < BMb / 16; ++j) {
          uint32_t bf[4];
          ldmatrix_x4(bf, sQ + Swz::offset(j * 16 + b_row, kk * 2 + b_chunk));
          mma_16816<T>(pt[2 * j], a, bf[0], bf[1]);
          mma_16816<T>(pt[2 * j + 1], a, bf[2], bf[3]);
        }
      }
      // P^T = exp2(S^T * scale_log2 - lse2[query]), masked -> 0.
#pragma unroll
      for (int j = 0; j < NT_Q; ++j) {
#pragma unroll
        for (int e2 = 0; e2 < 2; ++e2) {
          const int col = j * 8 + qid * 2 + e2;
          const float l2 = lse2[col];
          bool ok[2] = {true, true};
          if (mask_cur) {
            const uint64_t m = msk[col] >> kr0;
            ok[0] = m & 1ull;
            ok[1] = (m >> 8) & 1ull;
          }
#pragma unroll
          for (int rr = 0; rr < 2; ++rr) {
            float& x = pt[j][rr * 2 + e2];
            x = ok[rr] ? fast_exp2(x * args.scale_log2 - l2) : 0.f;
          }
        }
      }

      // dV += P^T dO.
#pragma unroll
      for (int kk = 0; kk < BMb / 16; ++kk) {
        uint32_t a[4];
        a[0] = Tr::pack(pt[2 * kk][0], pt[2 * kk][1]);
        a[1] = Tr::pack(pt[2 * kk][2], pt[2 * kk][3]);
        a[2] = Tr::pack(pt[2 * kk + 1][0], pt[2 * kk + 1][1]);
        a[3] = Tr::pack(pt[2 * kk + 1][2], pt[2 * kk + 1][3]);
#pragma unroll
        for (int dn = 0; dn < D / 16; ++dn) {
          uint32_t bf[4];
          ldmatrix_x4_trans(bf, sDO + Swz::offset(kk * 16 + a_row, dn * 2 + a_chunk));
          mma_16816<T>(acc_dv[2 * dn], a, bf[0], bf[1]);
          mma_16816<T>(acc_dv[2 * dn + 1], a, bf[2], bf[3]);
        }
      }

      // dP^T = V dO^T.
      float dpt[NT_Q][4];
#pragma unroll
      for (int j = 0; j < NT_Q; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) dpt[j][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t a[4];
        ldmatrix_x4(a, sV + Swz::offset(warp * 16 + a_row, kk * 2 + a_chunk));
#pragma unroll
        for (int j = 0; j < BMb / 16; ++j) {
          uint32_t bf[4];
          ldmatrix_x4(bf, sDO + Swz::offset(j * 16 + b_row, kk * 2 + b_chunk));
          mma_16816<T>(dpt[2 * j], a, bf[0], bf[1]);
          mma_16816<T>(dpt[2 * j + 1], a, bf[2], bf[3]);
        }
      }
      // dS^T = P^T (dP^T - delta[query]).
#pragma unroll
      for (int j = 0; j < NT_Q; ++j) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col = j * 8 + qid * 2 + (e & 1);
          dpt[j][e] = pt[j][e] * (dpt[j][e] - dlt[col]);
        }
      }

      // dK += dS^T Q.
#pragma unroll
      for (int kk = 0; kk < BMb / 16; ++kk) {
        uint32_t a[4];
        a[0] = Tr::pack(dpt[2 * kk][0], dpt[2 * kk][1]);
        a[1] = Tr::pack(dpt[2 * kk][2], dpt[2 * kk][3]);
        a[2] = Tr::pack(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]);
        a[3] = Tr::pack(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3]);
#pragma unroll
        for (int dn = 0; dn < D / 16; ++dn) {
          uint32_t bf[4];
          ldmatrix_x4_trans(bf, sQ + Swz::offset(kk * 16 + a_row, dn * 2 + a_chunk));
          mma_16816<T>(acc_dk[2 * dn], a, bf[0], bf[1]);
          mma_16816<T>(acc_dk[2 * dn + 1], a, bf[2], bf[3]);
        }
      }
    }
    valid_cur = valid_next;
    mask_cur = mask_next;
  }
  cp_async_wait<0>();

  // Epilogue: dK = scale * acc_dk, dV = acc_dv.
  T* dk_base = static_cast<T*>(args.dk) + b * args.sdk.batch + kvh * args.sdk.head;
  T* dv_base = static_cast<T*>(args.dv) + b * args.sdv.batch + kvh * args.sdv.head;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    int64_t c[3];
    if (!policy.k_coord(kt, kr0 + rr * 8, c)) continue;
    T* dkrow = dk_base + token_offset(args.sdk, c);
    T* dvrow = dv_base + token_offset(args.sdv, c);
#pragma unroll
    for (int j = 0; j < NT_D; ++j) {
      *reinterpret_cast<uint32_t*>(dkrow + j * 8 + qid * 2) =
          Tr::pack(acc_dk[j][rr * 2] * args.scale, acc_dk[j][rr * 2 + 1] * args.scale);
      *reinterpret_cast<uint32_t*>(dvrow + j * 8 + qid * 2) =
          Tr::pack(acc_dv[j][rr * 2], acc_dv[j][rr * 2 + 1]);
    }
  }
}

// delta[b, t, h] = sum_d dO * O - dlse. One warp per (b, t, h) row.
template <typename T, int D>
__global__ void __launch_bounds__(256)
    attn_bwd_delta_kernel(const void* o, CoreStrides so, const void* dout, CoreStrides sdo,
                          const float* dlse, CoreStrides sdlse, float* delta,
                          CoreStrides sdelta, TokenSpace ts) {
  using Tr = ElemTraits<T>;
  const int64_t row = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  const int64_t n_tok = ts.len[0] * ts.len[1] * ts.len[2];
  if (row >= ts.batch * n_tok * ts.heads) return;
  const int h = static_cast<int>(row % ts.heads);
  const int64_t t = (row / ts.heads) % n_tok;
  const int64_t b = row / (ts.heads * n_tok);
  int64_t c[3];
  token_coords(ts, t, c);
  const T* orow = static_cast<const T*>(o) + b * so.batch + h * so.head + token_offset(so, c);
  const T* drow = static_cast<const T*>(dout) + b * sdo.batch + h * sdo.head + token_offset(sdo, c);
  float sum = 0.f;
#pragma unroll
  for (int d = lane * 2; d < D; d += 64) {
    const float2 a = Tr::unpack(*reinterpret_cast<const uint32_t*>(orow + d));
    const float2 g = Tr::unpack(*reinterpret_cast<const uint32_t*>(drow + d));
    sum += a.x * g.x + a.y * g.y;
  }
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, m);
  if (lane == 0) {
    if (dlse != nullptr) sum -= dlse[b * sdlse.batch + h * sdlse.head + token_offset(sdlse, c)];
    delta[b * sdelta.batch + h * sdelta.head + token_offset(sdelta, c)] = sum;
  }
}

// dQ kernel, query-tile major (same iteration as the forward, no atomics): per key tile
// recompute S = Q K^T, P = exp(S - lse), dP = dO V^T, dS = P (dP - delta), dQ += dS K.
template <int D, int kWarps>
struct DqConfig {
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int BM = 16 * kWarps;
  static constexpr int BN = 64;
  static constexpr int kTileQ = BM * D * 2;
  static constexpr int kTileK = BN * D * 2;
  static constexpr int kOffQ = 0;
  static constexpr int kOffDO = kOffQ + kTileQ;
  static constexpr int kOffK = kOffDO + kTileQ;  // [2] stages
  static constexpr int kOffV = kOffK + 2 * kTileK;
  static constexpr int kOffTq = kOffV + 2 * kTileK;
  static constexpr int kOffTdo = kOffTq + BM * 8;
  static constexpr int kOffTk = kOffTdo + BM * 8;  // [2][BN]
  static constexpr int kOffTv = kOffTk + 2 * BN * 8;
  static constexpr int kSmemBytes = kOffTv + 2 * BN * 8;
};

struct DqArgs {
  const void* q;
  const void* k;
  const void* v;
  const void* dout;
  const float* lse;
  const float* delta;
  void* dq;
  CoreStrides sq, sk, sv, sdo, slse, sdelta, sdq;
  int32_t heads;
  int32_t kv_group;
  float scale;
  float scale_log2;
};

// Host side: the fields BwdArgs and DqArgs share, from a launcher's parameters (NaParams or
// BlockSparseParams); `strides` maps the launcher's TensorStrides to the core's.
template <class Args, class Params, class StridesFn>
inline void fill_bwd_common(Args& a, const Params& p, const float* delta, const CoreStrides& sdelta,
                            StridesFn&& strides) {
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  a.dout = p.dout;
  a.lse = p.lse;
  a.delta = delta;
  a.sq = strides(p.q_strides);
  a.sk = strides(p.k_strides);
  a.sv = strides(p.v_strides);
  a.sdo = strides(p.do_strides);
  a.slse = strides(p.lse_strides);
  a.sdelta = sdelta;
  a.heads = static_cast<int32_t>(p.heads);
  a.kv_group = static_cast<int32_t>(p.heads / p.kv_heads);
  a.scale = p.scale;
  a.scale_log2 = p.scale * 1.4426950408889634f;
}

template <typename T, int D, int kWarps, int kMinBlocks, class Policy>
__global__ void __launch_bounds__(32 * kWarps, kMinBlocks)
    attn_bwd_dq_kernel(const DqArgs args, const Policy policy) {
  using Cfg = DqConfig<D, kWarps>;
  constexpr int BM = Cfg::BM;
  constexpr int BN = Cfg::BN;
  constexpr int kThreads = Cfg::kThreads;
  constexpr int NT_S = BN / 8;
  constexpr int NT_D = D / 8;
  using Swz = SwizzledTile<D>;
  using Tr = ElemTraits<T>;
  static_assert(BN == 64, "row_mask64 needs 64-token key tiles");

  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t sQ = smem_u32(smem + Cfg::kOffQ);
  const uint32_t sDO = smem_u32(smem + Cfg::kOffDO);
  const uint32_t sK0 = smem_u32(smem + Cfg::kOffK);
  const uint32_t sV0 = smem_u32(smem + Cfg::kOffV);
  int64_t* t_q = reinterpret_cast<int64_t*>(smem + Cfg::kOffTq);
  int64_t* t_do = reinterpret_cast<int64_t*>(smem + Cfg::kOffTdo);
  int64_t* t_k = reinterpret_cast<int64_t*>(smem + Cfg::kOffTk);
  int64_t* t_v = reinterpret_cast<int64_t*>(smem + Cfg::kOffTv);

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;
  const int grp = lane / 4;
  const int qid = lane % 4;
  const int64_t b = blockIdx.z;
  const int h = blockIdx.y;
  const int kvh = h / args.kv_group;

  typename Policy::QTile qt;
  if (!policy.setup_q_tile(static_cast<int64_t>(blockIdx.x), qt)) return;

  const T* q_base = static_cast<const T*>(args.q) + b * args.sq.batch + h * args.sq.head;
  const T* do_base = static_cast<const T*>(args.dout) + b * args.sdo.batch + h * args.sdo.head;
  const T* k_base = static_cast<const T*>(args.k) + b * args.sk.batch + kvh * args.sk.head;
  const T* v_base = static_cast<const T*>(args.v) + b * args.sv.batch + kvh * args.sv.head;
  const int n_k = policy.num_k(qt);

  auto fill_kv_table = [&](int i) {
    const typename Policy::KTile kt = policy.k_tile(qt, i);
    fill_row_offsets2<BN, kThreads>(t_k + (i & 1) * BN, args.sk, t_v + (i & 1) * BN, args.sv,
                                    [&](int r, int64_t(&c)[3]) { return policy.k_coord(kt, r, c); });
  };
  auto load_kv = [&](int i) {
    const int stage = i & 1;
    load_rows_async<D, BN, kThreads>(sK0 + stage * Cfg::kTileK, k_base, t_k + stage * BN);
    load_rows_async<D, BN, kThreads>(sV0 + stage * Cfg::kTileK, v_base, t_v + stage * BN);
  };

  fill_row_offsets2<BM, kThreads>(t_q, args.sq, t_do, args.sdo,
                                  [&](int r, int64_t(&c)[3]) { return policy.q_coord(qt, r, c); });
  if (n_k > 0) fill_kv_table(0);
  if (n_k > 1) fill_kv_table(1);
  __syncthreads();
  load_rows_async<D, BM, kThreads>(sQ, q_base, t_q);
  load_rows_async<D, BM, kThreads>(sDO, do_base, t_do);
  if (n_k > 0) load_kv(0);
  cp_async_commit();

  // Per-row statistics of this thread's two rows.
  const int r0 = warp * 16 + grp;
  const typename Policy::RowInfo ri[2] = {policy.row_info(qt, r0), policy.row_info(qt, r0 + 8)};
  float lse2[2], delta[2];
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    int64_t c[3];
    lse2[rr] = INFINITY;
    delta[rr] = 0.f;
    if (policy.q_coord(qt, r0 + rr * 8, c)) {
      const float l = args.lse[b * args.slse.batch + h * args.slse.head + token_offset(args.slse, c)];
      lse2[rr] = l == -INFINITY ? INFINITY : l * 1.4426950408889634f;
      delta[rr] = args.delta[b * args.sdelta.batch + h * args.sdelta.head + token_offset(args.sdelta, c)];
    }
  }

  float acc[NT_D][4];
#pragma unroll
  for (int j = 0; j < NT_D; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[j][e] = 0.f;

  const int a_row = (lane % 8) + ((lane / 8) % 2) * 8;
  const int a_chunk = lane / 16;
  const int b_row = (lane % 8) + (lane / 16) * 8;
  const int b_chunk = (lane / 8) % 2;

  for (int i = 0; i < n_k; ++i) {
    const typename Policy::KTile kt = policy.k_tile(qt, i);
    const int stage = i & 1;
    // One barrier per key tile (as in the forward): tile i visible, stage (i + 1) & 1 and
    // its offset table ready, so the prefetch of tile i + 1 overlaps this compute.
    cp_async_wait<0>();
    __syncthreads();
    if (i + 1 < n_k) {
      load_kv(i + 1);
      cp_async_commit();
    }
    const uint32_t sK = sK0 + stage * Cfg::kTileK;
    const uint32_t sV = sV0 + stage * Cfg::kTileK;

    float s[NT_S][4], dp[NT_S][4];
#pragma unroll
    for (int j = 0; j < NT_S; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[j][e] = 0.f;
        dp[j][e] = 0.f;
      }
    // S = Q K^T and dP = dO V^T.
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t aq[4], ad[4];
      ldmatrix_x4(aq, sQ + Swz::offset(warp * 16 + a_row, kk * 2 + a_chunk));
      ldmatrix_x4(ad, sDO + Swz::offset(warp * 16 + a_row, kk * 2 + a_chunk));
#pragma unroll
      for (int j = 0; j < BN / 16; ++j) {
        uint32_t bk[4], bv[4];
        ldmatrix_x4(bk, sK + Swz::offset(j * 16 + b_row, kk * 2 + b_chunk));
        ldmatrix_x4(bv, sV + Swz::offset(j * 16 + b_row, kk * 2 + b_chunk));
        mma_16816<T>(s[2 * j], aq, bk[0], bk[1]);
        mma_16816<T>(s[2 * j + 1], aq, bk[2], bk[3]);
        mma_16816<T>(dp[2 * j], ad, bv[0], bv[1]);
        mma_16816<T>(dp[2 * j + 1], ad, bv[2], bv[3]);
      }
    }
    // dS = P (dP - delta), P = exp2(S * scale_log2 - lse2), masked -> 0.
    uint64_t mk[2] = {~0ull, ~0ull};
    if (policy.needs_mask(qt, kt)) {
      mk[0] = policy.row_mask64(ri[0], kt) >> (qid * 2);
      mk[1] = policy.row_mask64(ri[1], kt) >> (qid * 2);
    }
#pragma unroll
    for (int j = 0; j < NT_S; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int rr = e / 2;
        const bool ok = (mk[rr] >> (j * 8 + (e & 1))) & 1ull;
        const float p = ok ? fast_exp2(s[j][e] * args.scale_log2 - lse2[rr]) : 0.f;
        s[j][e] = p * (dp[j][e] - delta[rr]);
      }
    // dQ += dS K.
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t a[4];
      a[0] = Tr::pack(s[2 * kk][0], s[2 * kk][1]);
      a[1] = Tr::pack(s[2 * kk][2], s[2 * kk][3]);
      a[2] = Tr::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = Tr::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dn = 0; dn < D / 16; ++dn) {
        uint32_t bf[4];
        ldmatrix_x4_trans(bf, sK + Swz::offset(kk * 16 + a_row, dn * 2 + a_chunk));
        mma_16816<T>(acc[2 * dn], a, bf[0], bf[1]);
        mma_16816<T>(acc[2 * dn + 1], a, bf[2], bf[3]);
      }
    }
    if (i + 2 < n_k) fill_kv_table(i + 2);
  }
  cp_async_wait<0>();

  T* dq_base = static_cast<T*>(args.dq) + b * args.sdq.batch + h * args.sdq.head;
#pragma unroll
  for (int rr = 0; rr < 2; ++rr) {
    int64_t c[3];
    if (!policy.q_coord(qt, r0 + rr * 8, c)) continue;
    T* row = dq_base + token_offset(args.sdq, c);
#pragma unroll
    for (int j = 0; j < NT_D; ++j)
      *reinterpret_cast<uint32_t*>(row + j * 8 + qid * 2) =
          Tr::pack(acc[j][rr * 2] * args.scale, acc[j][rr * 2 + 1] * args.scale);
  }
}

}  // namespace cuda
}  // namespace effattn
