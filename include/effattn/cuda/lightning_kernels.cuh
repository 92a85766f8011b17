// CUDA kernels of lightning attention (DESIGN.md §7), torch-free. See
// include/effattn/lightning_cuda.h for the launcher API and the algorithm in short.
//
// One kernel template, `lightning_chunk_kernel<T, D, kOut>`, is a "pass": a CTA of 4 warps owns
// one (segment of a sequence, head, 64-column slice of the state) and walks the segment's
// 64-token chunks in order, in the processing direction (forward or reversed), keeping its
// slice of the state S (D x 64, fp32) in registers:
//   kOut:   o_r = scale_qk sum_{c<=r} lambda^{r-c} (q_r . k_c) v_c + scale_state lambda^{r+1} q_r S
//           (tensor cores: Q K^T, P V, Q S with S rounded to the input type in shared memory)
//   always: S <- lambda^n S + kv_scale sum_c lambda^{n-1-c} k_c^T v_c   (n = tokens in the chunk)
// With kOut == false the pass only computes a segment's local state (from S = 0) into a
// workspace slot; `lightning_scan_kernel` then turns the slots into segment start states.
// The backward runs the same pass three times (dq; dk and dv reversed).
//
// mma.sync m16n8k16 fragment layouts (lane = 4 grp + qid):
//   A 16x16 row-major: a0 = A[grp][2qid..+1], a1 = A[grp+8][..], a2 = A[grp][2qid+8..], a3 = A[grp+8][2qid+8..]
//   B 16x8:            b0 = B[2qid..+1][grp], b1 = B[2qid+8..+9][grp]
//   C 16x8 fp32:       c0,c1 = C[grp][2qid..+1], c2,c3 = C[grp+8][2qid..+1]
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "effattn/cuda/sm80_ptx.cuh"
#include "effattn/lightning_cuda.h"

namespace effattn {
namespace cuda {
namespace lightning {

constexpr int kChunk = 64;    // tokens per chunk
constexpr int kSlice = 64;    // state columns per CTA
constexpr int kThreads = 128;  // 4 warps
constexpr int kStagePitch = kSlice * 2 + 16;  // bytes per staged output row (padded)

// ---- helpers (the PTX wrappers are shared with the attention core: sm80_ptx.cuh) ----------------

template <typename T>
__device__ __forceinline__ float to_float(T x) {
  if constexpr (std::is_same<T, __half>::value) {
    return __half2float(x);
  } else {
    return __bfloat162float(x);
  }
}

template <typename T>
__device__ __forceinline__ T from_float(float x) {
  if constexpr (std::is_same<T, __half>::value) {
    return __float2half_rn(x);
  } else {
    return __float2bfloat16_rn(x);
  }
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a [rows][W] tile of 16-bit elements,
// W in {64, 128}: the chunk index is XOR-swizzled with row % 8 so that the 8 rows of an
// ldmatrix 8x8 matrix (same logical chunk) hit 8 different 16-byte bank groups.
template <int W>
__device__ __forceinline__ uint32_t tile_off(int row, int chunk) {
  return static_cast<uint32_t>((row * (W / 8) + (chunk ^ (row & 7))) * 16);
}

// lambda^m with lambda = 2^{log2_lambda}; m == 0 gives 1 even for lambda == 0 (slope = inf).
__device__ __forceinline__ float decay_pow(float log2_lambda, int m) {
  return m == 0 ? 1.0f : exp2f(log2_lambda * static_cast<float>(m));
}

// ---- the pass ---------------------------------------------------------------------------------

// One pass over q' [.., D], k' [.., D], v' [.., D] (value dim = D here: D == E builds),
// writing o' [.., D] (kOut). Sequences: seqs[4 s + {0,1,2,3}] = batch, first token, length,
// first work item; items[2 i + {0,1}] = sequence, segment.
struct PassArgs {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  LightningStrides qs, ks, vs, os;
  const float* slope;
  float scale_qk;
  float scale_state;
  float kv_scale;
  int reverse;  // process each sequence from its last token to its first
  // 1: the start state enters at the first position undecayed (state after position p holds
  // lambda^p init), as the backward's G = dL/dS does with dL/dS_final; 0: lambda^{p+1} init.
  int init_shift;
  int heads;
  int slices;  // E / kSlice
  const int64_t* seqs;
  const int32_t* items;
  int64_t seg_len;  // tokens per segment, a multiple of kChunk
  float* slots;     // [items][H][D][E]: local states (kOut == false) / start states (kOut), or null
  const float* init;  // start state of each sequence (null: zero), element (s, h, r, c) at
  int64_t init_seq, init_head, init_row, init_col;  //   init[s*init_seq + h*init_head + r*init_row + c*init_col]
  float* final_state;  // [S][H][D][E] or null (written by the CTA of the last segment)
  int final_extra_decay;  // multiply the final state by lambda once more
};

template <int D, bool kOut>
struct PassSmem {
  static constexpr int kTileK = kChunk * D * 2;       // bytes of one K (or Q) stage
  static constexpr int kTileV = kChunk * kSlice * 2;  // bytes of one V stage
  static constexpr int kOffK = 0;
  static constexpr int kOffV = kOffK + 2 * kTileK;
  static constexpr int kOffQ = kOffV + 2 * kTileV;
  static constexpr int kOffS = kOffQ + (kOut ? 2 * kTileK : 0);
  static constexpr int kOffStage = kOffS + (kOut ? D * kSlice * 2 : 0);
  static constexpr int kBytes = kOffStage + (kOut ? 4 * 16 * kStagePitch : 0);
};

template <typename T, int D, bool kOut>
__global__ void __launch_bounds__(kThreads, kOut ? 2 : 3) lightning_chunk_kernel(const PassArgs a) {
  constexpr int E = D;  // value dim of this build
  constexpr int ES = kSlice;
  constexpr int DC = D / 8;   // 16-byte chunks per q/k row
  constexpr int EC = ES / 8;  // 16-byte chunks per v slice row
  constexpr int MT = D / 64;  // 16-row m tiles of the state per warp (warp owns D/4 rows)
  constexpr int NT = ES / 8;  // 8-column n tiles of a slice
  using Smem = PassSmem<D, kOut>;

  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, grp = lane >> 2, qid = lane & 3;
  const int slice = static_cast<int>(blockIdx.x % static_cast<unsigned>(a.slices));
  const int h = static_cast<int>((blockIdx.x / static_cast<unsigned>(a.slices)) % static_cast<unsigned>(a.heads));
  const int64_t item = blockIdx.x / (static_cast<unsigned>(a.slices) * static_cast<unsigned>(a.heads));
  const int seq = a.items[2 * item];
  const int seg = a.items[2 * item + 1];
  const int64_t b = a.seqs[4 * seq], t0 = a.seqs[4 * seq + 1], n = a.seqs[4 * seq + 2];
  const int64_t seg_begin = static_cast<int64_t>(seg) * a.seg_len;
  const int64_t seg_end = seg_begin + a.seg_len < n ? seg_begin + a.seg_len : n;
  const bool last_seg = seg_end >= n;
  if (!kOut && last_seg) return;  // local states are needed for non-last segments only

  const float log2_lambda = -a.slope[h] * 1.4426950408889634f;
  const T* qb = static_cast<const T*>(a.q) + b * a.qs.batch + h * a.qs.head;
  const T* kb = static_cast<const T*>(a.k) + b * a.ks.batch + h * a.ks.head;
  const T* vb = static_cast<const T*>(a.v) + b * a.vs.batch + h * a.vs.head + slice * ES;
  T* ob = kOut ? static_cast<T*>(a.o) + b * a.os.batch + h * a.os.head + slice * ES : nullptr;
  const int reverse = a.reverse;
  auto token_of = [&](int64_t p) -> int64_t { return reverse ? t0 + n - 1 - p : t0 + p; };

  const uint32_t sbase = smem_u32(smem);

  // Issue the cp.async copies of the chunk at processing positions [cs, cs + nc) into stage s.
  // Row r of a tile is token token_of(cs + r) = token_of(cs) + dir r.
  const int64_t dir = reverse ? -1 : 1;
  const int64_t qst = dir * a.qs.token, kst = dir * a.ks.token, vst = dir * a.vs.token;
  auto load_chunk = [&](int64_t cs, int nc, int s) {
    const int64_t tok0 = token_of(cs);
    const T* kr = kb + tok0 * a.ks.token;
    const T* qr = qb + tok0 * a.qs.token;
    const T* vr = vb + tok0 * a.vs.token;
#pragma unroll
    for (int it = 0; it < kChunk * DC / kThreads; ++it) {
      const int i = it * kThreads + tid;
      const int r = i / DC, c = i % DC;
      const bool valid = r < nc;
      const int rr = valid ? r : 0;
      cp_async_16(sbase + Smem::kOffK + s * Smem::kTileK + tile_off<D>(r, c), kr + rr * kst + c * 8, valid);
      if constexpr (kOut) {
        cp_async_16(sbase + Smem::kOffQ + s * Smem::kTileK + tile_off<D>(r, c), qr + rr * qst + c * 8, valid);
      }
    }
#pragma unroll
    for (int it = 0; it < kChunk * EC / kThreads; ++it) {
      const int i = it * kThreads + tid;
      const int r = i / EC, c = i % EC;
      const bool valid = r < nc;
      const int rr = valid ? r : 0;
      cp_async_16(sbase + Smem::kOffV + s * Smem::kTileV + tile_off<ES>(r, c), vr + rr * vst + c * 8, valid);
    }
  };

  // State slice in registers: acc_s[mt][j][2 half + x] = S[d][e] with
  // d = warp*(D/4) + 16 mt + grp + 8 half, e = 8 j + 2 qid + x.
  float acc_s[MT][NT][4];
  const int drow0 = warp * (D / 4) + grp;
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int x = 0; x < 4; ++x) acc_s[mt][j][x] = 0.0f;
  if constexpr (kOut) {
    if (a.slots != nullptr) {
      const float* src = a.slots + (static_cast<int64_t>(item) * a.heads + h) * D * E + slice * ES;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const int d = drow0 + 16 * mt + 8 * hf, e = 8 * j + 2 * qid;
            const float2 v2 = *reinterpret_cast<const float2*>(src + d * E + e);
            acc_s[mt][j][2 * hf] = v2.x;
            acc_s[mt][j][2 * hf + 1] = v2.y;
          }
    } else if (a.init != nullptr) {
      const float* src = a.init + seq * a.init_seq + h * a.init_head;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int x = 0; x < 4; ++x) {
            const int d = drow0 + 16 * mt + 8 * (x >> 1), e = slice * ES + 8 * j + 2 * qid + (x & 1);
            acc_s[mt][j][x] = src[d * a.init_row + e * a.init_col];
          }
    }
  }

  // S (input type) in shared memory, [D][ES] swizzled: the B operand of Q S.
  auto store_state_smem = [&]() {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int d = drow0 + 16 * mt + 8 * hf, e = 8 * j + 2 * qid;
          *reinterpret_cast<uint32_t*>(smem + Smem::kOffS + tile_off<ES>(d, e / 8) + (e % 8) * 2) =
              ElemTraits<T>::pack(acc_s[mt][j][2 * hf], acc_s[mt][j][2 * hf + 1]);
        }
  };

  const int64_t seg_tokens = seg_end > seg_begin ? seg_end - seg_begin : 0;
  const int64_t nchunks = (seg_tokens + kChunk - 1) / kChunk;
  if (nchunks > 0) {
    load_chunk(seg_begin, static_cast<int>(seg_tokens < kChunk ? seg_tokens : kChunk), 0);
  }
  cp_async_commit();
  if constexpr (kOut) store_state_smem();

  const int r0 = warp * 16 + grp;  // this thread's output rows r0 and r0 + 8 (chunk-local)

  for (int64_t ci = 0; ci < nchunks; ++ci) {
    const int s = static_cast<int>(ci & 1);
    const int64_t cs = seg_begin + ci * kChunk;
    const int nc = static_cast<int>(seg_end - cs < kChunk ? seg_end - cs : kChunk);
    cp_async_wait<0>();
    __syncthreads();  // chunk ci landed, S in smem visible, every warp done with chunk ci - 1
    if (ci + 1 < nchunks) {
      const int64_t rest = seg_end - cs - kChunk;
      load_chunk(cs + kChunk, static_cast<int>(rest < kChunk ? rest : kChunk), s ^ 1);
    }
    cp_async_commit();

    // Keep the decay factors below inside the loop (recomputing them is cheaper than the
    // registers that hoisting them out would cost).
    float l2l;
    asm volatile("mov.b32 %0, %1;" : "=f"(l2l) : "f"(log2_lambda));
    // Chunk 0 of a sequence with init_shift: the start state is one decay step "younger".
    const int first = (a.init_shift != 0 && seg == 0 && ci == 0) ? 1 : 0;
    const uint32_t k_s = sbase + Smem::kOffK + s * Smem::kTileK;
    const uint32_t v_s = sbase + Smem::kOffV + s * Smem::kTileV;

    if constexpr (kOut) {
      const uint32_t q_s = sbase + Smem::kOffQ + s * Smem::kTileK;
      const uint32_t s_s = sbase + Smem::kOffS;
      // Q fragments of this warp's 16 rows are re-read from shared memory at each use
      // (holding all D/16 of them costs 2 D registers).
      auto load_qa = [&](uint32_t (&qa)[4], int kk) {
        ldmatrix_x4(qa, q_s + tile_off<D>(warp * 16 + (lane & 15), 2 * kk + (lane >> 4)));
      };
      // P = Q K^T on the causal part (token tiles np <= warp).
      float p[8][4];
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int x = 0; x < 4; ++x) p[j][x] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t qa[4];
        load_qa(qa, kk);
#pragma unroll
        for (int np = 0; np < 4; ++np) {
          if (np <= warp) {
            uint32_t bk[4];
            ldmatrix_x4(bk, k_s + tile_off<D>(np * 16 + ((lane >> 4) & 1) * 8 + (lane & 7),
                                          2 * kk + ((lane >> 3) & 1)));
            mma_16816<T>(p[2 * np], qa, bk[0], bk[1]);
            mma_16816<T>(p[2 * np + 1], qa, bk[2], bk[3]);
          }
        }
      }
      // Decay mask and scale: P[r][c] *= scale_qk lambda^{r-c} for c <= r, else 0.
      uint32_t pa[4][4];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
#pragma unroll
        for (int x = 0; x < 4; ++x) {
          const int r = r0 + 8 * (x >> 1), c = 8 * j + 2 * qid + (x & 1);
          p[j][x] = c <= r ? p[j][x] * a.scale_qk * decay_pow(l2l, r - c) : 0.0f;
        }
      }
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        pa[kk][0] = ElemTraits<T>::pack(p[2 * kk][0], p[2 * kk][1]);
        pa[kk][1] = ElemTraits<T>::pack(p[2 * kk][2], p[2 * kk][3]);
        pa[kk][2] = ElemTraits<T>::pack(p[2 * kk + 1][0], p[2 * kk + 1][1]);
        pa[kk][3] = ElemTraits<T>::pack(p[2 * kk + 1][2], p[2 * kk + 1][3]);
      }
      // Inter-chunk part: diag(scale_state lambda^{r+1}) Q S.
      float acc_o[NT][4];
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int x = 0; x < 4; ++x) acc_o[j][x] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t qa[4];
        load_qa(qa, kk);
#pragma unroll
        for (int e2 = 0; e2 < ES / 16; ++e2) {
          uint32_t bs[4];
          ldmatrix_x4_trans(bs, s_s + tile_off<ES>(kk * 16 + (lane & 15), 2 * e2 + (lane >> 4)));
          mma_16816<T>(acc_o[2 * e2], qa, bs[0], bs[1]);
          mma_16816<T>(acc_o[2 * e2 + 1], qa, bs[2], bs[3]);
        }
      }
      {
        const float f0 = a.scale_state * decay_pow(l2l, r0 + 1 - first);
        const float f1 = a.scale_state * decay_pow(l2l, r0 + 9 - first);
#pragma unroll
        for (int j = 0; j < NT; ++j) {
          acc_o[j][0] *= f0;
          acc_o[j][1] *= f0;
          acc_o[j][2] *= f1;
          acc_o[j][3] *= f1;
        }
      }
      // Intra-chunk part: P V.
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        if (kk <= warp) {
#pragma unroll
          for (int e2 = 0; e2 < ES / 16; ++e2) {
            uint32_t bv[4];
            ldmatrix_x4_trans(bv, v_s + tile_off<ES>(kk * 16 + (lane & 15), 2 * e2 + (lane >> 4)));
            mma_16816<T>(acc_o[2 * e2], pa[kk], bv[0], bv[1]);
            mma_16816<T>(acc_o[2 * e2 + 1], pa[kk], bv[2], bv[3]);
          }
        }
      }
      // Stage the warp's 16 output rows in shared memory, then 16-byte coalesced stores.
      unsigned char* stage = smem + Smem::kOffStage + warp * 16 * kStagePitch;
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const int e = 8 * j + 2 * qid;
        *reinterpret_cast<uint32_t*>(stage + grp * kStagePitch + e * 2) = ElemTraits<T>::pack(acc_o[j][0], acc_o[j][1]);
        *reinterpret_cast<uint32_t*>(stage + (grp + 8) * kStagePitch + e * 2) =
            ElemTraits<T>::pack(acc_o[j][2], acc_o[j][3]);
      }
      __syncwarp();
#pragma unroll
      for (int it = 0; it < 16 * EC / 32; ++it) {
        const int idx = it * 32 + lane;
        const int row = idx / EC, ch = idx % EC;
        const int r = warp * 16 + row;
        if (r < nc) {
          const uint4 val = *reinterpret_cast<const uint4*>(stage + row * kStagePitch + ch * 16);
          *reinterpret_cast<uint4*>(ob + token_of(cs + r) * a.os.token + ch * 8) = val;
        }
      }
    }

    // State update: S <- lambda^nc S + kv_scale (diag(lambda^{nc-1-c}) K)^T V.
    {
      const float dn = decay_pow(l2l, nc - first);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int x = 0; x < 4; ++x) acc_s[mt][j][x] *= dn;
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const int c0 = kk * 16 + 2 * qid;
        float f[4];
#pragma unroll
        for (int x = 0; x < 4; ++x) {
          const int c = c0 + (x & 1) + 8 * (x >> 1);
          f[x] = c < nc ? a.kv_scale * decay_pow(l2l, nc - 1 - c) : 0.0f;
        }
        uint32_t ak[MT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          ldmatrix_x4_trans(ak[mt], k_s + tile_off<D>(kk * 16 + ((lane >> 4) & 1) * 8 + (lane & 7),
                                              (warp * (D / 4) + mt * 16) / 8 + ((lane >> 3) & 1)));
#pragma unroll
          for (int x = 0; x < 4; ++x) {
            const float2 v2 = ElemTraits<T>::unpack(ak[mt][x]);
            const float fa = f[2 * (x >> 1)], fb = f[2 * (x >> 1) + 1];
            ak[mt][x] = ElemTraits<T>::pack(v2.x * fa, v2.y * fb);
          }
        }
#pragma unroll
        for (int e2 = 0; e2 < ES / 16; ++e2) {
          uint32_t bv[4];
          ldmatrix_x4_trans(bv, v_s + tile_off<ES>(kk * 16 + (lane & 15), 2 * e2 + (lane >> 4)));
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            mma_16816<T>(acc_s[mt][2 * e2], ak[mt], bv[0], bv[1]);
            mma_16816<T>(acc_s[mt][2 * e2 + 1], ak[mt], bv[2], bv[3]);
          }
        }
      }
    }
    if constexpr (kOut) {
      __syncthreads();  // every warp done reading S from shared memory
      store_state_smem();
    }
  }

  // Local state (kOut == false) or final state of the sequence (last segment).
  float* dst = nullptr;
  float mult = 1.0f;
  if (!kOut) {
    dst = a.slots + (static_cast<int64_t>(item) * a.heads + h) * D * E + slice * ES;
  } else if (last_seg && a.final_state != nullptr) {
    dst = a.final_state + (static_cast<int64_t>(seq) * a.heads + h) * D * E + slice * ES;
    if (a.final_extra_decay && n > 0) mult = decay_pow(log2_lambda, 1);
  }
  if (dst != nullptr) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int d = drow0 + 16 * mt + 8 * hf, e = 8 * j + 2 * qid;
          *reinterpret_cast<float2*>(dst + d * E + e) =
              make_float2(acc_s[mt][j][2 * hf] * mult, acc_s[mt][j][2 * hf + 1] * mult);
        }
  }
}

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

// ---- decode -------------------------------------------------------------------------------------

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

// ---- launch helpers (instantiated per dtype in csrc/kernels/lightning_{bf16,f16}.cu) ---------

template <typename T, int D, bool kOut>
cudaError_t launch_pass(const PassArgs& a, int64_t num_items, cudaStream_t stream) {
  const int64_t blocks = num_items * a.heads * a.slices;
  if (blocks <= 0) return cudaSuccess;
  constexpr int bytes = PassSmem<D, kOut>::kBytes;
  cudaError_t err = cudaFuncSetAttribute(lightning_chunk_kernel<T, D, kOut>,
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (err != cudaSuccess) return err;
  lightning_chunk_kernel<T, D, kOut><<<static_cast<unsigned>(blocks), kThreads, bytes, stream>>>(a);
  return cudaGetLastError();
}

// Resident CTAs per SM of the output pass (for the segment split heuristic).
template <typename T, int D>
int pass_occupancy() {
  constexpr int bytes = PassSmem<D, true>::kBytes;
  if (cudaFuncSetAttribute(lightning_chunk_kernel<T, D, true>,
                           cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) != cudaSuccess) {
    return 1;
  }
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, lightning_chunk_kernel<T, D, true>, kThreads,
                                                    bytes) != cudaSuccess || n < 1) {
    return 1;
  }
  return n;
}

template <typename T, int D, int E>
cudaError_t launch_decode(const LightningDecodeParams& p, cudaStream_t stream) {
  const int64_t blocks = p.batch * p.heads;
  if (blocks <= 0) return cudaSuccess;
  lightning_decode_kernel<T, D, E><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(p);
  return cudaGetLastError();
}

// Everything one dtype provides to the host launcher.
template <typename T>
struct DTypeKernels {
  static cudaError_t pass(int d, bool out, const PassArgs& a, int64_t items, cudaStream_t s);
  static int occupancy(int d);
  static cudaError_t decode(const LightningDecodeParams& p, cudaStream_t s);
};

template <>
cudaError_t DTypeKernels<__half>::pass(int, bool, const PassArgs&, int64_t, cudaStream_t);
template <>
int DTypeKernels<__half>::occupancy(int);
template <>
cudaError_t DTypeKernels<__half>::decode(const LightningDecodeParams&, cudaStream_t);
template <>
cudaError_t DTypeKernels<__nv_bfloat16>::pass(int, bool, const PassArgs&, int64_t, cudaStream_t);
template <>
int DTypeKernels<__nv_bfloat16>::occupancy(int);
template <>
cudaError_t DTypeKernels<__nv_bfloat16>::decode(const LightningDecodeParams&, cudaStream_t);

#define EFFATTN_LIGHTNING_DEFINE_DTYPE(T)                                                        \
  template <>                                                                                    \
  cudaError_t DTypeKernels<T>::pass(int d, bool out, const PassArgs& a, int64_t items,           \
                                    cudaStream_t s) {                                            \
    if (d == 64) return out ? launch_pass<T, 64, true>(a, items, s) : launch_pass<T, 64, false>(a, items, s); \
    if (d == 128) return out ? launch_pass<T, 128, true>(a, items, s) : launch_pass<T, 128, false>(a, items, s); \
    return cudaErrorInvalidValue;                                                                \
  }                                                                                              \
  template <>                                                                                    \
  int DTypeKernels<T>::occupancy(int d) {                                                        \
    return d == 64 ? pass_occupancy<T, 64>() : pass_occupancy<T, 128>();                         \
  }                                                                                              \
  template <>                                                                                    \
  cudaError_t DTypeKernels<T>::decode(const LightningDecodeParams& p, cudaStream_t s) {          \
    if (p.dim_k == 64 && p.dim_v == 64) return launch_decode<T, 64, 64>(p, s);                   \
    if (p.dim_k == 64 && p.dim_v == 128) return launch_decode<T, 64, 128>(p, s);                 \
    if (p.dim_k == 128 && p.dim_v == 64) return launch_decode<T, 128, 64>(p, s);                 \
    if (p.dim_k == 128 && p.dim_v == 128) return launch_decode<T, 128, 128>(p, s);               \
    return cudaErrorInvalidValue;                                                                \
  }

}  // namespace lightning
}  // namespace cuda
}  // namespace effattn
