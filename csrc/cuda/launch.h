// Launch geometry shared by the CUDA kernels: grid-stride loops over at most 32 blocks per SM.
#pragma once

#include <algorithm>
#include <cstdint>

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

namespace ndsnn {

constexpr int kThreads = 256;

// Blocks of kThreads for `elements` independent work items, capped at 32 per SM of the current device.
inline int64_t grid_for(int64_t elements) {
  int device = 0;
  int sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t max_blocks = static_cast<int64_t>(sms) * 32;
  return std::max<int64_t>(1, std::min<int64_t>((elements + kThreads - 1) / kThreads, max_blocks));
}

}  // namespace ndsnn
