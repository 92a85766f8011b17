// Instantiation unit: NA forward, __half, head dims 32 / 64 / 128 (torch-free).
#include "effattn/cuda/na_launch.cuh"

namespace effattn {
namespace cuda {

template cudaError_t launch_na_forward<__half, 32>(const NaParams&, cudaStream_t);
template cudaError_t launch_na_forward<__half, 64>(const NaParams&, cudaStream_t);
template cudaError_t launch_na_forward<__half, 128>(const NaParams&, cudaStream_t);

}  // namespace cuda
}  // namespace effattn
