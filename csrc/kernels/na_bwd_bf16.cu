// Instantiation unit: NA backward, __nv_bfloat16, head dims 32 / 64 / 128 (torch-free).
#include "effattn/cuda/na_launch.cuh"

namespace effattn {
namespace cuda {

template cudaError_t launch_na_backward<__nv_bfloat16, 32>(const NaParams&, cudaStream_t);
template cudaError_t launch_na_backward<__nv_bfloat16, 64>(const NaParams&, cudaStream_t);
template cudaError_t launch_na_backward<__nv_bfloat16, 128>(const NaParams&, cudaStream_t);

}  // namespace cuda
}  // namespace effattn
