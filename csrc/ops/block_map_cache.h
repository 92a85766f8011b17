// Block maps whose values were already checked, remembered by identity and version counter,
// so that calls reusing the same kv_num_blocks / kv_indices (every training step of a layer,
// the backward after its forward) skip the value checks' host sync and tensor ops, and the
// CUDA backward reuses the transposed map it built the first time (FlexAttention's BlockMask
// likewise holds both directions, built once and never re-checked).
//
// A hit needs the same storage (held through a weak reference to its StorageImpl, so a freed
// map's memory cannot come back as a new map's while the entry exists; the tensors themselves
// are not referenced, so torch.utils.swap_tensors still works on them), the same TensorImpl,
// the same version counters (every in-place op on a map or on a view of it bumps them), storage
// offsets, shapes and strides, and the same problem geometry (the bounds the values were checked
// against). The snapshot is taken before the checks run. Writes that bypass the version counter
// (numpy / DLPack aliases, `.data`, raw pointers, a CUDA graph replaying a copy into a map) are
// not seen: such maps are not re-checked (the kernels clamp map values, so they give wrong
// results, never out-of-bounds reads: block_sparse_cpu.cpp, BlockListPolicy). Inference
// tensors (no version counter) are never cached. EFFATTN_BS_MAP_CACHE=0 turns the cache off.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <utility>

#include "block_sparse_checks.h"

namespace effattn {

// Identity + version of a map pair and its geometry, taken before the checks; empty when the
// maps cannot be cached (cache off, inference tensors).
struct BlockMapKey;
using BlockMapKeyPtr = std::shared_ptr<const BlockMapKey>;
BlockMapKeyPtr block_map_key(const BlockSparseProblem& p, const at::Tensor& kv_num_blocks,
                             const at::Tensor& kv_indices);

// True if a pair with this key passed the value checks.
bool block_maps_known_valid(const BlockMapKeyPtr& key);

// Records that the pair with this key passed the value checks.
void remember_valid_block_maps(const BlockMapKeyPtr& key);

// The transposed map (q_num_blocks, q_indices) of the maps with this key: the one `build` made
// for them before on the same stream (`stream_id`), or a new one from `build`, stored beside
// the maps' entry when they are known valid. `reuse` false (e.g. during CUDA graph capture, so
// the graph records the transposition) always builds, without storing.
std::pair<at::Tensor, at::Tensor> cached_transposed_map(
    const BlockMapKeyPtr& key, int64_t stream_id, bool reuse,
    const std::function<std::pair<at::Tensor, at::Tensor>()>& build);

}  // namespace effattn
