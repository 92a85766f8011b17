// Instantiation unit: block-sparse backward, __half, head dims 32 / 64 / 128 (torch-free).
#include "effattn/cuda/bs_launch.cuh"

namespace effattn {
namespace cuda {

template cudaError_t launch_bs_backward<__half, 32>(const BlockSparseParams&, cudaStream_t);
template cudaError_t launch_bs_backward<__half, 64>(const BlockSparseParams&, cudaStream_t);
template cudaError_t launch_bs_backward<__half, 128>(const BlockSparseParams&, cudaStream_t);

}  // namespace cuda
}  // namespace effattn
