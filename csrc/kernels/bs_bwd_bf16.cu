// Instantiation unit: block-sparse backward, __nv_bfloat16, head dims 32 / 64 / 128 (torch-free).
#include "effattn/cuda/bs_launch.cuh"

namespace effattn {
namespace cuda {

template cudaError_t launch_bs_backward<__nv_bfloat16, 32>(const BlockSparseParams&, cudaStream_t);
template cudaError_t launch_bs_backward<__nv_bfloat16, 64>(const BlockSparseParams&, cudaStream_t);
template cudaError_t launch_bs_backward<__nv_bfloat16, 128>(const BlockSparseParams&, cudaStream_t);

}  // namespace cuda
}  // namespace effattn
