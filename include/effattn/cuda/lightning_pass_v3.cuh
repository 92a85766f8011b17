// The v3 lightning pass (EFFATTN_LIGHTNING_IMPL=v3; the default at D = E = 128 on sm_90a):
// the v2 pass's contract (PassArgs, kOut, slots, init, final state) on Hopper wgmma with warp
// specialisation. v2 is latency bound: one CTA of 8 warps per SM runs chains of dependent
// mma.sync; here the tensor-core work is issued as a few large asynchronous wgmmas.
//
// One CTA = one (segment of a sequence, head), 3 warpgroups:
//   warpgroup 0: producer. cp.async gathers of a chunk's Q, K, V rows (token_of mapping, rows
//     past the chunk end zero-filled) into a kStages-deep ring; completion arrives on the
//     stage's `full` mbarrier, consumers release it through its `empty` mbarrier.
//   warpgroups 1, 2 (w = 0, 1): consumers. Warpgroup w owns rows e in [64w, 64w+64) of the
//     TRANSPOSED state S^T (E x D, fp32 m64n128 wgmma accumulator) and output columns e of
//     that range. Per 64-token chunk:
//       G1: P[:, 32w..32w+32) = Q K^T (SS)  and  O^T = S^T Q^T (RS: A = S^T straight from the
//           accumulator registers, packed to 16 bits; B = Q, K-major)
//       decay + causal mask of the P half -> shared P (both halves needed by each group);
//       O^T columns t scaled by scale_state lambda^{t+1-first}; named barrier (256 threads)
//       G2: O^T += V^T P^T (RS: A = V^T by ldmatrix.trans; B = P, K-major)  and
//           S^T = lambda^{nc-first} S^T + (V^T diag f) K (RS; B = K, MN-major)
//       O^T -> O through a per-group staging tile (stmatrix.trans), 16-byte row stores, while
//       the state update still runs; then the stage is released.
//     kOut == false (local states): the state update only.
// Shared tiles are [64 rows][64 columns] 128-byte-swizzled panels (sm90::panel_offset), so the
// producer's cp.async, the consumers' ldmatrix / stmatrix and the wgmma descriptors agree.
#pragma once

#include "effattn/cuda/lightning_common.cuh"
#include "effattn/cuda/lightning_pass_v2.cuh"  // scale_pair
#include "effattn/cuda/sm90_ptx.cuh"

namespace effattn {
namespace cuda {
namespace lightning {

template <bool kOut>
struct PassV3Shape {
  static constexpr int D = 128;  // = E
  static constexpr int kThreads = 384;
  static constexpr int kStages = 4;
  static constexpr int kPanel = kChunk * 128;  // one [64][64] 16-bit panel: 8 KiB
  static constexpr int kTile = 2 * kPanel;     // a chunk of Q, K or V: 64 x 128
  static constexpr int kOffK = kOut ? kTile : 0;  // inside a stage (Q at 0 when kOut)
  static constexpr int kOffV = kOffK + kTile;
  static constexpr int kStageBytes = kOffV + kTile;
  static constexpr int kOffP = kStages * kStageBytes;           // P [64 t][64 u], two (chunk parity)
  static constexpr int kOffO = kOffP + (kOut ? 2 * kPanel : 0);  // O staging [64 t][64 e] per group
  static constexpr int kOffBars = kOffO + (kOut ? 2 * kPanel : 0);  // full[S], empty[S]
  // + 1024: the dynamic shared memory base is aligned up to the swizzle's 1024 bytes.
  static constexpr int kBytes = kOffBars + 2 * kStages * 8 + 1024;
  static_assert(kBytes <= 227 * 1024, "lightning v3: shared memory");
  // 128 * producer + 256 * consumer registers <= 64 K (the producer's 64-bit address arithmetic
  // spills at 40; the consumers fit 224 without spilling).
  static constexpr int kProducerRegs = 56;
  static constexpr int kConsumerRegs = 224;
};

template <typename T, bool kOut>
__global__ void __launch_bounds__(384, 1) lightning_pass_v3_kernel(const PassArgs a) {
#ifdef EFFATTN_SM90_ENABLED
  using Sh = PassV3Shape<kOut>;
  using Tr = ElemTraits<T>;
  constexpr int D = Sh::D, E = Sh::D;
  constexpr int S = Sh::kStages;
  constexpr int kPanel = Sh::kPanel;

  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t sbase = (raw + 1023u) & ~1023u;
  unsigned char* const smem = smem_raw + (sbase - raw);  // generic address of sbase
  const uint32_t bar_full = sbase + Sh::kOffBars;        // + 8 * stage
  const uint32_t bar_empty = bar_full + 8 * S;           // + 8 * stage

  const int tid = threadIdx.x;
  const int h = static_cast<int>(blockIdx.x % static_cast<unsigned>(a.heads));
  const int64_t item = blockIdx.x / static_cast<unsigned>(a.heads);
  const PassItem it = pass_item(a, item);
  if (!kOut && it.last_seg) return;  // local states are needed for non-last segments only

  const int reverse = a.reverse;
  const int64_t t0 = it.t0, n = it.n;
  auto token_of = [&](int64_t p) -> int64_t { return reverse ? t0 + n - 1 - p : t0 + p; };
  const int64_t seg_tokens = it.seg_end > it.seg_begin ? it.seg_end - it.seg_begin : 0;
  const int64_t nchunks = (seg_tokens + kChunk - 1) / kChunk;
  auto chunk_len = [&](int64_t ci) -> int {
    const int64_t rest = seg_tokens - ci * kChunk;
    return static_cast<int>(rest < kChunk ? rest : kChunk);
  };

  if (tid == 0) {
    for (int s = 0; s < S; ++s) {
      sm90::mbar_init(bar_full + 8 * s, 128);   // every producer thread's cp.async arrival
      sm90::mbar_init(bar_empty + 8 * s, 256);  // every consumer thread
    }
    sm90::mbar_init_fence();
  }
  __syncthreads();  // the only CTA-wide barrier

  if (tid < 128) {
    // ---------------- producer ----------------
    sm90::regs_dealloc<Sh::kProducerRegs>();
    const T* qb = static_cast<const T*>(a.q) + it.b * a.qs.batch + h * a.qs.head;
    const T* kb = static_cast<const T*>(a.k) + it.b * a.ks.batch + h * a.ks.head;
    const T* vb = static_cast<const T*>(a.v) + it.b * a.vs.batch + h * a.vs.head;
    const int64_t dir = reverse ? -1 : 1;
    const int64_t qst = dir * a.qs.token, kst = dir * a.ks.token, vst = dir * a.vs.token;
    const int c = tid & 15;  // 16-byte chunk of the row; a warp covers two whole rows
    for (int64_t ci = 0; ci < nchunks; ++ci) {
      const int stage = static_cast<int>(ci % S);
      if (ci >= S) sm90::mbar_wait(bar_empty + 8 * stage, static_cast<uint32_t>(((ci / S) + 1) & 1));
      const int nc = chunk_len(ci);
      const int64_t tok0 = token_of(it.seg_begin + ci * kChunk);  // row r is token tok0 + dir r
      const T* qr = qb + tok0 * a.qs.token + c * 8;
      const T* kr = kb + tok0 * a.ks.token + c * 8;
      const T* vr = vb + tok0 * a.vs.token + c * 8;
      const uint32_t st = sbase + stage * Sh::kStageBytes;
#pragma unroll 2
      for (int i0 = 0; i0 < kChunk / 8; ++i0) {
        const int r = i0 * 8 + (tid >> 4);
        const bool valid = r < nc;
        const int64_t rr = valid ? r : 0;
        const uint32_t off = sm90::panel_offset<kChunk>(r, c);
        if constexpr (kOut) cp_async_16(st + off, qr + rr * qst, valid);
        cp_async_16(st + Sh::kOffK + off, kr + rr * kst, valid);
        cp_async_16(st + Sh::kOffV + off, vr + rr * vst, valid);
      }
      sm90::mbar_arrive_cp_async(bar_full + 8 * stage);
    }
    cp_async_wait<0>();  // no copy may outlive the CTA's shared memory
    return;
  }

  // ---------------- consumers ----------------
  sm90::regs_alloc<Sh::kConsumerRegs>();
  const int wg = tid / 128 - 1;
  const int wtid = tid % 128, warp = wtid / 32, lane = wtid % 32, grp = lane / 4, qid = lane % 4;
  const float l2l = finite_log2_lambda(a.slope[h]);
  T* ob = kOut ? static_cast<T*>(a.o) + it.b * a.os.batch + h * a.os.head : nullptr;

  // S^T in wgmma C fragments: acc_s[4 j + x] = S[d][e], e = e_row + 8 (x >> 1),
  // d = 8 j + 2 qid + (x & 1).
  const int e_row = 64 * wg + 16 * warp + grp;
  float acc_s[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) acc_s[i] = 0.0f;
  if constexpr (kOut) {
    if (a.slots != nullptr) {
      const float* src = a.slots + (static_cast<int64_t>(item) * a.heads + h) * D * E;
#pragma unroll
      for (int j = 0; j < D / 8; ++j)
#pragma unroll
        for (int x = 0; x < 4; ++x) {
          const int e = e_row + 8 * (x >> 1), d = 8 * j + 2 * qid + (x & 1);
          acc_s[4 * j + x] = src[d * E + e];
        }
    } else if (a.init != nullptr) {
      const float* src = a.init + it.seq * a.init_seq + h * a.init_head;
#pragma unroll
      for (int j = 0; j < D / 8; ++j)
#pragma unroll
        for (int x = 0; x < 4; ++x) {
          const int e = e_row + 8 * (x >> 1), d = 8 * j + 2 * qid + (x & 1);
          acc_s[4 * j + x] = src[d * a.init_row + e * a.init_col];
        }
    }
  }

  for (int64_t ci = 0; ci < nchunks; ++ci) {
    const int stage = static_cast<int>(ci % S);
    const int64_t cs = it.seg_begin + ci * kChunk;
    const int nc = chunk_len(ci);
    // Chunk 0 of a sequence with init_shift: the start state is one decay step "younger".
    const int first = (a.init_shift != 0 && it.seg == 0 && ci == 0) ? 1 : 0;
    const uint32_t st = sbase + stage * Sh::kStageBytes;
    const uint32_t q_s = st, k_s = st + Sh::kOffK, v_s = st + Sh::kOffV;
    const uint32_t p_s = sbase + Sh::kOffP + static_cast<uint32_t>(ci & 1) * kPanel;
    sm90::mbar_wait(bar_full + 8 * stage, static_cast<uint32_t>((ci / S) & 1));
    // The stage was written by cp.async (generic proxy); its wgmma reads are async proxy.
    sm90::fence_proxy_async_smem();

    // O^T in C fragments: acc_ot[4 j + x] = O[t][e], e = e_row + 8 (x >> 1), t = 8 j + 2 qid + (x & 1).
    [[maybe_unused]] float acc_ot[32];
    // P half: acc_p[4 j + x] = P[t][u], t = 16 warp + grp + 8 (x >> 1), u = 32 wg + 8 j + 2 qid + (x & 1).
    [[maybe_unused]] float acc_p[16];
    // A fragments of S^T for k step kk (d in [16 kk, 16 kk + 16)): n tiles 2 kk, 2 kk + 1.
    [[maybe_unused]] uint32_t sa[D / 16][4];
    if constexpr (kOut) {
      // ---- G1: P half (columns u in [32 wg, 32 wg + 32)) and O^T = S^T Q^T.
#pragma unroll
      for (int i = 0; i < 16; ++i) acc_p[i] = 0.0f;
#pragma unroll
      for (int i = 0; i < 32; ++i) acc_ot[i] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        sa[kk][0] = Tr::pack(acc_s[8 * kk + 0], acc_s[8 * kk + 1]);
        sa[kk][1] = Tr::pack(acc_s[8 * kk + 2], acc_s[8 * kk + 3]);
        sa[kk][2] = Tr::pack(acc_s[8 * kk + 4], acc_s[8 * kk + 5]);
        sa[kk][3] = Tr::pack(acc_s[8 * kk + 6], acc_s[8 * kk + 7]);
      }
      sm90::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const uint32_t koff = (kk >> 2) * kPanel + (kk & 3) * 32;
        sm90::wgmma_m64n32k16_ss<T, 0>(acc_p, sm90::desc_kmajor(q_s + koff),
                                       sm90::desc_kmajor(k_s + koff + wg * 32 * 128), kk > 0 ? 1 : 0);
      }
      sm90::wgmma_commit();
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) {
        const uint32_t koff = (kk >> 2) * kPanel + (kk & 3) * 32;
        sm90::wgmma_rs<T, 64, 0>(acc_ot, sa[kk], sm90::desc_kmajor(q_s + koff), kk > 0 ? 1 : 0);
      }
      sm90::wgmma_commit();
    }

    // ---- While G1 runs: V^T fragments (A operands). V block (tokens 16 kk.., columns
    // e_row - grp..) by ldmatrix.trans: m0 (s, e), m1 (s+8, e), m2 (s, e+8), m3 (s+8, e+8).
    [[maybe_unused]] uint32_t vp[4][4];  // V^T, for O^T += V^T P^T
    uint32_t vs[4][4];                   // V^T diag(f), f_s = kv_scale lambda^{nc-1-s} (0 past nc)
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t vm[4];
      ldmatrix_x4_trans(vm, v_s + sm90::panel_offset<kChunk>(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8,
                                                              8 * wg + 2 * warp + (lane >> 4)));
      if constexpr (kOut) {
        vp[kk][0] = vm[0];
        vp[kk][1] = vm[2];
        vp[kk][2] = vm[1];
        vp[kk][3] = vm[3];
      }
      float f[4];
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const int s = kk * 16 + 2 * qid + (x & 1) + 8 * (x >> 1);
        const float fx = a.kv_scale * decay_pow_finite(l2l, nc - 1 - s);
        f[x] = s < nc ? fx : 0.0f;
      }
      vs[kk][0] = scale_pair<T>(vm[0], f[0], f[1]);
      vs[kk][1] = scale_pair<T>(vm[2], f[0], f[1]);
      vs[kk][2] = scale_pair<T>(vm[1], f[2], f[3]);
      vs[kk][3] = scale_pair<T>(vm[3], f[2], f[3]);
    }

    if constexpr (kOut) {
      sm90::wgmma_wait<1>();  // P half ready; O^T may still run
      sm90::fence_regs(acc_p);

      // ---- P[t][u] = scale_qk lambda^{t-u} (Q K^T)[t][u] for u <= t, else 0 -> shared P.
      unsigned char* p_g = smem + Sh::kOffP + (ci & 1) * kPanel;
#pragma unroll
      for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const int t = 16 * warp + grp + 8 * hf, u = 32 * wg + 8 * j + 2 * qid;
          const float d0 = a.scale_qk * decay_pow_finite(l2l, t - u);
          const float d1 = a.scale_qk * decay_pow_finite(l2l, t - u - 1);
          const float v0 = acc_p[4 * j + 2 * hf] * d0, v1 = acc_p[4 * j + 2 * hf + 1] * d1;
          *reinterpret_cast<uint32_t*>(p_g + sm90::panel_offset<kChunk>(t, u >> 3) + (u & 7) * 2) =
              Tr::pack(u <= t ? v0 : 0.0f, u + 1 <= t ? v1 : 0.0f);
        }
      sm90::fence_proxy_async_smem();  // P is read by the other group's wgmma (async proxy)

      sm90::wgmma_wait<0>();
      sm90::fence_regs(acc_ot);
#pragma unroll
      for (int kk = 0; kk < D / 16; ++kk) sm90::fence_regs(sa[kk]);
      // Inter-chunk part: O^T column t times scale_state lambda^{t+1-first}.
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int x = 0; x < 2; ++x) {
          const float f = a.scale_state * decay_pow_finite(l2l, 8 * j + 2 * qid + x + 1 - first);
          acc_ot[4 * j + x] *= f;
          acc_ot[4 * j + 2 + x] *= f;
        }
    }
    // State decay after G1's wait: ptxas would otherwise wait for G1 before touching acc_s
    // (it treats every wgmma accumulator as busy while any wgmma is in flight).
    {
      const float dn = decay_pow_finite(l2l, nc - first);
#pragma unroll
      for (int i = 0; i < 64; ++i) acc_s[i] *= dn;
    }
    // Both P halves written (and this group's reads of P two chunks ago long done).
    if constexpr (kOut) sm90::named_bar_sync(1, 256);

    // ---- G2: O^T += V^T P^T (group 1), S^T += (V^T diag f) K (group 2); the output of the
    // chunk is written while the state update still runs.
    sm90::wgmma_fence();
    if constexpr (kOut) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) sm90::wgmma_rs<T, 64, 0>(acc_ot, vp[kk], sm90::desc_kmajor(p_s + kk * 32), 1);
      sm90::wgmma_commit();
    }
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      sm90::wgmma_rs<T, 128, 1>(acc_s, vs[kk], sm90::desc_mnmajor(k_s + kk * 16 * 128, kPanel), 1);
    }
    sm90::wgmma_commit();

    // ---- Output: O^T -> staging [64 t][64 e] (stmatrix.trans: fragment (e, t) -> row t),
    // then 16-byte row stores. The staging is rewritten only after the next chunk's named
    // barrier, which every thread of the group reaches after its reads below.
    if constexpr (kOut) {
      sm90::wgmma_wait<1>();  // O^T complete
      sm90::fence_regs(acc_ot);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) sm90::fence_regs(vp[kk]);
      const uint32_t stg = sbase + Sh::kOffO + wg * kPanel;
      const int mi = lane >> 3;
#pragma unroll
      for (int jj = 0; jj < 4; ++jj) {
        const int t = 8 * (2 * jj + (mi >> 1)) + (lane & 7);
        const int ch = 2 * warp + (mi & 1);
        sm90::stmatrix_x4_trans(stg + t * 128 + ((ch ^ (t & 7)) * 16),
                                Tr::pack(acc_ot[8 * jj + 0], acc_ot[8 * jj + 1]),
                                Tr::pack(acc_ot[8 * jj + 2], acc_ot[8 * jj + 3]),
                                Tr::pack(acc_ot[8 * jj + 4], acc_ot[8 * jj + 5]),
                                Tr::pack(acc_ot[8 * jj + 6], acc_ot[8 * jj + 7]));
      }
      sm90::named_bar_sync(2 + wg, 128);
      const unsigned char* stg_g = smem + Sh::kOffO + wg * kPanel;
#pragma unroll
      for (int i0 = 0; i0 < 4; ++i0) {
        const int i = i0 * 128 + wtid;
        const int t = i >> 3, c = i & 7;
        if (t < nc) {
          const uint4 val = *reinterpret_cast<const uint4*>(stg_g + t * 128 + ((c ^ (t & 7)) * 16));
          *reinterpret_cast<uint4*>(ob + token_of(cs + t) * a.os.token + 64 * wg + 8 * c) = val;
        }
      }
    }
    sm90::wgmma_wait<0>();  // state update complete
    sm90::fence_regs(acc_s);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) sm90::fence_regs(vs[kk]);
    sm90::mbar_arrive(bar_empty + 8 * stage);  // Q, K, V of this stage fully consumed
  }

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
    for (int j = 0; j < D / 8; ++j)
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        const int e = e_row + 8 * (x >> 1), d = 8 * j + 2 * qid + (x & 1);
        dst[d * E + e] = acc_s[4 * j + x] * mult;
      }
  }
#else
  __trap();
#endif
}

}  // namespace lightning
}  // namespace cuda
}  // namespace effattn
