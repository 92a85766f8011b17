// Host side of the CUDA lightning-attention launcher API (include/effattn/lightning_cuda.h):
// validation, the work plan (sequences -> segments -> CTAs), workspace layout, dtype dispatch
// and the order of the passes, and which implementation runs (v1 / v2 / v3). Torch-free.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "effattn/cuda/lightning_kernels.cuh"
#include "effattn/lightning_cuda.h"

namespace effattn {
namespace cuda {

namespace {

using lightning::kChunk;
using lightning::kSlice;
using lightning::PassArgs;

// Built-in defaults when neither the params nor the environment choose (EFFATTN_LIGHTNING_IMPL=v1
// brings back the previous pass kernel without a rebuild). H200, 2026-11-29: the v2 pass took
// B4 H32 N8192 D128 from 0.980 / 2.717 ms (v1) to 0.553 / 1.381 ms fwd / bwd; decode v2 measured
// 0.242 ms (2220 GB/s) against v1's 0.203 ms (2650 GB/s), so decode stays on v1.
// The v3 pass (sm_90a wgmma, D = E = 128) is the default wherever the device can run it (see
// pass_impl); v2 otherwise.
constexpr int kDefaultPassImpl = lightning::kPassV3;
constexpr int kDefaultDecodeImpl = lightning::kDecodeV1;

// "v1" / "v2" / "v3" (or "1".."3") -> number within [1, max]; 0 when unset or unknown.
int parse_impl(const char* env, int max) {
  if (env == nullptr) return 0;
  if (env[0] == 'v' || env[0] == 'V') ++env;
  const int n = std::atoi(env);
  return n >= 1 && n <= max ? n : 0;
}

// The environment is read once per process: a forward and its backward must agree.
int env_pass_impl() {
  static const int v = parse_impl(std::getenv("EFFATTN_LIGHTNING_IMPL"), lightning::kPassV3);
  return v;
}

int env_decode_impl() {
  static const int v = parse_impl(std::getenv("EFFATTN_LIGHTNING_DECODE_IMPL"), lightning::kDecodeV3);
  return v;
}

// Whether the current device grants the v2 pass its shared memory (224 KiB at D = 128: more than
// an A100's opt-in limit, for one).
bool v2_fits(int64_t d) {
  int device = 0, optin = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
    return false;
  }
  const int need = d == 64 ? lightning::PassV2Shape<64, true>::kBytes
                            : lightning::PassV2Shape<128, true>::kBytes;
  return optin >= need;
}

bool v3_usable(const LightningParams& p) {
  return p.dtype == LightningDType::kFloat16 ? lightning::DTypeKernels<__half>::v3_usable()
                                             : lightning::DTypeKernels<__nv_bfloat16>::v3_usable();
}

// Requested (params, else environment, else default) and then narrowed to what runs here:
// v3 needs D = 128 and an sm_90a device / build (else v2), v2 its shared memory (else v1).
int pass_impl(const LightningParams& p) {
  int impl = p.impl;
  if (impl < lightning::kPassV1 || impl > lightning::kPassV3) {
    const int env = env_pass_impl();
    impl = env != 0 ? env : kDefaultPassImpl;
  }
  if (impl == lightning::kPassV3 && (p.dim_k != 128 || p.dim_v != 128 || !v3_usable(p))) impl = lightning::kPassV2;
  return impl == lightning::kPassV2 && !v2_fits(p.dim_k) ? lightning::kPassV1 : impl;
}

int decode_impl(const LightningDecodeParams& p) {
  if (p.impl >= lightning::kDecodeV1 && p.impl <= lightning::kDecodeV3) return p.impl;
  const int env = env_decode_impl();
  return env != 0 ? env : kDefaultDecodeImpl;
}

// State columns per CTA: the v2 and v3 passes own all of them.
int64_t slices_of(const LightningParams& p) {
  return pass_impl(p) == lightning::kPassV1 ? p.dim_v / kSlice : 1;
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

bool strides_ok(const LightningStrides& s) {
  return s.batch % 8 == 0 && s.token % 8 == 0 && s.head % 8 == 0;
}

bool tensor_ok(const void* p, const LightningStrides& s) { return p != nullptr && aligned16(p) && strides_ok(s); }

// Work plan: seqs [S][4] = batch, first token, length, first item; items [I][2] = seq, segment.
struct Plan {
  std::vector<int64_t> seqs;
  std::vector<int32_t> items;
  int64_t seg_len = 0;
  bool split = false;
  int64_t num_items() const { return static_cast<int64_t>(items.size() / 2); }
};

int occupancy(const LightningParams& p) {
  const int d = static_cast<int>(p.dim_k), impl = pass_impl(p);
  return p.dtype == LightningDType::kFloat16 ? lightning::DTypeKernels<__half>::occupancy(d, impl)
                                             : lightning::DTypeKernels<__nv_bfloat16>::occupancy(d, impl);
}

Plan make_plan(const LightningParams& p) {
  Plan plan;
  const int64_t S = p.num_seqs;
  std::vector<int64_t> lengths(S);
  int64_t total_chunks = 0, max_len = 0;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t len = p.cu_seqlens_host ? p.cu_seqlens_host[s + 1] - p.cu_seqlens_host[s] : p.tokens;
    lengths[s] = len;
    total_chunks += (len + kChunk - 1) / kChunk;
    max_len = std::max(max_len, len);
  }
  const int64_t slices = slices_of(p);
  int64_t seg_chunks = p.segment_chunks;
  if (seg_chunks <= 0) {
    int device = 0, sms = 132;
    if (cudaGetDevice(&device) == cudaSuccess) {
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    }
    const int64_t target = static_cast<int64_t>(sms) * occupancy(p);  // resident CTAs
    const int64_t per_unit = std::max<int64_t>(1, p.heads * slices);  // CTAs per segment
    if (S * per_unit * 4 >= target * 3) {
      seg_chunks = 0;  // the sequences alone fill the GPU: no split
    } else {
      const int64_t units = std::max<int64_t>(1, target / per_unit);  // segments wanted in all
      seg_chunks = std::max<int64_t>(4, (total_chunks + units - 1) / units);
    }
  }
  const int64_t max_chunks = std::max<int64_t>(1, (max_len + kChunk - 1) / kChunk);
  if (seg_chunks <= 0 || seg_chunks >= max_chunks) seg_chunks = max_chunks;
  plan.seg_len = seg_chunks * kChunk;
  plan.seqs.resize(4 * S);
  for (int64_t s = 0; s < S; ++s) {
    const int64_t len = lengths[s];
    const int64_t nseg = len > 0 ? (len + plan.seg_len - 1) / plan.seg_len : 1;
    plan.seqs[4 * s + 0] = p.cu_seqlens_host ? 0 : s;
    plan.seqs[4 * s + 1] = p.cu_seqlens_host ? p.cu_seqlens_host[s] : 0;
    plan.seqs[4 * s + 2] = len;
    plan.seqs[4 * s + 3] = plan.num_items();
    if (nseg > 1) plan.split = true;
    for (int64_t j = 0; j < nseg; ++j) {
      plan.items.push_back(static_cast<int32_t>(s));
      plan.items.push_back(static_cast<int32_t>(j));
    }
  }
  return plan;
}

size_t round16(size_t x) { return (x + 15) / 16 * 16; }

struct WorkspaceLayout {
  size_t seqs = 0, items = 0, slots = 0, total = 0;
};

WorkspaceLayout layout_of(const LightningParams& p, const Plan& plan) {
  WorkspaceLayout w;
  w.seqs = 0;
  w.items = round16(plan.seqs.size() * sizeof(int64_t));
  w.slots = w.items + round16(plan.items.size() * sizeof(int32_t));
  w.total = w.slots;
  if (plan.split) {
    w.total += static_cast<size_t>(plan.num_items()) * p.heads * p.dim_k * p.dim_v * sizeof(float);
  }
  return w;
}

cudaError_t run_pass(const LightningParams& p, bool out, const PassArgs& a, int64_t items,
                     cudaStream_t s) {
  const int d = static_cast<int>(p.dim_k), impl = pass_impl(p);
  return p.dtype == LightningDType::kFloat16
             ? lightning::DTypeKernels<__half>::pass(d, out, impl, a, items, s)
             : lightning::DTypeKernels<__nv_bfloat16>::pass(d, out, impl, a, items, s);
}

// Uploads the plan; returns device pointers of its arrays and the slots (null when unsplit).
struct Uploaded {
  const int64_t* seqs = nullptr;
  const int32_t* items = nullptr;
  float* slots = nullptr;
};

cudaError_t upload(const LightningParams& p, const Plan& plan, Uploaded* up, cudaStream_t stream) {
  const WorkspaceLayout w = layout_of(p, plan);
  if (p.workspace == nullptr || p.workspace_bytes < w.total) return cudaErrorInvalidValue;
  std::vector<unsigned char> host(w.slots, 0);
  std::copy(reinterpret_cast<const unsigned char*>(plan.seqs.data()),
            reinterpret_cast<const unsigned char*>(plan.seqs.data() + plan.seqs.size()),
            host.begin() + w.seqs);
  std::copy(reinterpret_cast<const unsigned char*>(plan.items.data()),
            reinterpret_cast<const unsigned char*>(plan.items.data() + plan.items.size()),
            host.begin() + w.items);
  // Pageable source: the call returns once the bytes are staged, so `host` may go.
  cudaError_t err = cudaMemcpyAsync(p.workspace, host.data(), host.size(), cudaMemcpyHostToDevice, stream);
  if (err != cudaSuccess) return err;
  unsigned char* base = static_cast<unsigned char*>(p.workspace);
  up->seqs = reinterpret_cast<const int64_t*>(base + w.seqs);
  up->items = reinterpret_cast<const int32_t*>(base + w.items);
  up->slots = plan.split ? reinterpret_cast<float*>(base + w.slots) : nullptr;
  return cudaSuccess;
}

struct StateView {
  const float* ptr = nullptr;
  bool transposed = false;
};

// One pass (optionally split into segments): local states, scan, then the output pass.
cudaError_t pass_with_segments(const LightningParams& p, const Plan& plan, const Uploaded& up,
                               PassArgs a, StateView init, cudaStream_t stream) {
  const int64_t de = p.dim_k * p.dim_v;
  a.heads = static_cast<int>(p.heads);
  a.slices = static_cast<int>(slices_of(p));
  a.seqs = up.seqs;
  a.items = up.items;
  a.seg_len = plan.seg_len;
  a.init = init.ptr;
  a.init_seq = p.heads * de;
  a.init_head = de;
  a.init_row = init.transposed ? 1 : p.dim_v;
  a.init_col = init.transposed ? p.dim_v : 1;
  cudaError_t err;
  if (plan.split) {
    PassArgs local = a;
    local.slots = up.slots;
    local.init = nullptr;
    local.final_state = nullptr;
    if ((err = run_pass(p, false, local, plan.num_items(), stream)) != cudaSuccess) return err;
    lightning::ScanArgs sa;
    sa.slope = p.slope;
    sa.seqs = up.seqs;
    sa.heads = a.heads;
    sa.dim_k = static_cast<int>(p.dim_k);
    sa.dim_v = static_cast<int>(p.dim_v);
    sa.seg_len = plan.seg_len;
    sa.init_shift = a.init_shift;
    sa.slots = up.slots;
    sa.init = init.ptr;
    sa.init_seq = a.init_seq;
    sa.init_head = a.init_head;
    sa.init_row = a.init_row;
    sa.init_col = a.init_col;
    const dim3 grid(static_cast<unsigned>((de / 4 + 255) / 256), static_cast<unsigned>(p.heads),
                    static_cast<unsigned>(p.num_seqs));
    lightning::lightning_scan_kernel<256><<<grid, 256, 0, stream>>>(sa);
    if ((err = cudaGetLastError()) != cudaSuccess) return err;
    a.slots = up.slots;
  } else {
    a.slots = nullptr;
  }
  return run_pass(p, true, a, plan.num_items(), stream);
}

}  // namespace

const char* lightning_cuda_unsupported_reason(const LightningParams& p, bool backward) {
  if (p.dtype != LightningDType::kFloat16 && p.dtype != LightningDType::kBFloat16) {
    return "dtype must be float16 or bfloat16";
  }
  if (p.dim_k != p.dim_v || (p.dim_k != 64 && p.dim_k != 128)) {
    return "head dims must satisfy D == E in {64, 128} (other head dims: use the CPU op)";
  }
  if (p.heads < 1 || p.batch < 0 || p.tokens < 0 || p.num_seqs < 0) return "bad sizes";
  if (p.cu_seqlens_host != nullptr && p.batch != 1) return "cu_seqlens needs batch == 1";
  if (p.num_seqs > INT32_MAX) return "too many sequences";
  if (p.slope == nullptr) return "slope is required";
  const float* states[] = {p.initial_state, p.final_state, p.d_final_state, p.d_initial_state};
  for (const float* st : states) {
    if (st != nullptr && reinterpret_cast<uintptr_t>(st) % 8 != 0) return "states must be 8-byte aligned";
  }
  // Grid: items * heads * slices CTAs in one dimension; items <= num_seqs + N / 64.
  const int64_t max_items = p.num_seqs + p.tokens / kChunk + 1;
  if (max_items * p.heads * (p.dim_v / kSlice) >= (int64_t(1) << 31)) return "problem too large for one grid";
  if (p.tokens == 0 || p.batch == 0) return nullptr;  // nothing is read or written per token
  if (!tensor_ok(p.q, p.q_strides) || !tensor_ok(p.k, p.k_strides) || !tensor_ok(p.v, p.v_strides)) {
    return "q, k and v need 16-byte aligned data and batch/token/head strides that are multiples of 8";
  }
  if (!backward && !tensor_ok(p.o, p.o_strides)) {
    return "o needs 16-byte aligned data and batch/token/head strides that are multiples of 8";
  }
  if (backward && (!tensor_ok(p.dout, p.do_strides) || !tensor_ok(p.dq, p.dq_strides) ||
                   !tensor_ok(p.dk, p.dk_strides) || !tensor_ok(p.dv, p.dv_strides))) {
    return "dout, dq, dk and dv need 16-byte aligned data and batch/token/head strides that are multiples of 8";
  }
  return nullptr;
}

const char* lightning_decode_unsupported_reason(const LightningDecodeParams& p) {
  if (p.dtype != LightningDType::kFloat16 && p.dtype != LightningDType::kBFloat16) {
    return "dtype must be float16 or bfloat16";
  }
  if ((p.dim_k != 64 && p.dim_k != 128) || (p.dim_v != 64 && p.dim_v != 128)) {
    return "head dims D and E must be 64 or 128 (other head dims: use the CPU op)";
  }
  if (p.heads < 1 || p.batch < 0) return "bad sizes";
  if (p.batch * p.heads >= (int64_t(1) << 31)) return "too many (batch, head) pairs";
  if (p.slope == nullptr || (p.batch > 0 && (p.q == nullptr || p.k == nullptr || p.v == nullptr ||
                                             p.o == nullptr || p.state == nullptr))) {
    return "missing pointer";
  }
  if (reinterpret_cast<uintptr_t>(p.state) % 16 != 0) return "state must be 16-byte aligned";
  return nullptr;
}

size_t lightning_workspace_bytes(const LightningParams& p) {
  if (lightning_cuda_unsupported_reason(p, false) != nullptr &&
      lightning_cuda_unsupported_reason(p, true) != nullptr) {
    return 0;
  }
  return layout_of(p, make_plan(p)).total;
}

cudaError_t lightning_forward(const LightningParams& p, cudaStream_t stream) {
  if (lightning_cuda_unsupported_reason(p, false) != nullptr) return cudaErrorInvalidValue;
  if (p.num_seqs == 0) return cudaSuccess;
  const Plan plan = make_plan(p);
  Uploaded up;
  cudaError_t err = upload(p, plan, &up, stream);
  if (err != cudaSuccess) return err;
  PassArgs a{};
  a.q = p.q;
  a.k = p.k;
  a.v = p.v;
  a.o = p.o;
  a.qs = p.q_strides;
  a.ks = p.k_strides;
  a.vs = p.v_strides;
  a.os = p.o_strides;
  a.slope = p.slope;
  a.scale_qk = p.scale;
  a.scale_state = p.scale;
  a.kv_scale = 1.0f;
  a.reverse = 0;
  a.final_state = p.final_state;
  a.final_extra_decay = 0;
  return pass_with_segments(p, plan, up, a, {p.initial_state, false}, stream);
}

cudaError_t lightning_backward(const LightningParams& p, cudaStream_t stream) {
  if (lightning_cuda_unsupported_reason(p, true) != nullptr) return cudaErrorInvalidValue;
  if (p.num_seqs == 0) return cudaSuccess;
  const Plan plan = make_plan(p);
  Uploaded up;
  cudaError_t err = upload(p, plan, &up, stream);
  if (err != cudaSuccess) return err;
  // dq: forward direction over (q' = dO, k' = V, v' = K) with state S^T:
  //   dq_t = scale (sum_{u<=t} lambda^{t-u} (do_t . v_u) k_u + lambda^{..} do_t S0^T ...).
  {
    PassArgs a{};
    a.q = p.dout;
    a.qs = p.do_strides;
    a.k = p.v;
    a.ks = p.v_strides;
    a.v = p.k;
    a.vs = p.k_strides;
    a.o = p.dq;
    a.os = p.dq_strides;
    a.slope = p.slope;
    a.scale_qk = p.scale;
    a.scale_state = p.scale;
    a.kv_scale = 1.0f;
    a.reverse = 0;
    if ((err = pass_with_segments(p, plan, up, a, {p.initial_state, true}, stream)) != cudaSuccess) return err;
  }
  // dk: reversed, (q' = V, k' = dO, v' = Q), state G^T with G = dL/dS accumulating scale q^T do.
  {
    PassArgs a{};
    a.q = p.v;
    a.qs = p.v_strides;
    a.k = p.dout;
    a.ks = p.do_strides;
    a.v = p.q;
    a.vs = p.q_strides;
    a.o = p.dk;
    a.os = p.dk_strides;
    a.slope = p.slope;
    a.scale_qk = p.scale;
    a.scale_state = 1.0f;
    a.kv_scale = p.scale;
    a.reverse = 1;
    a.init_shift = 1;  // G at the last token = dS_final + scale q^T do (no decay in between)
    if ((err = pass_with_segments(p, plan, up, a, {p.d_final_state, true}, stream)) != cudaSuccess) return err;
  }
  // dv: reversed, (q' = K, k' = Q, v' = dO), state G; its final state times lambda is dS0.
  {
    PassArgs a{};
    a.q = p.k;
    a.qs = p.k_strides;
    a.k = p.q;
    a.ks = p.q_strides;
    a.v = p.dout;
    a.vs = p.do_strides;
    a.o = p.dv;
    a.os = p.dv_strides;
    a.slope = p.slope;
    a.scale_qk = p.scale;
    a.scale_state = 1.0f;
    a.kv_scale = p.scale;
    a.reverse = 1;
    a.init_shift = 1;
    a.final_state = p.d_initial_state;
    a.final_extra_decay = 1;
    if ((err = pass_with_segments(p, plan, up, a, {p.d_final_state, false}, stream)) != cudaSuccess) return err;
  }
  return cudaSuccess;
}

cudaError_t lightning_decode(const LightningDecodeParams& p, cudaStream_t stream) {
  if (lightning_decode_unsupported_reason(p) != nullptr) return cudaErrorInvalidValue;
  const int impl = decode_impl(p);
  return p.dtype == LightningDType::kFloat16 ? lightning::DTypeKernels<__half>::decode(p, impl, stream)
                                             : lightning::DTypeKernels<__nv_bfloat16>::decode(p, impl, stream);
}

}  // namespace cuda
}  // namespace effattn
