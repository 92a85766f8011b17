// The v1 lightning pass (kept selectable: EFFATTN_LIGHTNING_IMPL=v1). A CTA of 4 warps owns one
// (segment of a sequence, head, 64-column slice of the state) and walks the segment's 64-token
// chunks in order, in the processing direction (forward or reversed), keeping its slice of
// the state S (D x 64, fp32) in registers:
//   kOut:   o_r = scale_qk sum_{c<=r} lambda^{r-c} (q_r . k_c) v_c + scale_state lambda^{r+1} q_r S
//           (tensor cores: Q K^T, P V, Q S with S rounded to the input type in shared memory)
//   always: S <- lambda^n S + kv_scale sum_c lambda^{n-1-c} k_c^T v_c   (n = tokens in the chunk)
// With kOut == false the pass only computes a segment's local state (from S = 0) into a
// workspace slot; `lightning_scan_kernel` then turns the slots into segment start states.
#pragma once

#include "effattn/cuda/lightning_common.cuh"

namespace effattn {
namespace cuda {
namespace lightning {

constexpr int kThreads = 128;  // 4 warps
constexpr int kStagePitch = kSlice * 2 + 16;  // bytes per staged output row (padded)

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

}  // namespace lightning
}  // namespace cuda
}  // namespace effattn
