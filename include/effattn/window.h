// Neighborhood-attention window math (DESIGN.md §4), torch-free and shared by the CPU
// kernels, the CUDA kernels' tile policies and the GoogleTest suite.
//
// Per axis of length L with kernel K, dilation d, stride s and causal flag c, a query at
// global coordinate i attends to the keys at global coordinates g + j·d for j in
// [start, end), where g = i mod d is the query's dilation group and [start, end) is a
// range of group-local coordinates.
#pragma once

#include <cstdint>

#include "effattn/macros.h"

namespace effattn {

// Per-axis parameters of a neighborhood: kernel size, dilation, stride, causal flag.
struct AxisParams {
  int64_t length;
  int64_t kernel;
  int64_t dilation;
  int64_t stride;
  bool causal;
};

// Group-local key range [start, end) of one query plus its dilation group.
struct AxisWindow {
  int64_t group;  // i mod d: the key at local index j sits at global group + j * d
  int64_t start;  // first group-local key index
  int64_t end;    // one past the last group-local key index
};

// Number of positions of dilation group g on an axis of length L: ceil((L - g) / d).
EFFATTN_HOST_DEVICE int64_t group_length(int64_t length, int64_t dilation, int64_t group) {
  return (length - group + dilation - 1) / dilation;
}

// Window of query `i` (global coordinate) on one axis.
EFFATTN_HOST_DEVICE AxisWindow axis_window(const AxisParams& p, int64_t i) {
  const int64_t g = i % p.dilation;
  const int64_t local = i / p.dilation;
  const int64_t len = group_length(p.length, p.dilation, g);
  AxisWindow w;
  w.group = g;
  if (p.causal) {
    int64_t leader = (local / p.stride) * p.stride + p.stride - 1;
    if (leader > len - 1) leader = len - 1;
    w.start = leader - p.kernel + 1 > 0 ? leader - p.kernel + 1 : 0;
    w.end = local + 1 < len ? local + 1 : len;
  } else {
    const int64_t left = p.kernel / 2;
    const int64_t right = p.kernel / 2 + (p.kernel % 2) - 1;
    int64_t leader = (local / p.stride) * p.stride + p.stride / 2;
    if (leader > len - 1) leader = len - 1;
    int64_t start = leader - left > 0 ? leader - left : 0;
    if (leader + right >= len) start += len - right - leader - 1;
    w.start = start;
    w.end = start + p.kernel;
  }
  return w;
}

// Global coordinate of the group-local key index j of a window.
EFFATTN_HOST_DEVICE int64_t window_key(const AxisParams& p, const AxisWindow& w, int64_t j) {
  return w.group + j * p.dilation;
}

// True when the query at global coordinate i attends to the key at global coordinate k.
EFFATTN_HOST_DEVICE bool axis_attends(const AxisParams& p, int64_t i, int64_t k) {
  const AxisWindow w = axis_window(p, i);
  if (k % p.dilation != w.group) return false;
  const int64_t local = k / p.dilation;
  return local >= w.start && local < w.end;
}

}  // namespace effattn
