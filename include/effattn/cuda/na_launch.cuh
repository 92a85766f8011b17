// Launch templates of the SM80-class NA kernels. Included only by the instantiation units
// under csrc/kernels/ (one per pass x dtype); na_api.cu dispatches to them.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "effattn/cuda/attn_bwd_sm80.cuh"
#include "effattn/cuda/attn_bwd_sm90.cuh"
#include "effattn/cuda/attn_bwd_sm90_fused.cuh"
#include "effattn/cuda/attn_bwd_sm90_fused128.cuh"
#include "effattn/cuda/attn_fwd_sm80.cuh"
#include "effattn/cuda/attn_fwd_sm90.cuh"
#include "effattn/cuda/na_policy.cuh"
#include "effattn/cuda/sm90_dispatch.cuh"
#include "effattn/na_cuda.h"

namespace effattn {
namespace cuda {

// Kernel configurations (one per head dim; keep instantiations few).
// Forward: 4 warps per CTA and 2 CTAs per SM by default (two independent CTAs overlap one's
// softmax and loads with the other's mma, and the 64-row query tiles visit fewer masked
// rows in 2D/3D; one 8-warp CTA per SM ran in lockstep). kMT = 2 (two 16-row m-tiles per
// warp, BM = 128, half the shared-memory fragment traffic per mma) is instantiated only when
// EFFATTN_FWD_MT2 asks for it: it spills at D = 128 and measured slower for 1D.
// Measurements: benchmarks/NA_CUDA_NOTES.md. The macros are tuning switches only.
template <int D>
struct NaFwdCfg {
#ifdef EFFATTN_FWD_WARPS
  static constexpr int kWarps = EFFATTN_FWD_WARPS;
#else
  static constexpr int kWarps = 4;
#endif
#ifdef EFFATTN_FWD_MINB
  static constexpr int kMinBlocks = EFFATTN_FWD_MINB;
#else
  static constexpr int kMinBlocks = 2;
#endif
#ifdef EFFATTN_FWD_MT2
  static constexpr bool kHasMT2 = EFFATTN_FWD_MT2 != 0 && D == 128;  // used for rank 1
#else
  static constexpr bool kHasMT2 = false;
#endif
};
template <int D>
struct NaDqCfg {
  static constexpr int kWarps = 4;  // query tile BM = 64
  static constexpr int kMinBlocks = 1;
};
template <int D>
struct NaBwdCfg {
  static constexpr int kWarps = 4;           // key tile BN = 64
  static constexpr int kBMb = D == 128 ? 32 : 64;  // query tile of the backward
#ifdef EFFATTN_BWD_MINB
  static constexpr int kMinBlocks = EFFATTN_BWD_MINB;
#else
  static constexpr int kMinBlocks = 1;
#endif
};

inline NaGeom make_na_geom(const NaParams& p, const NaTileShape& ts) {
  NaGeom g;
  for (int a = 0; a < 3; ++a) {
    NaAxisGeom& ax = g.ax[a];
    if (a < p.rank) {
      ax.length = static_cast<int32_t>(p.axes[a].length);
      ax.kernel = static_cast<int32_t>(p.axes[a].kernel);
      ax.dilation = static_cast<int32_t>(p.axes[a].dilation);
      ax.stride = static_cast<int32_t>(p.axes[a].stride);
      ax.causal = p.axes[a].causal ? 1 : 0;
    } else {
      ax.length = 1;
      ax.kernel = 1;
      ax.dilation = 1;
      ax.stride = 1;
      ax.causal = 0;
    }
    ax.max_group_len = (ax.length + ax.dilation - 1) / ax.dilation;
    ax.q_log = ts.q_log2[a];
    ax.k_log = ts.k_log2[a];
    ax.q_tiles = (ax.max_group_len + (1 << ax.q_log) - 1) >> ax.q_log;
    ax.k_tiles = (ax.max_group_len + (1 << ax.k_log) - 1) >> ax.k_log;
  }
  return g;
}

inline CoreStrides core_strides(const TensorStrides& s) {
  CoreStrides c;
  c.batch = s.batch;
  c.head = s.head;
  for (int a = 0; a < 3; ++a) c.token[a] = s.token[a];
  return c;
}

// Strides with unused axes zeroed (their coordinate is always 0, but keep it clean).
inline CoreStrides core_strides(const TensorStrides& s, int rank) {
  CoreStrides c = core_strides(s);
  for (int a = rank; a < 3; ++a) c.token[a] = 0;
  return c;
}

inline TokenSpace token_space(const NaParams& p) {
  TokenSpace ts;
  ts.batch = p.batch;
  for (int a = 0; a < 3; ++a) ts.len[a] = a < p.rank ? p.axes[a].length : 1;
  ts.heads = static_cast<int32_t>(p.heads);
  return ts;
}

inline int64_t num_tokens(const NaParams& p) {
  int64_t n = 1;
  for (int a = 0; a < p.rank; ++a) n *= p.axes[a].length;
  return n;
}

// Contiguous [B, tokens, H, W] layout strides (W = 1: the delta workspace).
inline CoreStrides contiguous_strides(const NaParams& p, int64_t w) {
  CoreStrides c;
  const int64_t L[3] = {p.rank > 0 ? p.axes[0].length : 1, p.rank > 1 ? p.axes[1].length : 1,
                        p.rank > 2 ? p.axes[2].length : 1};
  c.head = w;
  c.token[2] = p.heads * w;
  c.token[1] = L[2] * c.token[2];
  c.token[0] = L[1] * c.token[1];
  c.batch = L[0] * c.token[0];
  return c;
}

inline FwdArgs na_fwd_args(const NaParams& p) {
  FwdArgs a;
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  a.o = p.o;
  a.lse = p.lse;
  a.sq = core_strides(p.q_strides, p.rank);
  a.sk = core_strides(p.k_strides, p.rank);
  a.sv = core_strides(p.v_strides, p.rank);
  a.so = core_strides(p.o_strides, p.rank);
  a.slse = core_strides(p.lse_strides, p.rank);
  a.heads = static_cast<int32_t>(p.heads);
  a.kv_group = static_cast<int32_t>(p.heads / p.kv_heads);
  a.scale_log2 = p.scale * 1.4426950408889634f;
  a.pingpong = sm90_pingpong();
  return a;
}

template <typename T, int D, int kMT>
cudaError_t launch_na_forward_cfg(const NaParams& p, cudaStream_t stream) {
  constexpr int kWarps = NaFwdCfg<D>::kWarps;
  using Cfg = FwdConfig<D, kWarps, kMT>;
  NaPolicy pol;
  pol.geom = make_na_geom(p, na_choose_tiles(p, Cfg::BM, Cfg::BN));
  const FwdArgs a = na_fwd_args(p);
  auto kernel = attn_fwd_kernel<T, D, kWarps, kMT, NaFwdCfg<D>::kMinBlocks, NaPolicy>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(pol.num_q_tiles()), static_cast<unsigned>(p.heads),
                  static_cast<unsigned>(p.batch));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a, pol);
  return cudaGetLastError();
}

// Tensor map of one rank-1 [B, L, heads, D] tensor of the problem for the TMA producers;
// false when TMA cannot describe it.
template <typename T>
bool na_rows_map(const NaParams& p, CUtensorMap* map, const void* base, int64_t heads, const TensorStrides& st) {
  return sm90_encode_rows_map<T>(map, base, p.batch, p.axes[0].length, heads, p.head_dim, st.batch, st.token[0],
                                 st.head);
}
// The forward's q, k, v and the 128-key backward's q, dout.
template <typename T>
bool na_fwd_tma_maps(const NaParams& p, Sm90TmaMaps& maps) {
  return na_rows_map<T>(p, &maps.q, p.q, p.heads, p.q_strides) &&
         na_rows_map<T>(p, &maps.k, p.k, p.kv_heads, p.k_strides) &&
         na_rows_map<T>(p, &maps.v, p.v, p.kv_heads, p.v_strides);
}
template <typename T>
bool na_bwd_tma_maps(const NaParams& p, Sm90BwdTmaMaps& maps) {
  return na_rows_map<T>(p, &maps.q, p.q, p.heads, p.q_strides) &&
         na_rows_map<T>(p, &maps.dout, p.dout, p.heads, p.do_strides);
}

// Hopper core (head dims 64 / 128): 128-query tiles, kPair 64-key tiles per step.
template <typename T, int D, int kPair>
cudaError_t launch_na_forward_sm90(const NaParams& p, cudaStream_t stream) {
  using Cfg = Sm90FwdConfig<D, kPair>;
  NaPolicy pol;
  pol.geom = make_na_geom(p, na_choose_tiles(p, Cfg::BM, 64));
  const FwdArgs a = na_fwd_args(p);
  const dim3 grid(static_cast<unsigned>(pol.num_q_tiles()), static_cast<unsigned>(p.heads),
                  static_cast<unsigned>(p.batch));
  // TMA producer for 1D without dilation: query tiles and key tiles are then runs of
  // consecutive tokens (tile row / column r = token base + r), clipped only by [0, L).
  Sm90TmaMaps maps;
  const bool tma = kPair == 2 && sm90_tma_enabled() && p.rank == 1 && p.axes[0].dilation == 1 &&
                   na_fwd_tma_maps<T>(p, maps);
  // NaPolicy does not read blockIdx, so the TMA kernel may also run persistent CTAs.
  return launch_attn_fwd_sm90<T, D, kPair, NaPolicy, true>(grid, a, pol, tma ? &maps : nullptr,
                                                           sm90_persist_enabled(), stream);
}

template <typename T, int D>
cudaError_t launch_na_forward(const NaParams& p, cudaStream_t stream) {
  if constexpr (D == 64 || D == 128) {
    if (sm90_kernel_usable(attn_fwd_sm90_kernel<T, D, 2, NaPolicy>)) {
      return sm90_pair() == 2 ? launch_na_forward_sm90<T, D, 2>(p, stream)
                              : launch_na_forward_sm90<T, D, 1>(p, stream);
    }
  }
  if constexpr (NaFwdCfg<D>::kHasMT2) {
    if (p.rank == 1) return launch_na_forward_cfg<T, D, 2>(p, stream);
  }
  return launch_na_forward_cfg<T, D, 1>(p, stream);
}

inline BwdArgs na_bwd_args(const NaParams& p, const float* delta, const CoreStrides& sdelta) {
  auto strides = [&](const TensorStrides& t) { return core_strides(t, p.rank); };
  BwdArgs a;
  fill_bwd_common(a, p, delta, sdelta, strides);
  a.dk = p.dk;
  a.dv = p.dv;
  a.sdk = strides(p.dk_strides);
  a.sdv = strides(p.dv_strides);
  return a;
}

inline DqArgs na_dq_args(const NaParams& p, const float* delta, const CoreStrides& sdelta) {
  auto strides = [&](const TensorStrides& t) { return core_strides(t, p.rank); };
  DqArgs a;
  fill_bwd_common(a, p, delta, sdelta, strides);
  a.dq = p.dq;
  a.sdq = strides(p.dq_strides);
  return a;
}

// Hopper dK/dV and dQ passes (after the delta pre-pass): 64-key / 64-query tiles.
template <typename T, int D>
cudaError_t launch_na_backward_sm90(const NaParams& p, const float* delta, const CoreStrides& sdelta,
                                    cudaStream_t stream) {
  using Cfg = Sm90BwdConfig<D>;
  NaPolicy pol;
  pol.geom = make_na_geom(p, na_choose_tiles(p, Cfg::kRows, Cfg::kRows));
  {
    auto kernel = attn_bwd_kv_sm90_kernel<T, D, NaPolicy>;
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kKvSmem);
    if (err != cudaSuccess) return err;
    const dim3 grid(static_cast<unsigned>(pol.num_k_tiles()), static_cast<unsigned>(p.kv_heads),
                    static_cast<unsigned>(p.batch));
    kernel<<<grid, Cfg::kThreads, Cfg::kKvSmem, stream>>>(na_bwd_args(p, delta, sdelta), pol);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  auto kernel = attn_bwd_dq_sm90_kernel<T, D, NaPolicy>;
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kDqSmem);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(pol.num_q_tiles()), static_cast<unsigned>(p.heads),
                  static_cast<unsigned>(p.batch));
  kernel<<<grid, Cfg::kThreads, Cfg::kDqSmem, stream>>>(na_dq_args(p, delta, sdelta), pol);
  return cudaGetLastError();
}

// Byte offset of the fused backward's fp32 dQ accumulator [B, tokens, H, D] in the workspace
// (after delta) and the workspace size with it; na_backward_workspace_bytes includes it when
// the fused SM90 path can run (Hopper, head dim 64 / 128, EFFATTN_SM90_BWD not "split").
inline size_t na_dq_acc_offset(const NaParams& p) {
  return (sizeof(float) * static_cast<size_t>(p.batch * num_tokens(p) * p.heads) + 255) & ~size_t(255);
}
inline size_t na_dq_acc_end(const NaParams& p) {
  return na_dq_acc_offset(p) + sizeof(float) * static_cast<size_t>(p.batch * num_tokens(p) * p.heads * p.head_dim);
}

// The fused backward's policy (64-key tiles, 64-row query tiles).
inline NaPolicy na_bwd_fused_policy(const NaParams& p) {
  NaPolicy pol;
  pol.geom = make_na_geom(p, na_choose_tiles(p, Sm90BwdFusedConfig<128>::kRows, Sm90BwdFusedConfig<128>::kRows));
  return pol;
}
// Tile-contiguous dQ accumulator of the 128-key kernel (dq_tile_layout.cuh):
// [B][H][num_q_tiles of the 64-row geometry][64 x D] fp32 at the same offset; at least as large
// as the [B, tokens, H, D] one (every token is one row of one tile).
inline int64_t na_dq_tile_floats(const NaParams& p) {
  return p.batch * p.heads * na_bwd_fused_policy(p).num_q_tiles() * dq_slot_floats(p.head_dim);
}
inline size_t na_dq_tiles_end(const NaParams& p) {
  return na_dq_acc_offset(p) + sizeof(float) * static_cast<size_t>(na_dq_tile_floats(p));
}
// Whether the 128-key kernel runs with the tile-contiguous accumulator (head dim 128,
// sm90_bwd_fused128 for this rank, EFFATTN_SM90_DQ unset, not too much larger than the
// [B, tokens, H, D] one: dq_tiles_size_ok); the launcher also needs a workspace up to
// na_dq_tiles_end.
inline bool na_dq_tiles_wanted(const NaParams& p) {
  return p.head_dim == 128 && sm90_bwd_fused128(p.rank == 1) && sm90_bwd_dq_tiled() &&
         dq_tiles_size_ok(na_dq_tile_floats(p), p.batch * num_tokens(p) * p.heads * p.head_dim);
}
// Workspace end the fused backward wants: the tile-contiguous accumulator where the 128-key
// kernel will run with it (na_dq_tiles_wanted), else the [B, tokens, H, D] one.
inline size_t na_dq_workspace_end(const NaParams& p) {
  const size_t dense = na_dq_acc_end(p);
  if (na_dq_tiles_wanted(p)) {
    const size_t tiles = na_dq_tiles_end(p);
    return tiles > dense ? tiles : dense;
  }
  return dense;
}

// Fused Hopper backward (after the delta pre-pass): zero the dQ accumulator, one dK/dV/dQ
// pass over 64-key tiles (k128: 128-key CTAs over pairs of key tiles, head dim 128), then
// dQ = scale * accumulator. The 128-key kernel uses the tile-contiguous accumulator (one bulk
// reduction per warpgroup and tile) unless EFFATTN_SM90_DQ=atomics, a layout too much larger
// than the dense one (na_dq_tiles_wanted), probe bit 32 or a workspace smaller than
// na_dq_tiles_end ask for the red.global path.
template <typename T, int D, bool k128 = false>
cudaError_t launch_na_backward_sm90_fused(const NaParams& p, const float* delta, const CoreStrides& sdelta,
                                          cudaStream_t stream) {
  using Cfg = Sm90BwdFusedConfig<D>;
  float* acc = reinterpret_cast<float*>(static_cast<unsigned char*>(p.workspace) + na_dq_acc_offset(p));
  const int probe = bwd_probe_from_env();
  const bool tiled = k128 && na_dq_tiles_wanted(p) && !(probe & 32) && p.workspace_bytes >= na_dq_tiles_end(p);
  const NaPolicy pol = na_bwd_fused_policy(p);
  const int64_t slots = pol.num_q_tiles();
  const int64_t n = tiled ? p.batch * p.heads * slots * dq_slot_floats(D) : p.batch * num_tokens(p) * p.heads * D;
  cudaError_t err = cudaMemsetAsync(acc, 0, sizeof(float) * static_cast<size_t>(n), stream);
  if (err != cudaSuccess) return err;
  static_assert(Cfg::kRows == kDqTileRows, "fused backward: 64-row query tiles");
  BwdFusedArgs a;
  static_cast<BwdArgs&>(a) = na_bwd_args(p, delta, sdelta);
  a.dq_acc = acc;
  a.sdqa = contiguous_strides(p, D);
  a.dqt_slots = slots;
  a.dqt_head = slots * dq_slot_floats(D);
  a.dqt_batch = p.heads * a.dqt_head;
  a.probe = probe;
  if constexpr (k128) {
    // Shared memory of the instantiation that runs (the atomics one has no staging images).
    using Cfg128 = Sm90BwdFused128Config<D, true>;
    // TMA producer for Q and dO on 1D without dilation (query tiles are token runs), with the
    // tile-contiguous accumulator; the atomics A/B path keeps cp.async.
    Sm90BwdTmaMaps maps{};
    const bool tma = tiled && sm90_tma_enabled() && p.rank == 1 && p.axes[0].dilation == 1 &&
                     na_bwd_tma_maps<T>(p, maps);
    auto kernel = tma     ? attn_bwd_fused128_sm90_kernel<T, D, NaPolicy, true, true>
                  : tiled ? attn_bwd_fused128_sm90_kernel<T, D, NaPolicy, true, false>
                          : attn_bwd_fused128_sm90_kernel<T, D, NaPolicy, false, false>;
    const int smem = tiled ? Cfg128::kSmem : Sm90BwdFused128Config<D, false>::kSmem;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    if (err != cudaSuccess) return err;
    const dim3 grid(static_cast<unsigned>(pol.num_k_pairs()), static_cast<unsigned>(p.kv_heads),
                    static_cast<unsigned>(p.batch));
    kernel<<<grid, Cfg128::kThreads, smem, stream>>>(a, pol, maps);
  } else {
    auto kernel = attn_bwd_fused_sm90_kernel<T, D, NaPolicy>;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmem);
    if (err != cudaSuccess) return err;
    const dim3 grid(static_cast<unsigned>(pol.num_k_tiles()), static_cast<unsigned>(p.kv_heads),
                    static_cast<unsigned>(p.batch));
    kernel<<<grid, Cfg::kThreads, Cfg::kSmem, stream>>>(a, pol);
  }
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  if constexpr (k128) {
    if (tiled) {
      // One CTA per (64-row query tile, head, batch): the forward's grid at 64-row tiles.
      if (slots > 0) {
        const dim3 grid(static_cast<unsigned>(slots), static_cast<unsigned>(p.heads),
                        static_cast<unsigned>(p.batch));
        attn_bwd_dq_tiles_convert_kernel<T, D, NaPolicy><<<grid, 256, 0, stream>>>(
            acc, a.dqt_batch, a.dqt_head, slots, static_cast<T*>(p.dq), core_strides(p.dq_strides, p.rank),
            p.scale, pol);
        err = cudaGetLastError();
      }
      return err;
    }
  }
  const int64_t blocks = (n / 4 + 255) / 256;
  if (blocks > 0) {
    attn_bwd_dq_convert_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
        acc, static_cast<T*>(p.dq), core_strides(p.dq_strides, p.rank), token_space(p), D, p.scale, n);
    err = cudaGetLastError();
  }
  return err;
}

template <typename T, int D>
cudaError_t launch_na_backward(const NaParams& p, cudaStream_t stream) {
  const TokenSpace ts = token_space(p);
  const int64_t rows = p.batch * num_tokens(p) * p.heads;
  float* delta = static_cast<float*>(p.workspace);
  const CoreStrides sdelta = contiguous_strides(p, 1);
  cudaError_t err;
  {
    const int64_t blocks = (rows + 7) / 8;
    attn_bwd_delta_kernel<T, D><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
        p.o, core_strides(p.o_strides, p.rank), p.dout, core_strides(p.do_strides, p.rank),
        p.dlse, core_strides(p.dlse_strides, p.rank), delta, sdelta, ts);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if constexpr (D == 64 || D == 128) {
    if (sm90_kernel_usable(attn_bwd_kv_sm90_kernel<T, D, NaPolicy>)) {
      if (sm90_bwd_fused() && p.workspace_bytes >= na_dq_acc_end(p)) {
        // 128-key CTAs at head dim 128 (pairs of key tiles along the last axis with more than
        // one tile; by default on 1D only, sm90_bwd_fused128); D = 64 keeps 64-key CTAs.
        if constexpr (D == 128) {
          if (sm90_bwd_fused128(p.rank == 1)) return launch_na_backward_sm90_fused<T, D, true>(p, delta, sdelta, stream);
        }
        return launch_na_backward_sm90_fused<T, D>(p, delta, sdelta, stream);
      }
      return launch_na_backward_sm90<T, D>(p, delta, sdelta, stream);
    }
  }
  // dK, dV: key-tile major.
  {
    constexpr int kWarps = NaBwdCfg<D>::kWarps;
    constexpr int kBMb = NaBwdCfg<D>::kBMb;
    using Cfg = BwdConfig<D, kWarps, kBMb>;
    NaPolicy pol;
    pol.geom = make_na_geom(p, na_choose_tiles(p, kBMb, Cfg::BN));
    const BwdArgs a = na_bwd_args(p, delta, sdelta);
    auto kernel = attn_bwd_kv_kernel<T, D, kWarps, kBMb, NaBwdCfg<D>::kMinBlocks, NaPolicy>;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
    if (err != cudaSuccess) return err;
    const dim3 grid(static_cast<unsigned>(pol.num_k_tiles()), static_cast<unsigned>(p.kv_heads),
                    static_cast<unsigned>(p.batch));
    kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a, pol);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  // dQ: query-tile major.
  {
    constexpr int kWarps = NaDqCfg<D>::kWarps;
    using Cfg = DqConfig<D, kWarps>;
    NaPolicy pol;
    pol.geom = make_na_geom(p, na_choose_tiles(p, Cfg::BM, Cfg::BN));
    const DqArgs a = na_dq_args(p, delta, sdelta);
    auto kernel = attn_bwd_dq_kernel<T, D, kWarps, NaDqCfg<D>::kMinBlocks, NaPolicy>;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
    if (err != cudaSuccess) return err;
    const dim3 grid(static_cast<unsigned>(pol.num_q_tiles()), static_cast<unsigned>(p.heads),
                    static_cast<unsigned>(p.batch));
    kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a, pol);
    err = cudaGetLastError();
  }
  return err;
}

// Explicit instantiations live in csrc/kernels/na_{fwd,bwd}_{f16,bf16}.cu.
#define EFFATTN_NA_DECLARE(T, D)                                                       \
  extern template cudaError_t launch_na_forward<T, D>(const NaParams&, cudaStream_t); \
  extern template cudaError_t launch_na_backward<T, D>(const NaParams&, cudaStream_t);

}  // namespace cuda
}  // namespace effattn
