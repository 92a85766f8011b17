// Block maps whose values were already checked, remembered by tensor identity and version
// counter, so that calls reusing the same kv_num_blocks / kv_indices (every training step of a
// layer, the backward after its forward) skip the value checks' host syncs and tensor ops,
// and the CUDA backward reuses the transposed map it built the first time (FlexAttention's
// BlockMask likewise holds both directions, built once).
//
// A hit needs the same TensorImpl objects (held through weak references, so a freed map's
// address cannot come back as a new tensor while the entry exists), the same version counters
// (every in-place op on a map or on a view of it bumps them), the same data pointers, shapes
// and strides, and the same problem geometry (the bounds the values were checked against).
// Writes that bypass the version counter (through `.data` or raw pointers) are not seen: such
// maps are not re-checked. Inference tensors (no version counter) are never cached.
// EFFATTN_BS_MAP_CACHE=0 turns the cache off (every call checks).
#pragma once

#include <ATen/core/Tensor.h>

#include <functional>
#include <utility>

#include "block_sparse_checks.h"

namespace effattn {

// True if these maps were checked for this problem's geometry (and are unchanged since).
bool block_maps_known_valid(const BlockSparseProblem& p, const at::Tensor& kv_num_blocks,
                            const at::Tensor& kv_indices);

// Records that these maps passed the value checks for this problem's geometry.
void remember_valid_block_maps(const BlockSparseProblem& p, const at::Tensor& kv_num_blocks,
                               const at::Tensor& kv_indices);

// The transposed map (q_num_blocks, q_indices) of these maps: from the cache, or built with
// `build` and stored beside the maps' entry (built uncached when the cache is off or the maps
// were never recorded as valid).
std::pair<at::Tensor, at::Tensor> cached_transposed_map(
    const BlockSparseProblem& p, const at::Tensor& kv_num_blocks, const at::Tensor& kv_indices,
    const std::function<std::pair<at::Tensor, at::Tensor>()>& build);

}  // namespace effattn
