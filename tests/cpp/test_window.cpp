// Window math of include/effattn/window.h: the host code the CPU kernels and the CUDA
// tile policies share.
#include <gtest/gtest.h>

#include <vector>

#include "effattn/window.h"

using effattn::AxisParams;
using effattn::axis_attends;
using effattn::axis_window;
using effattn::group_length;
using effattn::window_key;

namespace {

std::vector<int64_t> keys_of(const AxisParams& p, int64_t i) {
  const auto w = axis_window(p, i);
  std::vector<int64_t> keys;
  for (int64_t j = w.start; j < w.end; ++j) keys.push_back(window_key(p, w, j));
  return keys;
}

using Keys = std::vector<int64_t>;

}  // namespace

TEST(Window, CenteredAndShiftedAtBorders) {
  const AxisParams p{10, 3, 1, 1, false};
  EXPECT_EQ(keys_of(p, 0), (Keys{0, 1, 2}));
  EXPECT_EQ(keys_of(p, 5), (Keys{4, 5, 6}));
  EXPECT_EQ(keys_of(p, 9), (Keys{7, 8, 9}));
}

TEST(Window, EvenKernelHasOneMoreKeyOnTheLeft) {
  const AxisParams p{10, 4, 1, 1, false};
  EXPECT_EQ(keys_of(p, 5), (Keys{3, 4, 5, 6}));
  EXPECT_EQ(keys_of(p, 0), (Keys{0, 1, 2, 3}));
  EXPECT_EQ(keys_of(p, 9), (Keys{6, 7, 8, 9}));
}

TEST(Window, DilationStaysInsideTheGroup) {
  const AxisParams p{10, 3, 2, 1, false};
  EXPECT_EQ(group_length(10, 2, 1), 5);
  EXPECT_EQ(keys_of(p, 1), (Keys{1, 3, 5}));
  EXPECT_EQ(keys_of(p, 4), (Keys{2, 4, 6}));
  EXPECT_EQ(keys_of(p, 8), (Keys{4, 6, 8}));
  // Uneven groups: L = 11, d = 3 gives groups of 4, 4, 3.
  const AxisParams q{11, 3, 3, 1, false};
  EXPECT_EQ(group_length(11, 3, 2), 3);
  EXPECT_EQ(keys_of(q, 8), (Keys{2, 5, 8}));
  EXPECT_EQ(keys_of(q, 9), (Keys{3, 6, 9}));
}

TEST(Window, StrideSharesTheLeadersWindow) {
  const AxisParams p{12, 5, 1, 2, false};
  EXPECT_EQ(keys_of(p, 0), keys_of(p, 1));
  EXPECT_EQ(keys_of(p, 4), keys_of(p, 5));
  EXPECT_EQ(keys_of(p, 4), (Keys{3, 4, 5, 6, 7}));  // leader 5
  // The last stride group is cut by the border: its leader is clamped to L - 1.
  const AxisParams q{10, 3, 1, 4, false};
  EXPECT_EQ(keys_of(q, 8), (Keys{7, 8, 9}));
}

TEST(Window, CausalEndsAtTheQuery) {
  const AxisParams p{10, 3, 1, 1, true};
  EXPECT_EQ(keys_of(p, 0), (Keys{0}));
  EXPECT_EQ(keys_of(p, 1), (Keys{0, 1}));
  EXPECT_EQ(keys_of(p, 6), (Keys{4, 5, 6}));
  // With stride, the window starts from the stride group's last member.
  const AxisParams s{10, 3, 1, 3, true};
  EXPECT_EQ(keys_of(s, 3), (Keys{3}));
  EXPECT_EQ(keys_of(s, 5), (Keys{3, 4, 5}));
}

TEST(Window, KernelEqualToLengthIsTheWholeAxis) {
  for (int64_t i = 0; i < 7; ++i) EXPECT_EQ(keys_of({7, 7, 1, 1, false}, i), (Keys{0, 1, 2, 3, 4, 5, 6}));
}

// Properties over many configurations: window size, bounds, self-inclusion, agreement
// with axis_attends, and monotone start/end (the CUDA tile policy relies on it).
TEST(Window, PropertiesHoldForAllSmallConfigurations) {
  for (int64_t L = 2; L <= 24; ++L)
    for (int64_t K = 2; K <= L; ++K)
      for (int64_t d = 1; K * d <= L; ++d)
        for (int64_t s = 1; s <= K; ++s)
          for (bool causal : {false, true}) {
            const AxisParams p{L, K, d, s, causal};
            int64_t previous_start[64] = {}, previous_end[64] = {};
            for (int64_t i = 0; i < L; ++i) {
              const auto w = axis_window(p, i);
              const int64_t len = group_length(L, d, w.group);
              SCOPED_TRACE(testing::Message() << "L=" << L << " K=" << K << " d=" << d
                                              << " s=" << s << " causal=" << causal << " i=" << i);
              ASSERT_GE(w.start, 0);
              ASSERT_LE(w.end, len);
              if (causal) {
                ASSERT_EQ(w.end, i / d + 1);
                ASSERT_LE(w.end - w.start, K);
                ASSERT_GE(w.end - w.start, 1);
              } else {
                ASSERT_EQ(w.end - w.start, K);
              }
              if (causal || s == 1) {
                ASSERT_TRUE(axis_attends(p, i, i));
              }
              for (int64_t k = 0; k < L; ++k) {
                const bool inside = k % d == w.group && k / d >= w.start && k / d < w.end;
                ASSERT_EQ(axis_attends(p, i, k), inside);
              }
              if (i >= d) {
                ASSERT_GE(w.start, previous_start[w.group]);
                ASSERT_GE(w.end, previous_end[w.group]);
              }
              previous_start[w.group] = w.start;
              previous_end[w.group] = w.end;
            }
          }
}
