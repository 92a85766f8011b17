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
}

// `import effattn._C` loads this library; the static initialisers above register the ops.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
