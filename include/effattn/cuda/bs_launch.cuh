// Launch templates of CUDA block-sparse attention: the SM80-class core kernels
// (attn_fwd_sm80.cuh, attn_bwd_sm80.cuh) instantiated with BlockListPolicy. Included only by
// the instantiation units csrc/kernels/bs_{fwd,bwd}_{f16,bf16}.cu; bs_api.cu dispatches.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "effattn/block_sparse_cuda.h"
#include "effattn/cuda/attn_bwd_sm80.cuh"
#include "effattn/cuda/attn_bwd_sm90.cuh"
#include "effattn/cuda/attn_bwd_sm90_fused.cuh"
#include "effattn/cuda/attn_bwd_sm90_fused128.cuh"
#include "effattn/cuda/attn_fwd_sm80.cuh"
#include "effattn/cuda/attn_fwd_sm90.cuh"
#include "effattn/cuda/block_list_policy.cuh"
#include "effattn/cuda/sm90_dispatch.cuh"

namespace effattn {
namespace cuda {

// Same kernel shapes as the NA launcher (na_launch.cuh): forward 4 warps (BM = 64, kMT = 1),
// 2 CTAs/SM; dQ 4 warps (BM = 64); dK/dV 4 warps (BN = 64), query tile 32 (D = 128) or 64.
template <int D>
struct BsCfg {
  static constexpr int kFwdWarps = 4;
  static constexpr int kFwdMinBlocks = 2;
  static constexpr int kDqWarps = 4;
  static constexpr int kDqMinBlocks = 1;
  static constexpr int kBwdWarps = 4;
  static constexpr int kBMb = D == 128 ? 32 : 64;
  static constexpr int kBwdMinBlocks = 1;
};

inline int bs_ilog2(int x) {
  int l = 0;
  while ((1 << (l + 1)) <= x) ++l;
  return l;
}

// 1D strides: token[0] = N axis; batch stride 0 for packed varlen (coordinates absolute).
inline CoreStrides bs_core_strides(const TensorStrides& s, bool varlen) {
  CoreStrides c;
  c.batch = varlen ? 0 : s.batch;
  c.token[0] = s.token[0];
  c.token[1] = 0;
  c.token[2] = 0;
  c.head = s.head;
  return c;
}

inline bool bs_varlen(const BlockSparseParams& p) { return p.cu_seqlens_q != nullptr; }
inline int64_t bs_grid_batch(const BlockSparseParams& p) {
  return bs_varlen(p) ? p.num_seqs : p.batch;
}
inline int64_t bs_max_q(const BlockSparseParams& p) {
  return bs_varlen(p) ? p.max_q_len : p.q_tokens;
}
inline int64_t bs_max_k(const BlockSparseParams& p) {
  return bs_varlen(p) ? p.max_k_len : p.k_tokens;
}

inline BlockListPolicy make_block_list_policy(const BlockSparseParams& p, int q_tile_rows) {
  BlockListPolicy pol;
  pol.kv_num_blocks = p.kv_num_blocks;
  pol.kv_indices = p.kv_indices;
  pol.q_num_blocks = p.q_num_blocks;
  pol.q_indices = p.q_indices;
  pol.nb_stride[0] = p.kv_num_blocks_strides.batch;
  pol.nb_stride[1] = p.kv_num_blocks_strides.head;
  pol.nb_stride[2] = p.kv_num_blocks_strides.block;
  pol.ix_stride[0] = p.kv_indices_strides.batch;
  pol.ix_stride[1] = p.kv_indices_strides.head;
  pol.ix_stride[2] = p.kv_indices_strides.block;
  pol.qnb_stride[0] = p.q_num_blocks_strides.batch;
  pol.qnb_stride[1] = p.q_num_blocks_strides.head;
  pol.qnb_stride[2] = p.q_num_blocks_strides.block;
  pol.qix_stride[0] = p.q_indices_strides.batch;
  pol.qix_stride[1] = p.q_indices_strides.head;
  pol.qix_stride[2] = p.q_indices_strides.block;
  pol.cu_q = p.cu_seqlens_q;
  pol.cu_k = p.cu_seqlens_k;
  pol.q_tokens = static_cast<int32_t>(p.q_tokens);
  pol.k_tokens = static_cast<int32_t>(p.k_tokens);
  pol.block_q = static_cast<int32_t>(p.block_q);
  pol.block_k = static_cast<int32_t>(p.block_k);
  pol.max_blocks = static_cast<int32_t>(p.max_blocks < INT32_MAX ? p.max_blocks : INT32_MAX);
  pol.q_log = bs_ilog2(q_tile_rows);
  pol.causal = p.is_causal ? 1 : 0;
  pol.head_mul = 1;
  pol.head_add = 0;
  return pol;
}

inline FwdArgs bs_fwd_args(const BlockSparseParams& p) {
  const bool vl = bs_varlen(p);
  FwdArgs a;
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  a.o = p.o;
  a.lse = p.lse;
  a.sq = bs_core_strides(p.q_strides, vl);
  a.sk = bs_core_strides(p.k_strides, vl);
  a.sv = bs_core_strides(p.v_strides, vl);
  a.so = bs_core_strides(p.o_strides, vl);
  a.slse = bs_core_strides(p.lse_strides, vl);
  a.heads = static_cast<int32_t>(p.heads);
  a.kv_group = static_cast<int32_t>(p.heads / p.kv_heads);
  a.scale_log2 = p.scale * 1.4426950408889634f;
  a.pingpong = sm90_pingpong();
  return a;
}

// Tensor maps of q [B, Nq, H, D], k and v [B, Nk, H_kv, D] for the TMA producer (dense batch).
template <typename T>
bool bs_fwd_tma_maps(const BlockSparseParams& p, Sm90TmaMaps& maps) {
  return sm90_encode_rows_map<T>(&maps.q, p.q, p.batch, p.q_tokens, p.heads, p.head_dim, p.q_strides.batch,
                                 p.q_strides.token[0], p.q_strides.head) &&
         sm90_encode_rows_map<T>(&maps.k, p.k, p.batch, p.k_tokens, p.kv_heads, p.head_dim, p.k_strides.batch,
                                 p.k_strides.token[0], p.k_strides.head) &&
         sm90_encode_rows_map<T>(&maps.v, p.v, p.batch, p.k_tokens, p.kv_heads, p.head_dim, p.v_strides.batch,
                                 p.v_strides.token[0], p.v_strides.head);
}

// Hopper core: 128-row query tiles, so only for 128-row query blocks (a query tile must not
// straddle two blocks' key lists).
template <typename T, int D, int kPair>
cudaError_t launch_bs_forward_sm90(const BlockSparseParams& p, cudaStream_t stream) {
  using Cfg = Sm90FwdConfig<D, kPair>;
  const BlockListPolicy pol = make_block_list_policy(p, Cfg::BM);
  const FwdArgs a = bs_fwd_args(p);
  const int64_t tiles = (bs_max_q(p) + Cfg::BM - 1) / Cfg::BM;
  if (tiles == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.heads),
                  static_cast<unsigned>(bs_grid_batch(p)));
  // TMA producer for dense batches: query tiles and 64-key tiles are token runs, and rows
  // past Nq / Nk are zero-filled. Packed varlen batches keep cp.async: a box crossing a
  // sequence's end would read the next sequence's rows (masked, but 0 * inf would leak).
  Sm90TmaMaps maps;
  const bool tma = kPair == 2 && sm90_tma_enabled() && !bs_varlen(p) && bs_fwd_tma_maps<T>(p, maps);
  // BlockListPolicy reads blockIdx (sequence, head): one CTA per tile, never persistent.
  return launch_attn_fwd_sm90<T, D, kPair, BlockListPolicy>(grid, a, pol, tma ? &maps : nullptr, false, stream);
}

template <typename T, int D>
cudaError_t launch_bs_forward(const BlockSparseParams& p, cudaStream_t stream) {
  if constexpr (D == 64 || D == 128) {
    if (p.block_q % Sm90FwdConfig<D, 1>::BM == 0 &&
        sm90_kernel_usable(attn_fwd_sm90_kernel<T, D, 2, BlockListPolicy>)) {
      return sm90_pair() == 2 ? launch_bs_forward_sm90<T, D, 2>(p, stream)
                              : launch_bs_forward_sm90<T, D, 1>(p, stream);
    }
  }
  constexpr int kWarps = BsCfg<D>::kFwdWarps;
  using Cfg = FwdConfig<D, kWarps, 1>;
  const BlockListPolicy pol = make_block_list_policy(p, Cfg::BM);
  const FwdArgs a = bs_fwd_args(p);
  auto kernel = attn_fwd_kernel<T, D, kWarps, 1, BsCfg<D>::kFwdMinBlocks, BlockListPolicy>;
  cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
  if (err != cudaSuccess) return err;
  const int64_t tiles = (bs_max_q(p) + Cfg::BM - 1) / Cfg::BM;
  if (tiles == 0) return cudaSuccess;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.heads),
                  static_cast<unsigned>(bs_grid_batch(p)));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a, pol);
  return cudaGetLastError();
}

// out[i] = sum_g part[g * n + i] (fp32 sum), i over the contiguous [B, Nk, H_kv, D] elements,
// written to out under its strides. Two elements per thread (D is even).
template <typename T>
__global__ void __launch_bounds__(256)
    bs_sum_partials_kernel(const T* part, int64_t n, int32_t groups, T* out, CoreStrides so,
                           int64_t tokens, int64_t kv_heads, int64_t head_dim) {
  using Tr = ElemTraits<T>;
  const int64_t pair = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t i = pair * 2;
  if (i >= n) return;
  float x = 0.f, y = 0.f;
  for (int32_t g = 0; g < groups; ++g) {
    const float2 f = Tr::unpack(*reinterpret_cast<const uint32_t*>(part + g * n + i));
    x += f.x;
    y += f.y;
  }
  const int64_t d = i % head_dim;
  const int64_t hk = (i / head_dim) % kv_heads;
  const int64_t t = (i / (head_dim * kv_heads)) % tokens;
  const int64_t b = i / (head_dim * kv_heads * tokens);
  T* dst = out + b * so.batch + t * so.token[0] + hk * so.head + d;
  *reinterpret_cast<uint32_t*>(dst) = Tr::pack(x, y);
}

inline size_t bs_align256(size_t x) { return (x + 255) & ~size_t(255); }

// Workspace layout of the backward: delta (fp32 [B, Nq, H]), the per-member dK/dV partials
// (per-head maps under GQA only), then the fused SM90 path's fp32 dQ accumulator [B, Nq, H, D].
inline size_t bs_dq_acc_offset(const BlockSparseParams& p) {
  size_t bytes = bs_align256(sizeof(float) * static_cast<size_t>(p.batch * p.q_tokens * p.heads));
  const int64_t group = p.kv_heads > 0 ? p.heads / p.kv_heads : 1;
  if (p.per_head_maps && group > 1)
    bytes += 2 * bs_align256(2 * static_cast<size_t>(p.batch * p.k_tokens * p.kv_heads * p.head_dim * group));
  return bytes;
}
inline size_t bs_dq_acc_end(const BlockSparseParams& p) {
  return bs_dq_acc_offset(p) + sizeof(float) * static_cast<size_t>(p.batch * p.q_tokens * p.heads * p.head_dim);
}
// Tile-contiguous dQ accumulator of the 128-key kernel (dq_tile_layout.cuh), same offset:
// [B][H][slots][64 x D] fp32, slots = ceil(Nq / 64) (dense) or (Nq >> 6) + num_seqs (packed
// varlen, batch 1: BlockListPolicy::dq_slot).
inline int64_t bs_dq_slots(const BlockSparseParams& p) {
  return BlockListPolicy::dq_num_slots(p.q_tokens, bs_varlen(p) ? p.num_seqs : 0, bs_ilog2(kDqTileRows));
}
inline int64_t bs_dq_tile_floats(const BlockSparseParams& p) {
  return (bs_varlen(p) ? 1 : p.batch) * p.heads * bs_dq_slots(p) * dq_slot_floats(p.head_dim);
}
inline size_t bs_dq_tiles_end(const BlockSparseParams& p) {
  return bs_dq_acc_offset(p) + sizeof(float) * static_cast<size_t>(bs_dq_tile_floats(p));
}
// Whether the 128-key kernel runs (head dim 128, block_k 128, sm90_bwd_fused128) with the
// tile-contiguous accumulator (EFFATTN_SM90_DQ unset, not too much larger than the dense one:
// dq_tiles_size_ok, e.g. many short varlen sequences); the launcher also needs the fused path
// itself and a workspace up to bs_dq_tiles_end.
inline bool bs_dq_tiles_wanted(const BlockSparseParams& p) {
  return p.head_dim == 128 && p.block_k == 128 && sm90_bwd_fused128(true) && sm90_bwd_dq_tiled() &&
         dq_tiles_size_ok(bs_dq_tile_floats(p), p.batch * p.q_tokens * p.heads * p.head_dim);
}
// Workspace end the fused backward wants (the larger layout where both may run).
inline size_t bs_dq_workspace_end(const BlockSparseParams& p) {
  const size_t dense = bs_dq_acc_end(p);
  if (!bs_dq_tiles_wanted(p)) return dense;
  const size_t tiles = bs_dq_tiles_end(p);
  return tiles > dense ? tiles : dense;
}

template <typename T, int D>
cudaError_t launch_bs_backward(const BlockSparseParams& p, cudaStream_t stream) {
  const bool vl = bs_varlen(p);
  const int64_t group = p.heads / p.kv_heads;
  const int64_t batch_grid = bs_grid_batch(p);
  unsigned char* ws = static_cast<unsigned char*>(p.workspace);
  float* delta = reinterpret_cast<float*>(ws);
  const size_t delta_bytes = bs_align256(sizeof(float) * static_cast<size_t>(p.batch * p.q_tokens * p.heads));
  // Contiguous [B, Nq, H] delta.
  CoreStrides sdelta_full;
  sdelta_full.head = 1;
  sdelta_full.token[0] = p.heads;
  sdelta_full.token[1] = 0;
  sdelta_full.token[2] = 0;
  sdelta_full.batch = p.q_tokens * p.heads;
  CoreStrides sdelta = sdelta_full;
  if (vl) sdelta.batch = 0;
  cudaError_t err;
  // Hopper dK/dV and dQ passes (64-row query tiles in both) where the build has them.
  bool use90 = false;
  if constexpr (D == 64 || D == 128) use90 = sm90_kernel_usable(attn_bwd_kv_sm90_kernel<T, D, BlockListPolicy>);
  // Fused dK/dV/dQ pass (dQ by fp32 atomics, or bulk reductions into the tile-contiguous
  // accumulator for the 128-key kernel, in the workspace; no dQ pass).
  const bool fused = use90 && sm90_bwd_fused() && p.workspace_bytes >= bs_dq_acc_end(p);
  const int probe = bwd_probe_from_env();
  const bool tiled = fused && D == 128 && bs_dq_tiles_wanted(p) && !(probe & 32) &&
                     p.workspace_bytes >= bs_dq_tiles_end(p);
  float* dq_acc = reinterpret_cast<float*>(ws + bs_dq_acc_offset(p));
  const int64_t dq_elems = p.batch * p.q_tokens * p.heads * p.head_dim;
  const int64_t dq_slots = bs_dq_slots(p);
  const int64_t slot_row = dq_slots * dq_slot_floats(p.head_dim);  // floats per (b, head)
  const int64_t acc_elems = tiled ? bs_dq_tile_floats(p) : dq_elems;
  if (fused && acc_elems > 0) {
    err = cudaMemsetAsync(dq_acc, 0, sizeof(float) * static_cast<size_t>(acc_elems), stream);
    if (err != cudaSuccess) return err;
  }
  {
    TokenSpace ts;
    ts.batch = p.batch;
    ts.len[0] = p.q_tokens;
    ts.len[1] = 1;
    ts.len[2] = 1;
    ts.heads = static_cast<int32_t>(p.heads);
    const int64_t rows = p.batch * p.q_tokens * p.heads;
    const int64_t blocks = (rows + 7) / 8;
    if (blocks > 0) {
      attn_bwd_delta_kernel<T, D><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
          p.o, bs_core_strides(p.o_strides, false), p.dout, bs_core_strides(p.do_strides, false),
          p.dlse, bs_core_strides(p.dlse_strides, false), delta, sdelta_full, ts);
      err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
  }
  // dK, dV: key-tile major. With per-head maps under GQA the transposed map differs between
  // the query heads of one kv head, so the pass runs once per group member g (query heads
  // kvh * G + g) into per-member partials, summed afterwards.
  {
    constexpr int kWarps = BsCfg<D>::kBwdWarps;
    constexpr int kBMb = BsCfg<D>::kBMb;
    using Cfg = BwdConfig<D, kWarps, kBMb>;
    const bool split = p.per_head_maps && group > 1;
    const int64_t kv_elems = p.batch * p.k_tokens * p.kv_heads * p.head_dim;
    T* part_dk = reinterpret_cast<T*>(ws + delta_bytes);
    T* part_dv = reinterpret_cast<T*>(ws + delta_bytes + bs_align256(sizeof(T) * kv_elems * group));
    CoreStrides s_part;  // contiguous [B, Nk, H_kv, D]
    s_part.head = p.head_dim;
    s_part.token[0] = p.kv_heads * p.head_dim;
    s_part.token[1] = 0;
    s_part.token[2] = 0;
    s_part.batch = vl ? 0 : p.k_tokens * p.kv_heads * p.head_dim;
    auto strides = [&](const TensorStrides& t) { return bs_core_strides(t, vl); };
    BwdArgs a;
    fill_bwd_common(a, p, delta, sdelta, strides);
    a.dk = p.dk;
    a.dv = p.dv;
    a.sdk = strides(p.dk_strides);
    a.sdv = strides(p.dv_strides);
    auto kernel = attn_bwd_kv_kernel<T, D, kWarps, kBMb, BsCfg<D>::kBwdMinBlocks, BlockListPolicy>;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
    if (err != cudaSuccess) return err;
    const int kv_q_rows = use90 ? 64 : kBMb;  // query tile of the pass
    static_assert(Cfg::BN == 64, "both dK/dV cores use 64-key tiles");
    const int64_t tiles = (bs_max_k(p) + Cfg::BN - 1) / Cfg::BN;
    const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.kv_heads),
                    static_cast<unsigned>(batch_grid));
    // g: group member of the per-head-map split (its dQ accumulator heads are kvh * G + g).
    auto launch_kv = [&](const BwdArgs& args, const BlockListPolicy& pol, int64_t g) -> cudaError_t {
      if constexpr (D == 64 || D == 128) {
        if (fused) {
          BwdFusedArgs fa;
          static_cast<BwdArgs&>(fa) = args;
          fa.dq_acc = dq_acc + g * p.head_dim;
          fa.sdqa.head = p.head_dim * (split ? group : 1);
          fa.sdqa.token[0] = p.heads * p.head_dim;
          fa.sdqa.token[1] = 0;
          fa.sdqa.token[2] = 0;
          fa.sdqa.batch = vl ? 0 : p.q_tokens * p.heads * p.head_dim;
          fa.probe = probe;
          // Tile-contiguous: member g's heads kvh * G + g (split) start g slot rows in.
          if (tiled) fa.dq_acc = dq_acc + g * slot_row;
          fa.dqt_slots = dq_slots;
          fa.dqt_head = slot_row * (split ? group : 1);
          fa.dqt_batch = vl ? 0 : p.heads * slot_row;
          if constexpr (D == 128) {
            // block_k = 128: one 128-key CTA per key block (its two 64-key tiles share the
            // query list; default, sm90_bwd_fused128); other block sizes keep 64-key CTAs.
            if (p.block_k == 128 && sm90_bwd_fused128(true)) {
              auto k128 = tiled ? attn_bwd_fused128_sm90_kernel<T, D, BlockListPolicy, true, false>
                                : attn_bwd_fused128_sm90_kernel<T, D, BlockListPolicy, false, false>;
              // Shared memory of the instantiation that runs (atomics: no staging images).
              const int smem128 = tiled ? Sm90BwdFused128Config<D, true>::kSmem
                                        : Sm90BwdFused128Config<D, false>::kSmem;
              const cudaError_t e =
                  cudaFuncSetAttribute(k128, cudaFuncAttributeMaxDynamicSharedMemorySize, smem128);
              if (e != cudaSuccess) return e;
              const dim3 grid128((grid.x + 1) / 2, grid.y, grid.z);
              k128<<<grid128, Sm90BwdFused128Config<D>::kThreads, smem128, stream>>>(fa, pol, Sm90BwdTmaMaps{});
              return cudaGetLastError();
            }
          }
          // (tiled implies the 128-key branch above; the 64-key kernel has the atomics only)
          auto kf = attn_bwd_fused_sm90_kernel<T, D, BlockListPolicy>;
          constexpr int kSmem = Sm90BwdFusedConfig<D>::kSmem;
          const cudaError_t e = cudaFuncSetAttribute(kf, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
          if (e != cudaSuccess) return e;
          kf<<<grid, Sm90BwdFusedConfig<D>::kThreads, kSmem, stream>>>(fa, pol);
          return cudaGetLastError();
        }
        if (use90) {
          auto k90 = attn_bwd_kv_sm90_kernel<T, D, BlockListPolicy>;
          constexpr int kSmem = Sm90BwdConfig<D>::kKvSmem;
          const cudaError_t e = cudaFuncSetAttribute(k90, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
          if (e != cudaSuccess) return e;
          k90<<<grid, Sm90BwdConfig<D>::kThreads, kSmem, stream>>>(args, pol);
          return cudaGetLastError();
        }
      }
      kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(args, pol);
      return cudaGetLastError();
    };
    if (tiles > 0) {
      if (!split) {
        const BlockListPolicy pol = make_block_list_policy(p, kv_q_rows);
        err = launch_kv(a, pol, 0);
        if (err != cudaSuccess) return err;
      } else {
        for (int64_t g = 0; g < group; ++g) {
          BwdArgs ag = a;
          // Query head of CTA (kvh) = kvh * G + g: shift the bases by g heads, stride G heads.
          ag.q = static_cast<const T*>(p.q) + g * p.q_strides.head;
          ag.dout = static_cast<const T*>(p.dout) + g * p.do_strides.head;
          ag.lse = p.lse + g * p.lse_strides.head;
          ag.delta = delta + g * sdelta.head;
          ag.sq.head = p.q_strides.head * group;
          ag.sdo.head = p.do_strides.head * group;
          ag.slse.head = p.lse_strides.head * group;
          ag.sdelta.head = sdelta.head * group;
          ag.kv_group = 1;
          ag.dk = part_dk + g * kv_elems;
          ag.dv = part_dv + g * kv_elems;
          ag.sdk = s_part;
          ag.sdv = s_part;
          BlockListPolicy pol = make_block_list_policy(p, kv_q_rows);
          pol.head_mul = static_cast<int32_t>(group);
          pol.head_add = static_cast<int32_t>(g);
          err = launch_kv(ag, pol, g);
          if (err != cudaSuccess) return err;
        }
        const int64_t pairs = kv_elems / 2;
        const int64_t blocks = (pairs + 255) / 256;
        if (blocks > 0) {
          bs_sum_partials_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
              part_dk, kv_elems, static_cast<int32_t>(group), static_cast<T*>(p.dk),
              bs_core_strides(p.dk_strides, false), p.k_tokens, p.kv_heads, p.head_dim);
          bs_sum_partials_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
              part_dv, kv_elems, static_cast<int32_t>(group), static_cast<T*>(p.dv),
              bs_core_strides(p.dv_strides, false), p.k_tokens, p.kv_heads, p.head_dim);
          err = cudaGetLastError();
          if (err != cudaSuccess) return err;
        }
      }
    }
  }
  if constexpr (D == 128) {
    if (fused && tiled) {
      // dQ = scale * accumulator, one CTA per (64-row query tile, head, batch / sequence): the
      // forward's grid at 64-row tiles, with its policy (blockIdx.z = sequence for varlen).
      const int64_t tiles = (bs_max_q(p) + kDqTileRows - 1) / kDqTileRows;
      if (tiles > 0) {
        const BlockListPolicy pol = make_block_list_policy(p, kDqTileRows);
        const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.heads),
                        static_cast<unsigned>(batch_grid));
        attn_bwd_dq_tiles_convert_kernel<T, D, BlockListPolicy><<<grid, 256, 0, stream>>>(
            dq_acc, vl ? 0 : p.heads * slot_row, slot_row, dq_slots, static_cast<T*>(p.dq),
            bs_core_strides(p.dq_strides, vl), p.scale, pol);
        err = cudaGetLastError();
      }
      return err;
    }
  }
  if (fused) {
    // dQ = scale * accumulator (contiguous [B, Nq, H, D], like delta).
    const int64_t blocks = (dq_elems / 4 + 255) / 256;
    if (blocks > 0) {
      TokenSpace ts;
      ts.batch = p.batch;
      ts.len[0] = p.q_tokens;
      ts.len[1] = 1;
      ts.len[2] = 1;
      ts.heads = static_cast<int32_t>(p.heads);
      attn_bwd_dq_convert_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
          dq_acc, static_cast<T*>(p.dq), bs_core_strides(p.dq_strides, false), ts,
          static_cast<int32_t>(p.head_dim), p.scale, dq_elems);
      err = cudaGetLastError();
    }
    return err;
  }
  // dQ: query-tile major.
  {
    constexpr int kWarps = BsCfg<D>::kDqWarps;
    using Cfg = DqConfig<D, kWarps>;
    const BlockListPolicy pol = make_block_list_policy(p, Cfg::BM);
    DqArgs a;
    fill_bwd_common(a, p, delta, sdelta, [&](const TensorStrides& t) { return bs_core_strides(t, vl); });
    a.dq = p.dq;
    a.sdq = bs_core_strides(p.dq_strides, vl);
    auto kernel = attn_bwd_dq_kernel<T, D, kWarps, BsCfg<D>::kDqMinBlocks, BlockListPolicy>;
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, Cfg::kSmemBytes);
    if (err != cudaSuccess) return err;
    static_assert(Cfg::BM == 64, "both dQ cores use 64-row query tiles");
    const int64_t tiles = (bs_max_q(p) + Cfg::BM - 1) / Cfg::BM;
    if (tiles > 0) {
      const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(p.heads),
                      static_cast<unsigned>(batch_grid));
      bool done = false;
      if constexpr (D == 64 || D == 128) {
        if (use90) {
          auto k90 = attn_bwd_dq_sm90_kernel<T, D, BlockListPolicy>;
          constexpr int kSmem = Sm90BwdConfig<D>::kDqSmem;
          err = cudaFuncSetAttribute(k90, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem);
          if (err != cudaSuccess) return err;
          k90<<<grid, Sm90BwdConfig<D>::kThreads, kSmem, stream>>>(a, pol);
          done = true;
        }
      }
      if (!done) kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(a, pol);
      err = cudaGetLastError();
    }
  }
  return err;
}

#define EFFATTN_BS_DECLARE(T, D)                                                                 \
  extern template cudaError_t launch_bs_forward<T, D>(const BlockSparseParams&, cudaStream_t); \
  extern template cudaError_t launch_bs_backward<T, D>(const BlockSparseParams&, cudaStream_t);

}  // namespace cuda
}  // namespace effattn
