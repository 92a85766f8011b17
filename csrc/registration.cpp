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
}

// `import effattn._C` loads this library; the static initialisers above register the ops.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
