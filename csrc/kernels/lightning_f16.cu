// Instantiation unit: lightning-attention passes (D = E in {64, 128}) and decode, __half.
// Torch-free.
#include "effattn/cuda/lightning_kernels.cuh"

namespace effattn {
namespace cuda {
namespace lightning {

EFFATTN_LIGHTNING_DEFINE_DTYPE(__half)

}  // namespace lightning
}  // namespace cuda
}  // namespace effattn
