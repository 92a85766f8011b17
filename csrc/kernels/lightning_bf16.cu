// Instantiation unit: lightning-attention passes (D = E in {64, 128}) and decode, __nv_bfloat16.
// Torch-free.
#include "effattn/cuda/lightning_kernels.cuh"

namespace effattn {
namespace cuda {
namespace lightning {

EFFATTN_LIGHTNING_DEFINE_DTYPE(__nv_bfloat16)

}  // namespace lightning
}  // namespace cuda
}  // namespace effattn
