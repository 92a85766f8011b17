// The v2 lightning pass (EFFATTN_LIGHTNING_IMPL=v2): same contract as the v1 pass (PassArgs,
// kOut, slots, init, final state), restructured for throughput.
//
// A CTA of E/16 warps owns one (segment of a sequence, head) with ALL E state columns, so q and
// k are staged once per chunk (v1 staged them once per 64-column slice). Warp w holds rows
// e in [16w, 16w+16) of the TRANSPOSED state S^T (E x D, fp32 C fragments), which makes
//   * the inter-chunk term O[:, e-block] = Q S[:, e-block] take S^T's C fragments directly as
//     mma B fragments (no shared-memory round trip of S, no extra barrier), and
//   * the state update S^T[e-block] += (V^T diag(f)) K use one ldmatrix.trans of V as both
//     the A fragment of V^T and the B fragment of the intra term P V.
// The causal P = (Q K^T) . decay (10 16x16 tiles) is computed once per CTA, tiles spread over the
// warps, and shared in shared memory; every warp then does the same amount of work (P V for its
// 16 columns over all 64 rows), so no SM sub-partition waits on a "diagonal" warp.
// Chunks are staged with a 4-deep cp.async ring (three chunks in flight while one is computed;
// 3-deep for the D = 64 output pass, two of whose CTAs share an SM).
// Per chunk: barrier 1 (chunk landed, buffers free), P tiles + Q S, barrier 2 (P visible),
// P V + state update, output staged per warp and stored with 16-byte writes.
//
// Per warp and 64-token chunk (D = E = 128): Q S 64 mma / 32 ldmatrix, P V 20 / 14,
// update 64 / 32, P tiles 16-32 / 16-32.
#pragma once

#include "effattn/cuda/lightning_common.cuh"

namespace effattn {
namespace cuda {
namespace lightning {

template <int D, bool kOut>
struct PassV2Shape {
  static constexpr int E = D;
  static constexpr int kWarps = E / 16;  // one warp per 16 rows of S^T
  static constexpr int kThreads = kWarps * 32;
  // Ring depth: 4 (three chunks in flight: one CTA per SM at D = 128 must cover the DRAM latency
  // on its own), 3 for the D = 64 output pass (two CTAs per SM share the shared memory).
  static constexpr int kStages = (D == 128 || !kOut) ? 4 : 3;
  static constexpr int kTileQK = kChunk * D * 2;  // bytes of one Q or K chunk
  static constexpr int kTileV = kChunk * E * 2;
  static constexpr int kOffK = kOut ? kTileQK : 0;  // inside a stage (Q at 0 when kOut)
  static constexpr int kOffV = kOffK + kTileQK;
  static constexpr int kStageBytes = kOffV + kTileV;
  static constexpr int kOffP = kStages * kStageBytes;  // P, bf16/fp16 [64][64]
  static constexpr int kOPitch = 48;                   // staged output row: 16 columns + pad
  static constexpr int kOffO = kOffP + (kOut ? kChunk * kChunk * 2 : 0);
  static constexpr int kBytes = kOffO + (kOut ? kWarps * kChunk * kOPitch : 0);
  // D = 128: 1 CTA per SM (output pass: 224 KiB of shared memory; local pass: the 64 state
  // registers leave too few for 2 CTAs of 8 warps without spilling). D = 64: 2.
  static constexpr int kMinBlocks = D == 128 ? 1 : 2;
};

// Causal 16x16 tile i (0..9) of P: row tile rt, column tile np <= rt.
__device__ __forceinline__ void p_tile_coords(int i, int& rt, int& np) {
  rt = i < 1 ? 0 : (i < 3 ? 1 : (i < 6 ? 2 : 3));
  np = i - rt * (rt + 1) / 2;
}

// Scales the two 16-bit halves of a packed pair.
template <typename T>
__device__ __forceinline__ uint32_t scale_pair(uint32_t v, float lo, float hi) {
  const float2 f = ElemTraits<T>::unpack(v);
  return ElemTraits<T>::pack(f.x * lo, f.y * hi);
}

template <typename T, int D, bool kOut>
__global__ void __launch_bounds__(PassV2Shape<D, kOut>::kThreads, PassV2Shape<D, kOut>::kMinBlocks)
    lightning_pass_v2_kernel(const PassArgs a) {
  using Sh = PassV2Shape<D, kOut>;
  constexpr int E = D;
  constexpr int NT = Sh::kThreads;
  constexpr int DC = D / 8;   // 16-byte chunks per q/k row
  constexpr int EC = E / 8;   // 16-byte chunks per v row
  constexpr int DN = D / 8;   // 8-column d tiles of this warp's S^T rows
  constexpr int KD = D / 16;  // k steps over d

  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, grp = lane >> 2, qid = lane & 3;
  const int h = static_cast<int>(blockIdx.x % static_cast<unsigned>(a.heads));
  const int64_t item = blockIdx.x / static_cast<unsigned>(a.heads);
  const PassItem it = pass_item(a, item);
  if (!kOut && it.last_seg) return;  // local states are needed for non-last segments only

  const float l2l = finite_log2_lambda(a.slope[h]);
  const T* qb = static_cast<const T*>(a.q) + it.b * a.qs.batch + h * a.qs.head;
  const T* kb = static_cast<const T*>(a.k) + it.b * a.ks.batch + h * a.ks.head;
  const T* vb = static_cast<const T*>(a.v) + it.b * a.vs.batch + h * a.vs.head;
  T* ob = kOut ? static_cast<T*>(a.o) + it.b * a.os.batch + h * a.os.head : nullptr;
  const int reverse = a.reverse;
  const int64_t t0 = it.t0, n = it.n;
  auto token_of = [&](int64_t p) -> int64_t { return reverse ? t0 + n - 1 - p : t0 + p; };
  const uint32_t sbase = smem_u32(smem);

  // cp.async of the chunk at processing positions [cs, cs + nc) into ring slot `slot`
  // (rows past nc zero-filled). Row r of a tile is token token_of(cs) + dir r.
  const int64_t dir = reverse ? -1 : 1;
  const int64_t qst = dir * a.qs.token, kst = dir * a.ks.token, vst = dir * a.vs.token;
  auto load_chunk = [&](int64_t cs, int nc, int slot) {
    const int64_t tok0 = token_of(cs);
    const T* kr = kb + tok0 * a.ks.token;
    const T* qr = qb + tok0 * a.qs.token;
    const T* vr = vb + tok0 * a.vs.token;
    const uint32_t st = sbase + slot * Sh::kStageBytes;
#pragma unroll
    for (int i0 = 0; i0 < kChunk * DC / NT; ++i0) {
      const int i = i0 * NT + tid;
      const int r = i / DC, c = i % DC;
      const bool valid = r < nc;
      const int rr = valid ? r : 0;
      cp_async_16(st + Sh::kOffK + tile_off<D>(r, c), kr + rr * kst + c * 8, valid);
      if constexpr (kOut) cp_async_16(st + tile_off<D>(r, c), qr + rr * qst + c * 8, valid);
    }
#pragma unroll
    for (int i0 = 0; i0 < kChunk * EC / NT; ++i0) {
      const int i = i0 * NT + tid;
      const int r = i / EC, c = i % EC;
      const bool valid = r < nc;
      const int rr = valid ? r : 0;
      cp_async_16(st + Sh::kOffV + tile_off<E>(r, c), vr + rr * vst + c * 8, valid);
    }
  };

  // S^T in registers: acc_s[j][x] = S[d][e], e = 16 warp + grp + 8 (x >> 1), d = 8 j + 2 qid + (x & 1).
  const int e_row = 16 * warp + grp;
  float acc_s[DN][4];
#pragma unroll
  for (int j = 0; j < DN; ++j)
#pragma unroll
    for (int x = 0; x < 4; ++x) acc_s[j][x] = 0.0f;
  if constexpr (kOut) {
    if (a.slots != nullptr) {
      const float* src = a.slots + (static_cast<int64_t>(item) * a.heads + h) * D * E;
#pragma unroll
      for (int j = 0; j < DN; ++j)
#pragma unroll
        for (int x = 0; x < 4; ++x) {
          const int e = e_row + 8 * (x >> 1), d = 8 * j + 2 * qid + (x & 1);
          acc_s[j][x] = src[d * E + e];
        }
    } else if (a.init != nullptr) {
      const float* src = a.init + it.seq * a.init_seq + h * a.init_head;
#pragma unroll
      for (int j = 0; j < DN; ++j)
#pragma unroll
        for (int x = 0; x < 4; ++x) {
          const int e = e_row + 8 * (x >> 1), d = 8 * j + 2 * qid + (x & 1);
          acc_s[j][x] = src[d * a.init_row + e * a.init_col];
        }
    }
  }

  const int64_t seg_tokens = it.seg_end > it.seg_begin ? it.seg_end - it.seg_begin : 0;
  const int64_t nchunks = (seg_tokens + kChunk - 1) / kChunk;
  auto chunk_len = [&](int64_t ci) -> int {
    const int64_t rest = seg_tokens - ci * kChunk;
    return static_cast<int>(rest < kChunk ? rest : kChunk);
  };
#pragma unroll
  for (int s = 0; s < Sh::kStages - 1; ++s) {
    if (s < nchunks) load_chunk(it.seg_begin + s * kChunk, chunk_len(s), s);
    cp_async_commit();
  }

  int slot = 0;                                 // ring slot of chunk ci
  int pf_slot = Sh::kStages - 1;                // ring slot of chunk ci + kStages - 1
  for (int64_t ci = 0; ci < nchunks; ++ci) {
    const int64_t cs = it.seg_begin + ci * kChunk;
    const int nc = chunk_len(ci);
    cp_async_wait<Sh::kStages - 2>();
    __syncthreads();  // chunk ci landed; every warp is done with chunk ci - 1 (its slot, P, staging)
    if (ci + Sh::kStages - 1 < nchunks) {
      load_chunk(cs + (Sh::kStages - 1) * kChunk, chunk_len(ci + Sh::kStages - 1), pf_slot);
    }
    cp_async_commit();

    // Chunk 0 of a sequence with init_shift: the start state is one decay step "younger".
    const int first = (a.init_shift != 0 && it.seg == 0 && ci == 0) ? 1 : 0;
    const uint32_t st = sbase + slot * Sh::kStageBytes;
    const uint32_t q_s = st, k_s = st + Sh::kOffK, v_s = st + Sh::kOffV;

    // O[t][e]: t = 16 rt + grp + 8 (x >> 1), e = 16 warp + 8 et + 2 qid + (x & 1) (kOut only).
    [[maybe_unused]] float acc_o[4][2][4];
    if constexpr (kOut) {
      // ---- P tiles: P[t][s] = scale_qk lambda^{t-s} q_t . k_s (s <= t), shared via smem.
      for (int i = warp; i < 10; i += Sh::kWarps) {
        int rt, np;
        p_tile_coords(i, rt, np);
        uint32_t qa[KD][4], kf[KD][4];
#pragma unroll
        for (int kk = 0; kk < KD; ++kk) {
          ldmatrix_x4(qa[kk], q_s + tile_off<D>(rt * 16 + (lane & 15), 2 * kk + (lane >> 4)));
          ldmatrix_x4(kf[kk], k_s + tile_off<D>(np * 16 + ((lane >> 4) & 1) * 8 + (lane & 7),
                                                2 * kk + ((lane >> 3) & 1)));
        }
        // Two partial sums per n tile (even / odd k steps) halve the mma dependency chains.
        float pc[2][2][4];
#pragma unroll
        for (int u = 0; u < 2; ++u)
#pragma unroll
          for (int j = 0; j < 2; ++j)
#pragma unroll
            for (int x = 0; x < 4; ++x) pc[u][j][x] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < KD; ++kk) {
          mma_16816<T>(pc[kk & 1][0], qa[kk], kf[kk][0], kf[kk][1]);
          mma_16816<T>(pc[kk & 1][1], qa[kk], kf[kk][2], kf[kk][3]);
        }
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const int t = rt * 16 + grp + 8 * hf, s = np * 16 + 8 * j + 2 * qid;
            const float d0 = a.scale_qk * decay_pow_finite(l2l, t - s);
            const float d1 = a.scale_qk * decay_pow_finite(l2l, t - s - 1);
            const float v0 = (pc[0][j][2 * hf] + pc[1][j][2 * hf]) * d0;
            const float v1 = (pc[0][j][2 * hf + 1] + pc[1][j][2 * hf + 1]) * d1;
            *reinterpret_cast<uint32_t*>(smem + Sh::kOffP + tile_off<kChunk>(t, s / 8) + (s % 8) * 2) =
                ElemTraits<T>::pack(s <= t ? v0 : 0.0f, s + 1 <= t ? v1 : 0.0f);
          }
      }
      // ---- Inter-chunk part: O = diag(scale_state lambda^{t+1}) Q S, S^T fragments as B.
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int et = 0; et < 2; ++et)
#pragma unroll
          for (int x = 0; x < 4; ++x) acc_o[r][et][x] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
        // B[k = d][n = e] = S[d][e]: rows e (grp) of S^T tiles 2kk, 2kk+1 hold d = 16kk + 2qid.., +8.
        const uint32_t b00 = ElemTraits<T>::pack(acc_s[2 * kk][0], acc_s[2 * kk][1]);
        const uint32_t b01 = ElemTraits<T>::pack(acc_s[2 * kk + 1][0], acc_s[2 * kk + 1][1]);
        const uint32_t b10 = ElemTraits<T>::pack(acc_s[2 * kk][2], acc_s[2 * kk][3]);
        const uint32_t b11 = ElemTraits<T>::pack(acc_s[2 * kk + 1][2], acc_s[2 * kk + 1][3]);
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          uint32_t qa[4];
          ldmatrix_x4(qa, q_s + tile_off<D>(r * 16 + (lane & 15), 2 * kk + (lane >> 4)));
          mma_16816<T>(acc_o[r][0], qa, b00, b01);
          mma_16816<T>(acc_o[r][1], qa, b10, b11);
        }
      }
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const float f = a.scale_state * decay_pow_finite(l2l, r * 16 + grp + 8 * hf + 1 - first);
#pragma unroll
          for (int et = 0; et < 2; ++et) {
            acc_o[r][et][2 * hf] *= f;
            acc_o[r][et][2 * hf + 1] *= f;
          }
        }
      __syncthreads();  // P complete
    }

    // ---- Intra-chunk part O += P V and state update S^T <- lambda^nc S^T + V^T diag(f) K.
    {
      const float dn = decay_pow_finite(l2l, nc - first);
#pragma unroll
      for (int j = 0; j < DN; ++j)
#pragma unroll
        for (int x = 0; x < 4; ++x) acc_s[j][x] *= dn;
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {  // 16-token steps
        // V block (tokens 16kk.., columns 16 warp..): m0 (s, e), m1 (s+8, e), m2 (s, e+8), m3 (s+8, e+8),
        // each lane holding V[s0 + 2qid..+1][e0 + grp] of its matrix.
        uint32_t vm[4];
        ldmatrix_x4_trans(vm, v_s + tile_off<E>(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8,
                                                2 * warp + (lane >> 4)));
        if constexpr (kOut) {
          const uint32_t p_s = sbase + Sh::kOffP;
#pragma unroll
          for (int r = kk; r < 4; ++r) {  // causal: P[t][s] == 0 for column tiles past the row tile
            uint32_t pa[4];
            ldmatrix_x4(pa, p_s + tile_off<kChunk>(r * 16 + (lane & 15), 2 * kk + (lane >> 4)));
            mma_16816<T>(acc_o[r][0], pa, vm[0], vm[1]);
            mma_16816<T>(acc_o[r][1], pa, vm[2], vm[3]);
          }
        }
        // A = (V^T diag(f))[e][s], f_s = kv_scale lambda^{nc-1-s} (0 past the chunk end).
        float f[4];
#pragma unroll
        for (int x = 0; x < 4; ++x) {
          const int s = kk * 16 + 2 * qid + (x & 1) + 8 * (x >> 1);
          const float fx = a.kv_scale * decay_pow_finite(l2l, nc - 1 - s);
          f[x] = s < nc ? fx : 0.0f;
        }
        uint32_t va[4];
        va[0] = scale_pair<T>(vm[0], f[0], f[1]);
        va[1] = scale_pair<T>(vm[2], f[0], f[1]);
        va[2] = scale_pair<T>(vm[1], f[2], f[3]);
        va[3] = scale_pair<T>(vm[3], f[2], f[3]);
#pragma unroll
        for (int dt = 0; dt < KD; ++dt) {
          // B[k = s][n = d] = K[s][d]: same ldmatrix.trans addressing as V.
          uint32_t kf[4];
          ldmatrix_x4_trans(kf, k_s + tile_off<D>(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8,
                                                  2 * dt + (lane >> 4)));
          mma_16816<T>(acc_s[2 * dt], va, kf[0], kf[1]);
          mma_16816<T>(acc_s[2 * dt + 1], va, kf[2], kf[3]);
        }
      }
    }

    // ---- Output: stage this warp's 64 x 16 block, then 16-byte stores (two per token row).
    if constexpr (kOut) {
      unsigned char* stg = smem + Sh::kOffO + warp * kChunk * Sh::kOPitch;
#pragma unroll
      for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int et = 0; et < 2; ++et)
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const int t = r * 16 + grp + 8 * hf, e = 8 * et + 2 * qid;
            *reinterpret_cast<uint32_t*>(stg + t * Sh::kOPitch + e * 2) =
                ElemTraits<T>::pack(acc_o[r][et][2 * hf], acc_o[r][et][2 * hf + 1]);
          }
      __syncwarp();
#pragma unroll
      for (int i0 = 0; i0 < kChunk * 2 / 32; ++i0) {
        const int idx = i0 * 32 + lane;
        const int t = idx >> 1, half = idx & 1;
        if (t < nc) {
          const uint4 val = *reinterpret_cast<const uint4*>(stg + t * Sh::kOPitch + half * 16);
          *reinterpret_cast<uint4*>(ob + token_of(cs + t) * a.os.token + 16 * warp + 8 * half) = val;
        }
      }
    }
    slot = slot + 1 == Sh::kStages ? 0 : slot + 1;
    pf_slot = pf_slot + 1 == Sh::kStages ? 0 : pf_slot + 1;
  }
  cp_async_wait<0>();  // no copy may outlive the CTA's shared memory

  // Local state (kOut == false) or final state of the sequence (last segment).
  float* dst = nullptr;
  float mult = 1.0f;
  if (!kOut) {
    dst = a.slots + (static_cast<int64_t>(item) * a.heads + h) * D * E;
  } else if (it.last_seg && a.final_state != nullptr) {
    dst = a.final_state + (static_cast<int64_t>(it.seq) * a.heads + h) * D * E;
    if (a.final_extra_decay && n > 0) mult = decay_pow_finite(l2l, 1);
  }
  if (dst != nullptr) {
#pragma unroll
    for (int j = 0; j < DN; ++j)
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const int e = e_row + 8 * (x >> 1), d = 8 * j + 2 * qid + (x & 1);
        dst[d * E + e] = acc_s[j][x] * mult;
      }
  }
}

}  // namespace lightning
}  // namespace cuda
}  // namespace effattn
