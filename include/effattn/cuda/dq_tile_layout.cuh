// Tile-contiguous fp32 dQ accumulator of the 128-key fused Hopper backward
// (attn_bwd_fused128_sm90_kernel, attn_bwd_sm90_fused.cuh; EFFATTN_SM90_DQ unset).
//
// Layout: acc[b][hq][slot][half][64 rows][64 columns] fp32 (FA3's dq_accum idea). A slot is
// one 64-row query tile of the backward's policy (policy.dq_slot(QTile)): for NaPolicy and
// dense block-sparse it is the forward grid's linear query-tile index (blockIdx.x of a forward
// launch with 64-row tiles, policy.q_tile_linear); packed varlen block-sparse compacts the
// sequences' tiles (BlockListPolicy::dq_slot). `half` is the column half [64 h, 64 h + 64) of
// the head dim (D = 128: the consumer warpgroup that computes it). Each 64 x 64 block is
// 16 KB; a consumer warpgroup writes its block into a shared-memory image with exactly this
// layout and adds it with ONE cp.reduce.async.bulk .add.f32 of 16384 bytes.
//
// Inside a block, row r, column c is at float
//     r * 64 + 2 * ((c / 2) ^ ((r & 7) << 2)) + (c & 1)
// i.e. the float-pair index c / 2 (0..31) XOR-ed with 4 * (r % 8). Why: the consumers store
// their wgmma m64nNk16 f32 accumulator fragments with 8-byte st.shared.v2.f32. Thread (warp w,
// lane: grp = lane / 4, qid = lane % 4) holds rows 16 w + grp and 16 w + grp + 8 and, per
// n = 0..7, columns 8 n + 2 qid + {0, 1}: pair index p = 4 n + qid. One store instruction (fixed
// n and row half) of a warp writes, per lane, the 8 bytes at byte
//     256 r + 8 * ((4 n + qid) ^ (4 grp)) = 256 r + 32 (n ^ grp) + 8 qid     (r & 7 = grp).
// 8-byte accesses are served per half-warp (16 lanes, 128 bytes of banks): within lanes 0..15
// (grp 0..3) or 16..31 (grp 4..7), 256 r is a multiple of 128, and (32 (n ^ grp) + 8 qid) mod 128
// = 32 ((n ^ grp) mod 4) + 8 qid takes 16 distinct values — (n ^ grp) mod 4 = (n mod 4) ^ (grp mod
// 4) is a bijection of grp mod 4 — so every half-warp covers all 32 banks once: conflict-free.
// Without the XOR all four grp of a half-warp hit the same 8 bytes' banks (4-way conflict).
// The XOR flips only bits 2..4 of the pair index, so aligned groups of 2 pairs (16 bytes) stay
// contiguous: the convert kernel reads float4s. tests/cpp/test_dq_tiles.cpp checks both claims.
#pragma once

#include <cstdint>

namespace effattn {
namespace cuda {

constexpr int kDqTileRows = 64;                   // query rows of a tile (slot)
constexpr int kDqBlockCols = 64;                  // head-dim columns of a half block
constexpr int kDqBlockFloats = kDqTileRows * kDqBlockCols;  // 4096
constexpr int kDqBlockBytes = kDqBlockFloats * 4;           // 16384: one bulk reduction

// Float offset of (row, col) inside one 64 x 64 block (0 <= row, col < 64).
__host__ __device__ __forceinline__ constexpr int dq_block_offset(int row, int col) {
  return row * kDqBlockCols + ((((col >> 1) ^ ((row & 7) << 2))) << 1) + (col & 1);
}

// Byte offset, inside a block, of the 8-byte fragment pair (rows row0 and row0 + 8, columns
// 8 n + 2 qid + {0, 1}) of accumulator thread (grp, qid) whose first row is row0 (row0 & 7 =
// grp): 256 row0 + 32 (n ^ grp) + 8 qid, + 2048 for the second row. Equals 4 *
// dq_block_offset(row0, 8 n + 2 qid) (tests/cpp/test_dq_tiles.cpp).
__host__ __device__ __forceinline__ constexpr uint32_t dq_frag_byte_offset(int row0, int grp, int qid, int n) {
  return static_cast<uint32_t>(row0 * 256 + ((n ^ grp) << 5) + qid * 8);
}

// Floats of one slot (all column halves) at head dim D.
__host__ __device__ __forceinline__ constexpr int64_t dq_slot_floats(int64_t head_dim) {
  return kDqTileRows * head_dim;
}

// Whether the launchers use the tile-contiguous accumulator of `tile_floats` instead of the
// [B, tokens, H, D] one of `dense_floats` (both fp32): every slot holds 64 rows however few of
// them are valid, so short NA dilation groups (1D L 4096, dilation 2048: 2 valid rows per slot)
// or block-sparse varlen batches of many short sequences would need up to 64x the workspace
// and move 64x the data through the bulk reductions. Tiles when they at most double the
// accumulator, or add at most 2^24 floats (64 MiB: small problems keep the tiled path, which
// the tests exercise); else the red.global atomics.
__host__ __device__ __forceinline__ constexpr bool dq_tiles_size_ok(int64_t tile_floats, int64_t dense_floats) {
  return tile_floats <= 2 * dense_floats || tile_floats - dense_floats <= (int64_t(1) << 24);
}

}  // namespace cuda
}  // namespace effattn
