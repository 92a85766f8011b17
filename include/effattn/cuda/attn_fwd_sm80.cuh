// SM80-class fused attention forward core (mma.sync m16n8k16 + ldmatrix + cp.async;
// runs on SM80 and SM90), templated on a tile policy (see na_policy.cuh).
//
// One CTA = one query tile of BM = 16 * kWarps * kMT rows for one (batch, head); warp w owns
// the kMT 16-row m-tiles w * kMT .. w * kMT + kMT - 1 (kMT = 2 reuses every K / V fragment
// loaded from shared memory for two m-tiles: half the ldmatrix traffic per mma). Key tiles of BN = 64 tokens are double-buffered through shared memory with
// cp.async. Online softmax in fp32 with exp2 and a log2(e)-prescaled scale.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "effattn/cuda/sm80_ptx.cuh"

namespace effattn {
namespace cuda {

struct CoreStrides {
  int64_t batch;
  int64_t token[3];
  int64_t head;
};

__device__ __forceinline__ int64_t token_offset(const CoreStrides& s, const int64_t (&c)[3]) {
  return c[0] * s.token[0] + c[1] * s.token[1] + c[2] * s.token[2];
}

struct FwdArgs {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;  // may be null
  CoreStrides sq, sk, sv, so, slse;
  int32_t heads;
  int32_t kv_group;  // heads / kv_heads
  float scale_log2;  // softmax scale * log2(e)
  int32_t pingpong;  // SM90 core: alternate the two consumer warpgroups' wgmma issue
};

template <int D, int kWarps, int kMT = 1>
struct FwdConfig {
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int BM = 16 * kWarps * kMT;
  static constexpr int BN = 64;
  static constexpr int kTileBytesQ = BM * D * 2;
  static constexpr int kTileBytesK = BN * D * 2;
  // Q + 2 x (K, V) tiles, then int64 row-offset tables: Q, 2 x (K, V).
  static constexpr int kOffTables = kTileBytesQ + 4 * kTileBytesK;
  static constexpr int kSmemBytes = kOffTables + (BM + 4 * BN) * 8;
};

// Issue cp.async loads of the ROWS x D tile whose row r starts at element g_base + off[r]
// (off[r] < 0: padding row, zero-filled). Each thread owns one 16-byte chunk column and
// rows r0, r0 + RS, ... (RS a multiple of 8, so the swizzle pattern repeats).
template <int D, int ROWS, int kThreads, typename T>
__device__ __forceinline__ void load_rows_async(uint32_t s_base, const T* g_base,
                                                const int64_t* off) {
  constexpr int C = D / 8;
  constexpr int RS = kThreads / C;
  static_assert(kThreads % C == 0 && RS % 8 == 0 && ROWS % RS == 0, "tile load shape");
  const int ch = threadIdx.x % C;
  const int r0 = threadIdx.x / C;
  const uint32_t dst0 = s_base + SwizzledTile<D>::offset(r0, ch);
#pragma unroll
  for (int it = 0; it < ROWS / RS; ++it) {
    const int64_t o = off[r0 + it * RS];
    const bool valid = o >= 0;
    cp_async_16(dst0 + it * RS * D * 2, valid ? g_base + o + ch * 8 : g_base, valid);
  }
}

// off[r] = token offset of tile row r under strides st, or -1 for padding rows.
template <int ROWS, int kThreads, typename CoordFn>
__device__ __forceinline__ void fill_row_offsets(int64_t* off, const CoreStrides& st,
                                                 CoordFn&& coord_fn) {
  for (int r = threadIdx.x; r < ROWS; r += kThreads) {
    int64_t c[3];
    off[r] = coord_fn(r, c) ? token_offset(st, c) : -1;
  }
}

template <int ROWS, int kThreads, typename CoordFn>
__device__ __forceinline__ void fill_row_offsets2(int64_t* off_a, const CoreStrides& sa,
                                                  int64_t* off_b, const CoreStrides& sb,
                                                  CoordFn&& coord_fn) {
  for (int r = threadIdx.x; r < ROWS; r += kThreads) {
    int64_t c[3];
    const bool valid = coord_fn(r, c);
    off_a[r] = valid ? token_offset(sa, c) : -1;
    off_b[r] = valid ? token_offset(sb, c) : -1;
  }
}

template <typename T, int D, int kWarps, int kMT, int kMinBlocks, class Policy>
__global__ void __launch_bounds__(32 * kWarps, kMinBlocks)
    attn_fwd_kernel(const FwdArgs args, const Policy policy) {
  using Cfg = FwdConfig<D, kWarps, kMT>;
  constexpr int BM = Cfg::BM;
  constexpr int BN = Cfg::BN;
  constexpr int kThreads = Cfg::kThreads;
  constexpr int NT_S = BN / 8;  // n-tiles of S per warp
  constexpr int NT_O = D / 8;   // n-tiles of O per warp
  using Swz = SwizzledTile<D>;
  using Tr = ElemTraits<T>;

  extern __shared__ __align__(128) unsigned char smem[];
  const uint32_t sQ = smem_u32(smem);
  const uint32_t sK0 = sQ + Cfg::kTileBytesQ;
  const uint32_t sV0 = sK0 + 2 * Cfg::kTileBytesK;

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
  const T* k_base = static_cast<const T*>(args.k) + b * args.sk.batch + kvh * args.sk.head;
  const T* v_base = static_cast<const T*>(args.v) + b * args.sv.batch + kvh * args.sv.head;

  int64_t* t_q = reinterpret_cast<int64_t*>(smem + Cfg::kOffTables);
  int64_t* t_k = t_q + BM;      // [2][BN]
  int64_t* t_v = t_k + 2 * BN;  // [2][BN]
  const int n_k = policy.num_k(qt);

  // Row-offset table of key tile `i` into slot i & 1.
  auto fill_kv_table = [&](int i) {
    const typename Policy::KTile kt = policy.k_tile(qt, i);
    fill_row_offsets2<BN, kThreads>(t_k + (i & 1) * BN, args.sk, t_v + (i & 1) * BN, args.sv,
                                    [&](int r, int64_t(&c)[3]) { return policy.k_coord(kt, r, c); });
  };
  auto load_kv = [&](int i) {
    const int stage = i & 1;
    load_rows_async<D, BN, kThreads>(sK0 + stage * Cfg::kTileBytesK, k_base, t_k + stage * BN);
    load_rows_async<D, BN, kThreads>(sV0 + stage * Cfg::kTileBytesK, v_base, t_v + stage * BN);
  };

  fill_row_offsets<BM, kThreads>(t_q, args.sq,
                                 [&](int r, int64_t(&c)[3]) { return policy.q_coord(qt, r, c); });
  if (n_k > 0) fill_kv_table(0);
  if (n_k > 1) fill_kv_table(1);
  __syncthreads();
  load_rows_async<D, BM, kThreads>(sQ, q_base, t_q);
  if (n_k > 0) load_kv(0);
  cp_async_commit();

  const int r0 = warp * kMT * 16 + grp;  // + 16 * m-tile (+ 8 for the second row)
  typename Policy::RowInfo ri[kMT][2];
#pragma unroll
  for (int m = 0; m < kMT; ++m) {
    ri[m][0] = policy.row_info(qt, r0 + m * 16);
    ri[m][1] = policy.row_info(qt, r0 + m * 16 + 8);
  }

  float acc_o[kMT][NT_O][4];
  float row_max[kMT][2], row_sum[kMT][2];
#pragma unroll
  for (int m = 0; m < kMT; ++m) {
#pragma unroll
    for (int j = 0; j < NT_O; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[m][j][e] = 0.f;
    row_max[m][0] = row_max[m][1] = -INFINITY;
    row_sum[m][0] = row_sum[m][1] = 0.f;
  }

  // ldmatrix lane addressing (see sm80_ptx.cuh): A operand rows / B operand rows.
  const int a_row = (lane % 8) + ((lane / 8) % 2) * 8;  // + 16 * m-tile
  const int a_chunk = lane / 16;                          // + 2 * k-step
  const int b_row = (lane % 8) + (lane / 16) * 8;         // + 16 * n-pair
  const int b_chunk = (lane / 8) % 2;                     // + 2 * k-step

  for (int i = 0; i < n_k; ++i) {
    const typename Policy::KTile kt = policy.k_tile(qt, i);
    const int stage = i & 1;
    // One barrier per key tile: after it, tile i is visible to all, and stage (i + 1) & 1
    // (read by the compute of tile i - 1) and its offset table (filled during iteration
    // i - 1) are ready, so the prefetch of tile i + 1 overlaps the compute of tile i.
    cp_async_wait<0>();
    __syncthreads();
    if (i + 1 < n_k) {
      load_kv(i + 1);
      cp_async_commit();
    }

    const uint32_t sK = sK0 + stage * Cfg::kTileBytesK;
    const uint32_t sV = sV0 + stage * Cfg::kTileBytesK;

    // S = Q K^T (16 x BN per m-tile); each K fragment feeds kMT m-tiles.
    float s[kMT][NT_S][4];
#pragma unroll
    for (int m = 0; m < kMT; ++m)
#pragma unroll
      for (int j = 0; j < NT_S; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[m][j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t a[kMT][4];
#pragma unroll
      for (int m = 0; m < kMT; ++m)
        ldmatrix_x4(a[m], sQ + Swz::offset((warp * kMT + m) * 16 + a_row, kk * 2 + a_chunk));
#pragma unroll
      for (int j = 0; j < BN / 16; ++j) {
        uint32_t bf[4];
        ldmatrix_x4(bf, sK + Swz::offset(j * 16 + b_row, kk * 2 + b_chunk));
#pragma unroll
        for (int m = 0; m < kMT; ++m) {
          mma_16816<T>(s[m][2 * j], a[m], bf[0], bf[1]);
          mma_16816<T>(s[m][2 * j + 1], a[m], bf[2], bf[3]);
        }
      }
    }

    // Scale (log2 domain) and mask.
    if (policy.needs_mask(qt, kt)) {
      static_assert(BN == 64, "row_mask64 needs 64-token key tiles");
#pragma unroll
      for (int m = 0; m < kMT; ++m) {
        // Pre-shift so that bit (j * 8 + e2) is column j * 8 + 2 * qid + e2.
        const uint64_t mk[2] = {policy.row_mask64(ri[m][0], kt) >> (qid * 2),
                                policy.row_mask64(ri[m][1], kt) >> (qid * 2)};
#pragma unroll
        for (int j = 0; j < NT_S; ++j) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            float& x = s[m][j][e];
            const bool ok = (mk[e / 2] >> (j * 8 + (e & 1))) & 1ull;
            x = ok ? x * args.scale_log2 : -INFINITY;
          }
        }
      }
    } else {
#pragma unroll
      for (int m = 0; m < kMT; ++m)
#pragma unroll
        for (int j = 0; j < NT_S; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[m][j][e] *= args.scale_log2;
    }

    // Online softmax.
#pragma unroll
    for (int m = 0; m < kMT; ++m) {
#pragma unroll
      for (int rr = 0; rr < 2; ++rr) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < NT_S; ++j) mx = fmaxf(mx, fmaxf(s[m][j][rr * 2], s[m][j][rr * 2 + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(row_max[m][rr], mx);
        const float m_base = m_new == -INFINITY ? 0.f : m_new;
        const float alpha = fast_exp2(row_max[m][rr] - m_base);  // 0 when row_max was -inf
        row_max[m][rr] = m_new;
        float sum = 0.f;
#pragma unroll
        for (int j = 0; j < NT_S; ++j) {
          const float p0 = fast_exp2(s[m][j][rr * 2] - m_base);
          const float p1 = fast_exp2(s[m][j][rr * 2 + 1] - m_base);
          s[m][j][rr * 2] = p0;
          s[m][j][rr * 2 + 1] = p1;
          sum += p0 + p1;
        }
        row_sum[m][rr] = row_sum[m][rr] * alpha + sum;
#pragma unroll
        for (int j = 0; j < NT_O; ++j) {
          acc_o[m][j][rr * 2] *= alpha;
          acc_o[m][j][rr * 2 + 1] *= alpha;
        }
      }
    }

    // O += P V; each V fragment feeds kMT m-tiles.
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t a[kMT][4];
#pragma unroll
      for (int m = 0; m < kMT; ++m) {
        a[m][0] = Tr::pack(s[m][2 * kk][0], s[m][2 * kk][1]);
        a[m][1] = Tr::pack(s[m][2 * kk][2], s[m][2 * kk][3]);
        a[m][2] = Tr::pack(s[m][2 * kk + 1][0], s[m][2 * kk + 1][1]);
        a[m][3] = Tr::pack(s[m][2 * kk + 1][2], s[m][2 * kk + 1][3]);
      }
#pragma unroll
      for (int dn = 0; dn < D / 16; ++dn) {
        uint32_t bf[4];
        ldmatrix_x4_trans(bf, sV + Swz::offset(kk * 16 + a_row, dn * 2 + a_chunk));
#pragma unroll
        for (int m = 0; m < kMT; ++m) {
          mma_16816<T>(acc_o[m][2 * dn], a[m], bf[0], bf[1]);
          mma_16816<T>(acc_o[m][2 * dn + 1], a[m], bf[2], bf[3]);
        }
      }
    }
    // Table slot i & 1 was last read by the prefetch of tile i (issued in iteration i - 1,
    // before this iteration's barrier); the prefetch of tile i + 2 reads it after the next
    // barrier.
    if (i + 2 < n_k) fill_kv_table(i + 2);
  }
  cp_async_wait<0>();  // nothing outstanding when n_k > 0; drains the Q-only group otherwise

  // Epilogue.
  T* o_base = static_cast<T*>(args.o) + b * args.so.batch + h * args.so.head;
#pragma unroll
  for (int m = 0; m < kMT; ++m) {
#pragma unroll
    for (int rr = 0; rr < 2; ++rr) {
      float l = row_sum[m][rr];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      int64_t c[3];
      const int r = r0 + m * 16 + rr * 8;
      if (!policy.q_coord(qt, r, c)) continue;
      T* orow = o_base + token_offset(args.so, c);
#pragma unroll
      for (int j = 0; j < NT_O; ++j) {
        const uint32_t packed = Tr::pack(acc_o[m][j][rr * 2] * inv, acc_o[m][j][rr * 2 + 1] * inv);
        *reinterpret_cast<uint32_t*>(orow + j * 8 + qid * 2) = packed;
      }
      if (args.lse != nullptr && qid == 0) {
        const float lse =
            l > 0.f ? (row_max[m][rr] + log2f(l)) * 0.69314718055994531f : -INFINITY;
        args.lse[b * args.slse.batch + h * args.slse.head + token_offset(args.slse, c)] = lse;
      }
    }
  }
}

}  // namespace cuda
}  // namespace effattn
