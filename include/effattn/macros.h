// Shared annotations for headers that compile both in host C++ and in CUDA.
#pragma once

#if defined(__CUDACC__)
#define EFFATTN_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define EFFATTN_HOST_DEVICE inline
#endif
