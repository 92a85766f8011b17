#include "block_map_cache.h"

#include <c10/core/StorageImpl.h>
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

// What one map tensor must still be for a hit.
struct TensorId {
  c10::weak_intrusive_ptr<c10::StorageImpl> storage;
  const c10::StorageImpl* storage_raw;
  const c10::TensorImpl* impl_raw;
  int64_t version;
  int64_t offset;
  std::vector<int64_t> sizes, strides;

  explicit TensorId(const at::Tensor& t)
      : storage(c10::intrusive_ptr<c10::StorageImpl>::reclaim_copy(t.storage().unsafeGetStorageImpl())),
        storage_raw(t.storage().unsafeGetStorageImpl()),
        impl_raw(t.unsafeGetTensorImpl()),
        version(t._version()),
        offset(t.storage_offset()),
        sizes(t.sizes().vec()),
        strides(t.strides().vec()) {}

  bool expired() const { return storage.expired(); }
  // The weak reference keeps `storage_raw` from being reused by another storage while it is
  // held, so pointer equality plus an unexpired reference means the same memory.
  bool matches(const TensorId& o) const {
    return storage_raw == o.storage_raw && !storage.expired() && impl_raw == o.impl_raw &&
           version == o.version && offset == o.offset && sizes == o.sizes && strides == o.strides;
  }
};

// The bounds the values were checked against.
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

}  // namespace

struct BlockMapKey {
  TensorId num, idx;
  std::vector<int64_t> geo;

  bool matches(const BlockMapKey& o) const { return geo == o.geo && num.matches(o.num) && idx.matches(o.idx); }
  bool expired() const { return num.expired() || idx.expired(); }
};

namespace {

struct Entry {
  BlockMapKey key;
  at::Tensor q_num, q_idx;  // transposed map, once a backward built it
  int64_t stream_id = 0;    // the stream it was built on
};

std::mutex mu;
std::list<Entry>& entries() {
  static std::list<Entry> list;  // most recently used first
  return list;
}

// The matching entry moved to the front, or end(); entries of freed maps are dropped on the
// way (with the transposed maps they hold). Caller holds `mu`.
std::list<Entry>::iterator find(const BlockMapKey& key) {
  auto& list = entries();
  list.remove_if([](const Entry& e) { return e.key.expired(); });
  for (auto it = list.begin(); it != list.end(); ++it) {
    if (it->key.matches(key)) {
      list.splice(list.begin(), list, it);
      return list.begin();
    }
  }
  return list.end();
}

}  // namespace

BlockMapKeyPtr block_map_key(const BlockSparseProblem& p, const at::Tensor& kv_num_blocks,
                             const at::Tensor& kv_indices) {
  if (!cache_enabled() || kv_num_blocks.is_inference() || kv_indices.is_inference()) return nullptr;
  return std::make_shared<const BlockMapKey>(
      BlockMapKey{TensorId(kv_num_blocks), TensorId(kv_indices), geometry(p)});
}

bool block_maps_known_valid(const BlockMapKeyPtr& key) {
  if (!key) return false;
  std::lock_guard<std::mutex> lock(mu);
  return find(*key) != entries().end();
}

void remember_valid_block_maps(const BlockMapKeyPtr& key) {
  if (!key) return;
  std::lock_guard<std::mutex> lock(mu);
  if (find(*key) != entries().end()) return;
  auto& list = entries();
  while (list.size() >= kCapacity) list.pop_back();
  list.push_front(Entry{*key, {}, {}, 0});
}

std::pair<at::Tensor, at::Tensor> cached_transposed_map(
    const BlockMapKeyPtr& key, int64_t stream_id, bool reuse,
    const std::function<std::pair<at::Tensor, at::Tensor>()>& build) {
  const bool cache = key && reuse;
  if (cache) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = find(*key);
    // Only on the stream it was built on: no cross-stream ordering or allocator bookkeeping.
    if (it != entries().end() && it->q_num.defined() && it->stream_id == stream_id) return {it->q_num, it->q_idx};
  }
  // Built outside the lock (tensor ops); a concurrent builder of the same entry just repeats it.
  auto built = build();
  if (cache) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = find(*key);
    if (it != entries().end()) {
      it->q_num = built.first;
      it->q_idx = built.second;
      it->stream_id = stream_id;
    }
  }
  return built;
}

}  // namespace effattn
