// Host-side choice between the SM80-class and the Hopper (sm_90a) attention cores.
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

namespace effattn {
namespace cuda {

// EFFATTN_FORCE_SM80=1 keeps every launch on the SM80-class core (A/B comparisons, tests).
inline bool sm90_disabled_by_env() {
  static const bool disabled = [] {
    const char* v = std::getenv("EFFATTN_FORCE_SM80");
    return v != nullptr && std::strcmp(v, "") != 0 && std::strcmp(v, "0") != 0;
  }();
  return disabled;
}

// Key tiles per consumer step of the SM90 forward core (EFFATTN_SM90_PAIR=1 or 2; tuning).
inline int sm90_pair() {
  static const int pair = [] {
    const char* v = std::getenv("EFFATTN_SM90_PAIR");
    return v != nullptr && std::strcmp(v, "1") == 0 ? 1 : 2;
  }();
  return pair;
}

// Turn-taking of the two consumer warpgroups (EFFATTN_SM90_PINGPONG=0 turns it off; tuning).
inline int sm90_pingpong() {
  static const int on = [] {
    const char* v = std::getenv("EFFATTN_SM90_PINGPONG");
    return v != nullptr && std::strcmp(v, "0") == 0 ? 0 : 1;
  }();
  return on;
}

// TMA loads in the SM90 forward producer and the 128-key backward's producer (Q, dO) where
// tiles are token runs (EFFATTN_SM90_TMA=0 keeps the cp.async producers everywhere).
inline bool sm90_tma_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("EFFATTN_SM90_TMA");
    return !(v != nullptr && std::strcmp(v, "0") == 0);
  }();
  return on;
}

// Persistent CTAs for the SM90 forward where the TMA producer runs with a policy that allows
// them (NA), only with EFFATTN_SM90_PERSIST=1: on the H200 (2026-11-29) the persistent D = 128
// kernel spills and took 1D L32768 K2049 from 2.92 ms (TMA, one CTA per tile) to 3.47 ms.
inline bool sm90_persist_enabled() {
  static const bool on = [] {
    const char* v = std::getenv("EFFATTN_SM90_PERSIST");
    return v != nullptr && std::strcmp(v, "1") == 0;
  }();
  return on;
}

// SM90 backward: fused dK/dV/dQ pass with fp32 dQ atomics (default; EFFATTN_SM90_BWD=fused
// or fused128 pick its CTA size, see below) or the split dK/dV + recomputing dQ passes (EFFATTN_SM90_BWD=split:
// bitwise deterministic).
inline bool sm90_bwd_fused() {
  static const bool fused = [] {
    const char* v = std::getenv("EFFATTN_SM90_BWD");
    return !(v != nullptr && std::strcmp(v, "split") == 0);
  }();
  return fused;
}

// Which fused pass runs at head dim 128: 128-key CTAs (two consumer warpgroups of 64 keys,
// attn_bwd_fused128_sm90_kernel: half the dQ atomics and Q / dO loads per key) or 64-key
// CTAs. Default (EFFATTN_SM90_BWD unset): 128 keys where the pair of key tiles shares its
// query tiles — 1D neighborhoods and block-sparse block_k = 128 (H200: 1D K2049 12.5 vs
// 12.9 ms, block-sparse density 0.5 36.7 vs 43.0 ms) — and 64 keys on 2D / 3D, where the
// union of two tiles' query ranges wastes work (2D K13 1.43 vs 1.27 ms). `fused128` forces
// 128 keys wherever it applies, `fused` forces 64.
inline bool sm90_bwd_fused128(bool pair_shares_queries) {
  static const int mode = [] {
    const char* v = std::getenv("EFFATTN_SM90_BWD");
    if (v != nullptr && std::strcmp(v, "fused128") == 0) return 1;
    if (v != nullptr && std::strcmp(v, "fused") == 0) return 0;
    return -1;
  }();
  return mode < 0 ? pair_shares_queries : mode == 1;
}

// How the 128-key fused backward adds dQ: into a tile-contiguous fp32 accumulator with one
// 16 KB bulk reduction (cp.reduce.async.bulk) per consumer warpgroup and query tile (default;
// dq_tile_layout.cuh) or with per-element red.global.add into [B, tokens, H, D]
// (EFFATTN_SM90_DQ=atomics, the v7 path; A/B timing). The 64-key fused kernel always uses the
// atomics. The launchers fall back to the atomics when the workspace is too small for the
// tile-contiguous accumulator (or EFFATTN_BWD_PROBE has bit 32, the 4-wide atomics).
inline bool sm90_bwd_dq_tiled() {
  static const bool on = [] {
    const char* v = std::getenv("EFFATTN_SM90_DQ");
    return !(v != nullptr && std::strcmp(v, "atomics") == 0);
  }();
  return on;
}

// True when the current device is Hopper and `kernel` was compiled as sm_90a machine code
// (a build without sm_90a, or a JIT from older PTX, holds only the kernel's trap stub).
template <typename Kernel>
bool sm90_kernel_usable(Kernel kernel) {
  if (sm90_disabled_by_env()) return false;
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return false;
  if (major != 9) return false;
  cudaFuncAttributes fa;
  if (cudaFuncGetAttributes(&fa, kernel) != cudaSuccess) return false;
  return fa.ptxVersion >= 90 && fa.binaryVersion >= 90;
}

}  // namespace cuda
}  // namespace effattn
