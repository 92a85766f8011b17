// Host-side checks of the CUDA estimation pre-passes (no GPU needed): the index math of the
// smooth_quantize kernels (csrc/kernels/estimate_quant_tiling.h) and of pass 2
// (estimate_common.cuh: stats_chunks, row_keep), by brute force over small odd shapes, and the
// division-free rounding of quantize_vec (estimate_quant.cu) against the exact quotient.
//
//   g++ -std=c++17 -O2 -Wall -Wextra -ffp-contract=off -Iinclude -Icsrc/kernels
//       -I/usr/local/cuda/include tests/cuda/estimate_prepass_check.cpp -o /tmp/prepass_check
//   /tmp/prepass_check          (prints a summary; exit status 1 on the first failure)
//
// -ffp-contract=off: the kernels' fp32 operations are single IEEE roundings (__fmul_rn,
// __fsub_rn, __fdiv_rn, __frcp_rn, rintf), which is what plain float code does on x86-64 SSE
// without contraction.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <vector>

#include "estimate_common.cuh"
#include "estimate_quant_tiling.h"

using namespace effattn::cuda;
using namespace effattn::cuda::est;

namespace {

int g_checks = 0;

#define CHECK(cond, ...)                                     \
  do {                                                       \
    ++g_checks;                                              \
    if (!(cond)) {                                           \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                     \
      std::fprintf(stderr, "\n");                            \
      std::exit(1);                                          \
    }                                                        \
  } while (0)

// ---- smooth_quantize: column sums ------------------------------------------------------
struct Shape {
  int64_t B, N, H, D;
  int elem_bytes;
  int64_t qb;
};

// Every partial sum [b, chunk, col] written by exactly one thread; the mean pass reads
// chunks [0, chunks) of every column. Returns the plan's chunk count.
int64_t check_column_sum_cover(const Shape& s, bool aligned) {
  const int64_t cols = s.H * s.D;
  const quant::SumPlan p = quant::plan_column_sums(s.N, cols, s.elem_bytes, aligned);
  CHECK(p.V == 1 || p.V == 16 / s.elem_bytes, "V %d", p.V);
  CHECK(p.tl.nv * p.V == cols, "nv %lld V %d cols %lld", (long long)p.tl.nv, p.V, (long long)cols);
  std::vector<int> hits(static_cast<size_t>(s.B * p.chunks * cols), 0);
  std::vector<int> token_hits(static_cast<size_t>(s.N), 0);
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t bx = 0; bx < p.groups * p.tl.tiles; ++bx)
      for (int tid = 0; tid < quant::kTileThreads; ++tid) {
        const int64_t tile = bx % p.tl.tiles, grp = bx / p.tl.tiles;
        const quant::ThreadSlot t = quant::thread_slot(p.tl, tile, tid);
        const int64_t chunk = grp * p.tl.R + t.r;
        if (!t.live || chunk >= p.chunks) continue;
        const int64_t n0 = chunk * quant::kSumRows, n1 = std::min<int64_t>(n0 + quant::kSumRows, s.N);
        CHECK(n0 < n1, "empty chunk %lld", (long long)chunk);
        if (b == 0 && t.v == 0)
          for (int64_t n = n0; n < n1; ++n) ++token_hits[n];
        for (int e = 0; e < p.V; ++e) {
          const int64_t col = t.v * p.V + e;
          CHECK(col < cols, "col %lld", (long long)col);
          ++hits[(b * p.chunks + chunk) * cols + col];
        }
      }
  for (size_t i = 0; i < hits.size(); ++i) CHECK(hits[i] == 1, "partial %zu written %d times", i, hits[i]);
  for (int64_t n = 0; n < s.N; ++n) CHECK(token_hits[n] == 1, "token %lld summed %d times", (long long)n, token_hits[n]);
  return p.chunks;
}

// The kernels' order: per chunk the tokens in increasing order (one fp64 chain per column),
// then mean_kernel's slices (chunks i, i + 32, ...) and the slices in order.
float emulate_mean(const std::vector<float>& col, int64_t chunks) {
  const int64_t N = static_cast<int64_t>(col.size());
  std::vector<double> partial(static_cast<size_t>(chunks));
  for (int64_t c = 0; c < chunks; ++c) {
    double acc = 0;
    for (int64_t n = c * quant::kSumRows; n < std::min<int64_t>((c + 1) * quant::kSumRows, N); ++n) acc += col[n];
    partial[c] = acc;
  }
  double part[quant::kMeanSlices];
  for (int sl = 0; sl < quant::kMeanSlices; ++sl) {
    double s = 0;
    for (int64_t c = sl; c < chunks; c += quant::kMeanSlices) s += partial[c];
    part[sl] = s;
  }
  double total = 0;
  for (int i = 0; i < quant::kMeanSlices; ++i) total += part[i];
  return static_cast<float>(total / static_cast<double>(N));
}

void check_column_sums() {
  const Shape shapes[] = {
      {2, 77, 3, 32, 2, 1},   {2, 77, 3, 32, 4, 64},  {1, 1000, 4, 128, 2, 1}, {1, 1000, 4, 128, 2, 128},
      {2, 301, 2, 48, 8, 5},  {1, 1, 2, 64, 4, 1},    {1, 513, 8, 64, 2, 1},   {3, 129, 5, 16, 2, 3},
      {1, 4099, 32, 128, 2, 1}, {1, 300, 3, 5, 2, 2}, {2, 255, 65, 128, 2, 1}, {1, 130, 1, 8, 2, 1},
      {1, 2, 1, 1, 4, 1},     {1, 1000, 3, 96, 4, 7}, {1, 2049, 2, 256, 2, 1}, {1, 70, 7, 64, 8, 1},
  };
  int n = 0;
  for (const Shape& s : shapes)
    for (bool aligned : {true, false}) {
      const int64_t c1 = check_column_sum_cover(s, aligned);
      CHECK(c1 == quant::sum_chunks(s.N), "chunks depend on alignment / V");
      ++n;
    }
  // The mean is a function of the column's values and N only (not of V, the tiling or the
  // launch), and within an ulp of the exact mean.
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.f, 3.f);
  int max_ulps = 0;
  for (int64_t N : {1, 2, 77, 128, 129, 1000, 4099, 65536}) {
    for (int rep = 0; rep < 4; ++rep) {
      std::vector<float> col(static_cast<size_t>(N));
      const float offset = rep * 7.5f;
      for (auto& v : col) v = static_cast<float>(static_cast<double>(nd(rng)) + offset);
      const float m = emulate_mean(col, quant::sum_chunks(N));
      long double exact = 0;
      for (float v : col) exact += v;
      exact /= static_cast<long double>(N);
      const float ref = static_cast<float>(exact);
      int ulps = 0;
      for (float x = std::min(m, ref); x < std::max(m, ref); x = std::nextafter(x, INFINITY)) ++ulps;
      max_ulps = std::max(max_ulps, ulps);
      CHECK(ulps <= 1, "N %lld: mean %.9g vs exact %.9g", (long long)N, m, ref);
    }
  }
  std::printf("column sums: %d shape/alignment cases covered exactly once; mean within %d ulp of exact\n", n,
              max_ulps);
}

// ---- smooth_quantize: quantization cover ----------------------------------------------------
void check_quantize_cover(const Shape& s, bool aligned, uintptr_t xq_addr, int sms) {
  const quant::QuantPlan p =
      quant::plan_quantize(s.B, s.N, s.H, s.D, s.qb, s.elem_bytes, aligned, xq_addr, sms);
  const int V = 16 / s.elem_bytes;
  if (!p.vec) {  // quantize_rows_kernel: any shape (unchanged)
    const int64_t W = s.D / V;
    CHECK(!aligned || s.D % V != 0 || W > 32 || (W & (W - 1)) != 0 || W < 1 || xq_addr % (p.kVecs * V) != 0,
          "vector path refused for D %lld", (long long)s.D);
    return;
  }
  const int E = p.kVecs * V;
  CHECK(s.D % E == 0 && s.D / E == p.kLanes, "D %lld E %d lanes %d", (long long)s.D, E, p.kLanes);
  CHECK(p.kLanes >= 1 && p.kLanes <= 32 && (p.kLanes & (p.kLanes - 1)) == 0, "lanes %d", p.kLanes);
  CHECK(xq_addr % E == 0, "x_quant stores of %d bytes misaligned", E);
  const int64_t cols = s.H * s.D;
  std::vector<int> qhits(static_cast<size_t>(s.B * s.N * cols), 0), shits(static_cast<size_t>(s.B * p.blocks * s.H), 0);
  const int64_t step = p.groups * p.tl.R;
  for (int64_t b = 0; b < s.B; ++b)
    for (int64_t bx = 0; bx < p.groups * p.tl.tiles; ++bx) {
      const int64_t tile = bx % p.tl.tiles, grp = bx / p.tl.tiles;
      quant::ThreadSlot t[quant::kTileThreads];
      for (int tid = 0; tid < quant::kTileThreads; ++tid) t[tid] = quant::thread_slot(p.tl, tile, tid);
      // Lane groups: the kLanes aligned lanes of a warp share row slot, liveness and head, and
      // a head's threads (for one row slot) are exactly one such group.
      for (int tid = 0; tid < quant::kTileThreads; ++tid) {
        const int g0 = tid & ~(p.kLanes - 1);
        CHECK(t[tid].live == t[g0].live, "group liveness differs");
        if (!t[tid].live) continue;
        CHECK(t[tid].r == t[g0].r && t[tid].v / p.kLanes == t[g0].v / p.kLanes, "group spans two heads");
        CHECK((t[tid].v * E) / s.D == t[tid].v / p.kLanes && (t[tid].v * E + E - 1) / s.D == t[tid].v / p.kLanes,
              "thread's elements leave its head");
        CHECK((t[tid].v % p.kLanes) == (tid & (p.kLanes - 1)), "lane order within the group");
      }
      for (int64_t m0 = grp * p.tl.R; m0 < p.blocks; m0 += step)  // the CTA-uniform loop
        for (int tid = 0; tid < quant::kTileThreads; ++tid) {
          const int64_t m = m0 + t[tid].r;
          if (!t[tid].live || m >= p.blocks) continue;
          const int64_t h = t[tid].v / p.kLanes;
          if ((tid & (p.kLanes - 1)) == 0) ++shits[(b * p.blocks + m) * s.H + h];
          for (int64_t tok = m * s.qb; tok < std::min<int64_t>((m + 1) * s.qb, s.N); ++tok)
            for (int e = 0; e < E; ++e) ++qhits[(b * s.N + tok) * cols + t[tid].v * E + e];
        }
    }
  for (size_t i = 0; i < qhits.size(); ++i) CHECK(qhits[i] == 1, "x_quant %zu written %d times", i, qhits[i]);
  for (size_t i = 0; i < shits.size(); ++i) CHECK(shits[i] == 1, "scale %zu written %d times", i, shits[i]);
}

void check_quantize_cover_all() {
  const Shape shapes[] = {
      {2, 77, 3, 32, 2, 1},   {2, 77, 3, 32, 4, 64},  {1, 1000, 4, 128, 2, 1},  {1, 1000, 4, 128, 2, 128},
      {2, 301, 2, 48, 8, 5},  {1, 1, 2, 64, 4, 1},    {1, 513, 8, 64, 2, 1},    {3, 129, 5, 16, 2, 3},
      {1, 300, 3, 8, 2, 1},   {2, 255, 65, 128, 2, 1}, {1, 130, 1, 8, 2, 7},    {1, 97, 3, 256, 2, 1},
      {1, 97, 3, 2, 8, 1},    {1, 50, 9, 4, 4, 2},    {1, 33, 2, 512, 2, 1},    {1, 70, 7, 64, 8, 1},
      {2, 200, 5, 128, 4, 1}, {1, 61, 3, 32, 8, 61},  {1, 61, 3, 32, 8, 1000},  {1, 1025, 32, 128, 2, 1},
  };
  int vec = 0, rows = 0;
  for (const Shape& s : shapes)
    for (bool aligned : {true, false})
      for (uintptr_t xq : {uintptr_t(256), uintptr_t(8), uintptr_t(3)})
        for (int sms : {132, 3, 1}) {
          check_quantize_cover(s, aligned, xq, sms);
          const quant::QuantPlan p = quant::plan_quantize(s.B, s.N, s.H, s.D, s.qb, s.elem_bytes, aligned, xq, sms);
          (p.vec ? vec : rows) += 1;
        }
  std::printf("quantization: %d vector-path and %d row-path configurations; every int8 and scale written once\n",
              vec, rows);
}

// ---- smooth_quantize: division-free rounding ----------------------------------------------
float scale_of(float amax) {  // the CPU formula (amax / 127).clamp_min(1e-12), NaN kept
  if (amax != amax) return amax;
  const float s = amax / 127.f;
  return s != s ? s : std::fmax(s, 1e-12f);
}

int exact_q(float c, float s) {  // quantize_one
  float r = std::rint(c / s);
  r = std::fmin(std::fmax(r, -127.f), 127.f);
  return static_cast<int>(r);
}

constexpr float kRintMargin = 1.f / 16384.f;  // estimate_quant.cu
int fast_q(float c, float s, float rs, bool& took_fast) {  // quantize_vec, one value
  const float a = c * rs;
  const float r = std::rint(a);
  took_fast = std::fabs(a - r) < 0.5f - kRintMargin;
  return took_fast ? static_cast<int>(r) : exact_q(c, s);
}

void check_rounding() {
  std::mt19937_64 rng(7);
  int64_t n = 0, fast = 0;
  auto one = [&](float c, float amax) {
    const float s = scale_of(amax), rs = 1.f / s;  // __frcp_rn
    bool f = false;
    const int q = fast_q(c, s, rs, f);
    const int e = exact_q(c, s);
    CHECK(q == e, "c %.9g amax %.9g: fast %d exact %d", c, amax, q, e);
    if (f) CHECK(q >= -127 && q <= 127, "unclamped fast value %d", q);
    ++n;
    fast += f;
  };
  // Random amax over the whole exponent range, c in [-amax, amax].
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::uniform_int_distribution<int> ex(-140, 127);
  for (int i = 0; i < 2000000; ++i) {
    const float amax = std::ldexp(1.f + 0.5f * (u(rng) + 1.f), ex(rng) - 1);
    if (!std::isfinite(amax)) continue;
    const float c = std::fmax(-amax, std::fmin(amax, amax * u(rng)));
    one(c, amax);
    one(amax, amax);
    one(-amax, amax);
  }
  const int64_t random_n = n, random_slow = n - fast;
  // Around every half-integer step: c = (k + 1/2) s and its neighbours, for many scales.
  for (int i = 0; i < 3000; ++i) {
    const float amax = std::ldexp(1.f + 0.5f * (u(rng) + 1.f), ex(rng) - 1);
    if (!std::isfinite(amax)) continue;
    const float s = scale_of(amax);
    for (int k = -128; k <= 127; ++k) {
      float c = (static_cast<float>(k) + 0.5f) * s;
      for (int j = 0; j < 40; ++j) c = std::nextafter(c, -INFINITY);
      for (int j = 0; j < 81; ++j, c = std::nextafter(c, INFINITY))
        if (std::fabs(c) <= amax) one(c, amax);
    }
  }
  // Special values: zeros, subnormals, the clamp of tiny amax, inf and NaN.
  const float specials[] = {0.f, -0.f, FLT_TRUE_MIN, -FLT_TRUE_MIN, FLT_MIN, 1e-20f, 1e-10f, 1.27e-10f,
                            1.f, 127.f, 1e30f, FLT_MAX, INFINITY, -INFINITY, NAN};
  for (float amax : specials)
    for (float c : specials) {
      const float am = std::fabs(amax);
      if (am == am && c == c && std::fabs(c) > am) continue;  // |c| <= amax by construction
      const float s = scale_of(am);
      const float rs = 1.f / s;
      bool f = false;
      const int q = fast_q(c, s, rs, f);
      // NaN: the exact path's clamps give -127; both sides go through exact_q then.
      CHECK(q == exact_q(c, s), "special c %g amax %g", c, am);
      ++n;
    }
  std::printf("rounding: %lld values (%lld random: %.2e of them need the division; the rest near half-integers "
              "or special), all equal to rint(RN(c / s))\n",
              static_cast<long long>(n), static_cast<long long>(random_n),
              static_cast<double>(random_slow) / static_cast<double>(random_n));
}

// ---- Pass 2: kept keys and chunk lists --------------------------------------------------
bool kept_orig(const MapGeometry& g, int i, int c) {  // the CPU op's / the old kernel's test
  const int dist = g.causal ? i - c : std::abs(i - c);
  return i < g.n && c < g.n && (!g.causal || c <= i) &&
         (c < g.sink || dist < g.local || c / g.block_k == i / g.block_k);
}

std::vector<int> chunks_orig(const MapGeometry& g, int r0) {  // the old stats_kernel's loop
  std::vector<int> out;
  const int N = g.n;
  if (r0 >= N) return out;  // no such CTA
  const int r1 = r0 + 64 < N ? r0 + 64 : N;
  const int sink_keys = g.sink < (g.causal ? r1 : N) ? g.sink : (g.causal ? r1 : N);
  const int n_sink = (sink_keys + kChunkKeys - 1) / kChunkKeys;
  int lo_tok = g.local > 0 ? std::max(0, r0 - g.local + 1) : r0;
  lo_tok = std::min(lo_tok, (r0 / g.block_k) * g.block_k);
  int hi_tok = r1 - 1;
  if (!g.causal) {
    hi_tok = std::min(N - 1, ((r1 - 1) / g.block_k + 1) * g.block_k - 1);
    if (g.local > 0) hi_tok = std::max(hi_tok, std::min(N - 1, r1 - 1 + g.local - 1));
  }
  const int c0 = std::max(lo_tok / kChunkKeys, n_sink);
  const int n_iter = n_sink + std::max(0, hi_tok / kChunkKeys + 1 - c0);
  for (int it = 0; it < n_iter; ++it) out.push_back(it < n_sink ? it : c0 + (it - n_sink));
  return out;
}

void check_stats_geometry() {
  constexpr int kBlocks = 2, kRows = 64;  // estimate_stats.cu
  int64_t cases = 0, entries = 0, full_chunks = 0, warp_chunks = 0;
  for (int n : {1, 2, 63, 64, 65, 100, 127, 128, 129, 191, 255, 256, 300, 513, 700, 1000, 1025})
    for (int bk : {64, 128})
      for (bool causal : {true, false})
        for (int sink : {0, 1, 63, 64, 100, 1 << 20})
          for (int local : {0, 1, 63, 64, 96, 256, 1 << 20}) {
            MapGeometry g;
            g.n = n;
            g.block_q = 64;
            g.block_k = bk;
            g.sink = std::min(sink, n);  // make_args clamps to [0, n]
            g.local = std::min(local, n);
            g.causal = causal;
            g.mq = (n + 63) / 64;
            g.mk = (n + bk - 1) / bk;
            ++cases;
            const int chunks = (n + kChunkKeys - 1) / kChunkKeys;
            const int rows_end = ((n + kBlocks * kRows - 1) / (kBlocks * kRows)) * kBlocks * kRows;
            // Kept test: every row of every CTA (rows past N included), every key of every chunk.
            for (int i = 0; i < rows_end; ++i) {
              const RowKeep rk = row_keep(g, i);
              for (int c = 0; c < (chunks + 1) * kChunkKeys; ++c) {
                CHECK(row_keeps(rk, c) == kept_orig(g, i, c), "n %d bk %d causal %d sink %d local %d i %d c %d", n, bk,
                      causal, g.sink, g.local, i, c);
                ++entries;
              }
              for (int ch = 0; ch <= chunks; ++ch)
                if (row_keeps_chunk(rk, ch * kChunkKeys))
                  for (int c = ch * kChunkKeys; c < (ch + 1) * kChunkKeys; ++c)
                    CHECK(kept_orig(g, i, c), "full chunk %d of row %d has a dropped key %d", ch, i, c);
            }
            // Chunk lists: per CTA the union in increasing order; each block's visits are its old list.
            for (int cta_r0 = 0; cta_r0 < n; cta_r0 += kBlocks * kRows) {
              StatsChunks lists[kBlocks];
              std::vector<int> seen[kBlocks];
              for (int j = 0; j < kBlocks; ++j) {
                lists[j] = stats_chunks(g, cta_r0 + j * kRows);
                const StatsChunks mine = stats_chunks(g, cta_r0 + j * kRows);
                CHECK(mine.ns == lists[j].ns && mine.c0 == lists[j].c0 && mine.hi == lists[j].hi, "list");
              }
              int prev = -1;
              for (int cur = 0;;) {
                int x = kNoChunk;
                for (int j = 0; j < kBlocks; ++j) x = std::min(x, stats_next(lists[j], cur));
                if (x == kNoChunk) break;
                CHECK(x > prev && x < chunks, "union order / range: %d after %d (chunks %d)", x, prev, chunks);
                bool any = false;
                for (int j = 0; j < kBlocks; ++j)
                  if (stats_visits(lists[j], x)) {
                    seen[j].push_back(x);
                    any = true;
                  }
                CHECK(any, "chunk %d in the union but in no list", x);
                prev = x;
                cur = x + 1;
              }
              for (int j = 0; j < kBlocks; ++j) {
                const std::vector<int> want = chunks_orig(g, cta_r0 + j * kRows);
                CHECK(seen[j] == want, "n %d bk %d causal %d sink %d local %d block %d: %zu chunks vs %zu", n, bk,
                      causal, g.sink, g.local, cta_r0 + j * kRows, seen[j].size(), want.size());
                // Every kept key of the block's rows lies in a visited chunk; count full warp-chunks.
                for (int w = 0; w < 4; ++w)
                  for (int ch : want) {
                    bool full = true;
                    for (int r = 0; r < 16; ++r) full &= row_keeps_chunk(row_keep(g, cta_r0 + j * kRows + 16 * w + r), ch * kChunkKeys);
                    full_chunks += full;
                    ++warp_chunks;
                  }
                for (int i = cta_r0 + j * kRows; i < std::min(n, cta_r0 + (j + 1) * kRows); ++i)
                  for (int c = 0; c < n; ++c)
                    if (kept_orig(g, i, c)) {
                      bool in = false;
                      for (int ch : want) in |= ch == c / kChunkKeys;
                      CHECK(in, "row %d keeps key %d outside its chunks", i, c);
                    }
              }
            }
          }
  std::printf("pass 2 geometry: %lld geometries, %lld (row, key) kept tests equal; chunk lists equal the old "
              "kernel's; %.1f%% of warp-chunks skip the mask\n",
              static_cast<long long>(cases), static_cast<long long>(entries),
              100.0 * static_cast<double>(full_chunks) / static_cast<double>(warp_chunks));
}

// Pass 2's key-tile loads: thread tid's pieces (rows r0k + p * step, chunk ck) cover the tile
// once, and swz(r0k + p * step, ck) == swz(r0k, ck) + p * step * row bytes.
template <int D>
void check_stats_tile() {
  constexpr int kThreads = 256, kRB = 2 * D, kPieces = 64 * kRB / 16;
  constexpr int kPer = kPieces / kThreads, kStep = kThreads / (kRB / 16);
  std::map<std::pair<int, int>, int> hit;
  for (int tid = 0; tid < kThreads; ++tid) {
    const int r0k = tid / (kRB / 16), ck = tid % (kRB / 16);
    for (int p = 0; p < kPer; ++p) {
      const int r = r0k + p * kStep;
      CHECK(r < 64, "row %d", r);
      CHECK(est::swz<kRB>(r, ck) == est::swz<kRB>(r0k, ck) + static_cast<uint32_t>(p * kStep * kRB), "swizzle step D %d", D);
      ++hit[{r, ck}];
    }
  }
  CHECK(static_cast<int>(hit.size()) == kPieces, "D %d: %zu pieces", D, hit.size());
  for (const auto& kv : hit) CHECK(kv.second == 1, "piece loaded %d times", kv.second);
}

// key_prep's padded rows: the 8 lanes of each 16-byte shared-memory phase hit distinct bank groups.
template <int D>
void check_prep_banks() {
  constexpr int kRowBytes = 2 * D + 16;
  for (int p = 0; p < D / 8; ++p)
    for (int q = 0; q < 4; ++q) {
      int used = 0;
      for (int l = 8 * q; l < 8 * q + 8; ++l) {
        const int grp = ((l * kRowBytes + 16 * p) % 128) / 16;
        CHECK(!(used & (1 << grp)), "D %d: bank conflict", D);
        used |= 1 << grp;
      }
    }
}

}  // namespace

int main() {
  check_column_sums();
  check_quantize_cover_all();
  check_rounding();
  check_stats_geometry();
  check_stats_tile<32>();
  check_stats_tile<64>();
  check_stats_tile<128>();
  check_prep_banks<32>();
  check_prep_banks<64>();
  check_prep_banks<128>();
  std::printf("all %d checks passed\n", g_checks);
  return 0;
}
