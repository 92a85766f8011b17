// The one TORCH_LIBRARY(effattn, m): every operator schema of the extension lives here.
// Implementations are registered per dispatch key in csrc/ops/ and csrc/cpu/; fake
// kernels and autograd formulas are registered from python/effattn/ops.py.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(effattn, m) {
  // Neighborhood attention, rank 1..3. `*_forward` also returns the log-sum-exp of each
  // query's scores (fp32, fp64 for fp64 inputs); `*_backward` accepts an optional
  // gradient of that LSE so that gradients through it are exact.
  for (const char* rank : {"1", "2", "3"}) {
    const std::string na = std::string("na") + rank + "d";
    const std::string common =
        "int[] kernel_size, int[] dilation, int[] stride, bool[] is_causal, float? scale";
    m.def((na + "(Tensor q, Tensor k, Tensor v, " + common + ") -> Tensor").c_str());
    m.def((na + "_forward(Tensor q, Tensor k, Tensor v, " + common + ") -> (Tensor, Tensor)").c_str());
    m.def((na + "_backward(Tensor grad_out, Tensor? grad_lse, Tensor q, Tensor k, Tensor v, "
                "Tensor out, Tensor lse, " + common + ") -> (Tensor, Tensor, Tensor)").c_str());
  }

  // ---- Lightning attention (DESIGN.md §7) ------------------------------------------------
  // q, k [B, N, H, D], v [B, N, H, E], slope [H] (decay exp(-slope), slope >= 0), states
  // [num_seqs, H, D, E] float32 (float64 for float64 inputs); with cu_seqlens (int32/int64
  // [num_seqs + 1]) B == 1 and each packed sequence starts from its own initial state.
  // `lightning_attn` returns (out, final_state), final_state None unless output_final_state.
  // It carries the autograd formula itself (registered from Python): the optional second
  // output passes opcheck and torch.compile, so no composite wrapper is needed.
  m.def("lightning_attn(Tensor q, Tensor k, Tensor v, Tensor slope, float scale, "
        "Tensor? initial_state, bool output_final_state, Tensor? cu_seqlens) -> (Tensor, Tensor?)");
  // Returns (dq, dk, dv, d_initial_state, d_slope): d_initial_state is None when
  // initial_state is None, d_slope is None unless compute_slope_grad.
  m.def("lightning_attn_backward(Tensor grad_out, Tensor? grad_final_state, Tensor q, Tensor k, "
        "Tensor v, Tensor slope, float scale, Tensor? initial_state, Tensor? cu_seqlens, "
        "bool compute_slope_grad) -> (Tensor, Tensor, Tensor, Tensor?, Tensor?)");
  // One token per sequence: q, k [B, H, D] or [B, 1, H, D], v [B, H, E] or [B, 1, H, E];
  // state [B, H, D, E] ← exp(-slope) state + kᵀv in place; returns scale · q state.
  m.def("lightning_decode(Tensor q, Tensor k, Tensor v, Tensor slope, Tensor(a!) state, "
        "float scale) -> Tensor");

  // ---- Block-sparse attention (DESIGN.md §5) -----------------------------------------------
  // q [B, Nq, H, D], k/v [B, Nk, H_kv, D] (H % H_kv == 0). Query block m (rows
  // [m·block_q, (m+1)·block_q)) attends to the key blocks kv_indices[b, h, m, :kv_num_blocks[b, h, m]]
  // (int32 maps [B|1, H|1, Mq] and [B|1, H|1, Mq, max_blocks], FlexAttention's convention,
  // broadcast over batch/head; entries past kv_num_blocks are ignored). block_q, block_k ∈
  // {64, 128}. is_causal adds the element mask key ≤ query + (Nk − Nq) (bottom-right aligned,
  // FlashAttention's convention; top-left == bottom-right when Nq == Nk). Ragged tails are
  // masked; a query with no live key gets out 0 and LSE −inf. Variable-length packed
  // batches: pass cu_seqlens_q and cu_seqlens_k (int32/int64 [num_seqs + 1]) with B == 1; the
  // maps then index sequences ([num_seqs|1, H|1, Mq ≥ max blocks per sequence, max_blocks]),
  // block indices are local to each sequence and causality is aligned per sequence.
  // `*_forward` also returns the LSE (fp32, fp64 for fp64 inputs); `*_backward` accepts an
  // optional gradient of that LSE.
  const std::string bs_args =
      "Tensor q, Tensor k, Tensor v, Tensor kv_num_blocks, Tensor kv_indices, int block_q, "
      "int block_k, bool is_causal, float? scale, Tensor? cu_seqlens_q=None, "
      "Tensor? cu_seqlens_k=None";
  m.def(("block_sparse_attn(" + bs_args + ") -> Tensor").c_str());
  m.def(("block_sparse_attn_forward(" + bs_args + ") -> (Tensor out, Tensor lse)").c_str());
  m.def("block_sparse_attn_backward(Tensor grad_out, Tensor? grad_lse, Tensor q, Tensor k, "
        "Tensor v, Tensor out, Tensor lse, Tensor kv_num_blocks, Tensor kv_indices, int block_q, "
        "int block_k, bool is_causal, float? scale, Tensor? cu_seqlens_q=None, "
        "Tensor? cu_seqlens_k=None) -> (Tensor, Tensor, Tensor)");

  // ---- Quantized QK estimation (DESIGN.md §6) ---------------------------------------------
  // x [B, N, H, D] → (int8 x − mean, fp32 scale [B, ceil(N / quant_block), H], fp32 mean
  // [B, H, D]); symmetric, scale = amax / (2^(bits−1) − 1).
  m.def("smooth_quantize(Tensor x, int quant_block, int bits) -> (Tensor, Tensor, Tensor)");
  // Block map (kv_num_blocks int32 [B, H, Mq], kv_indices int32 [B, H, Mq, Mk]) of the key
  // blocks whose estimated relative score exp(S̃ − m)/l reaches exp(log_threshold[h]) for some
  // entry, m and l being exact over the always-kept keys (sink, local window, diagonal block).
  m.def("estimate_block_mask(Tensor q, Tensor k, Tensor q_quant, Tensor q_scale, Tensor q_mean, "
        "Tensor k_quant, Tensor k_scale, Tensor k_mean, Tensor log_threshold, int block_q, "
        "int block_k, int quant_block, int sink_tokens, int local_tokens, bool is_causal, "
        "float? scale) -> (Tensor, Tensor)");
}

// `import effattn._C` loads this library; the static initialisers above register the ops.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
