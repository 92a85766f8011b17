#include "block_map_cache.h"

#include <c10/core/TensorImpl.h>
#include <c10/util/intrusive_ptr.h>

#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <vector>

namespace effattn {
namespace {

// A few entries: one per distinct map pair in flight (layers sharing a map share an entry).
constexpr size_t kCapacity = 8;

bool cache_enabled() {
  const char* v = std::getenv("EFFATTN_BS_MAP_CACHE");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

// Inference tensors (made under torch.inference_mode) have no version counter: in-place
// changes to them cannot be seen, so they are checked at every call.
bool cacheable(const at::Tensor& num, const at::Tensor& idx) {
  return cache_enabled() && !num.is_inference() && !idx.is_inference();
}

// What one map tensor must still be for a hit.
struct TensorId {
  c10::weak_intrusive_ptr<c10::TensorImpl> impl;
  const c10::TensorImpl* raw;
  int64_t version;
  const void* data;
  std::vector<int64_t> sizes, strides;

  explicit TensorId(const at::Tensor& t)
      : impl(t.getIntrusivePtr()),
        raw(t.unsafeGetTensorImpl()),
        version(t._version()),
        data(t.data_ptr()),
        sizes(t.sizes().vec()),
        strides(t.strides().vec()) {}
  // The weak reference keeps `raw` from being reused by another tensor while it is held, so
  // pointer equality plus an unexpired reference means the same tensor object.
  bool matches(const at::Tensor& t) const {
    return raw == t.unsafeGetTensorImpl() && !impl.expired() && version == t._version() &&
           data == t.data_ptr() && t.sizes().equals(sizes) && t.strides().equals(strides);
  }
};

// The bounds the values were checked against (block_maps_known_valid's geometry).
std::vector<int64_t> geometry(const BlockSparseProblem& p) {
  std::vector<int64_t> g = {p.k_blocks, p.max_blocks, p.map_q_blocks, p.map_batch, p.map_heads,
                            p.block_q,  p.block_k,    p.varlen ? 1 : 0};
  if (p.varlen) {
    for (const auto& s : p.seqs) {
      g.push_back(s.q_len);
      g.push_back(s.k_len);
    }
  }
  return g;
}

struct Entry {
  TensorId num, idx;
  std::vector<int64_t> geo;
  at::Tensor q_num, q_idx;  // transposed map, once a backward built it
};

std::mutex mu;
std::list<Entry>& entries() {
  static std::list<Entry> list;  // most recently used first
  return list;
}

// The matching entry moved to the front, or end(). Caller holds `mu`.
std::list<Entry>::iterator find(const BlockSparseProblem& p, const at::Tensor& num, const at::Tensor& idx) {
  auto& list = entries();
  const std::vector<int64_t> geo = geometry(p);
  for (auto it = list.begin(); it != list.end(); ++it) {
    if (it->geo == geo && it->num.matches(num) && it->idx.matches(idx)) {
      list.splice(list.begin(), list, it);
      return list.begin();
    }
  }
  return list.end();
}

}  // namespace

bool block_maps_known_valid(const BlockSparseProblem& p, const at::Tensor& kv_num_blocks,
                            const at::Tensor& kv_indices) {
  if (!cacheable(kv_num_blocks, kv_indices)) return false;
  std::lock_guard<std::mutex> lock(mu);
  return find(p, kv_num_blocks, kv_indices) != entries().end();
}

void remember_valid_block_maps(const BlockSparseProblem& p, const at::Tensor& kv_num_blocks,
                               const at::Tensor& kv_indices) {
  if (!cacheable(kv_num_blocks, kv_indices)) return;
  std::lock_guard<std::mutex> lock(mu);
  if (find(p, kv_num_blocks, kv_indices) != entries().end()) return;
  auto& list = entries();
  list.remove_if([](const Entry& e) { return e.num.impl.expired() || e.idx.impl.expired(); });
  while (list.size() >= kCapacity) list.pop_back();
  list.push_front(Entry{TensorId(kv_num_blocks), TensorId(kv_indices), geometry(p), {}, {}});
}

std::pair<at::Tensor, at::Tensor> cached_transposed_map(
    const BlockSparseProblem& p, const at::Tensor& kv_num_blocks, const at::Tensor& kv_indices,
    const std::function<std::pair<at::Tensor, at::Tensor>()>& build) {
  const bool cache = cacheable(kv_num_blocks, kv_indices);
  if (cache) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = find(p, kv_num_blocks, kv_indices);
    if (it != entries().end() && it->q_num.defined()) return {it->q_num, it->q_idx};
  }
  // Built outside the lock (tensor ops); a concurrent builder of the same entry just repeats it.
  auto built = build();
  if (cache) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = find(p, kv_num_blocks, kv_indices);
    if (it != entries().end()) {
      it->q_num = built.first;
      it->q_idx = built.second;
    }
  }
  return built;
}

}  // namespace effattn
