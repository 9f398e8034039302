// Per-block neuron parameters of the CPU LIF kernels: neurons are processed in blocks of kBlock, each block's
// tau and v_threshold loaded once into a small local array.
#pragma once

#include <cstdint>

#include "../lif.h"
#include "cpu_cast.h"

namespace ndsnn {
namespace cpu {

constexpr int64_t kBlocksPerTask = 4;

template <typename T>
struct BlockParams {
  T tau[kBlock];
  T v_threshold[kBlock];
};

template <typename T>
inline void load_block_params(BlockParams<T>& out, const ChannelParam<T>& tau, const ChannelParam<T>& v_threshold,
                              const LifLayout& layout, int64_t first, int64_t count) {
  for (int64_t j = 0; j < count; ++j) {
    const int64_t channel = ((first + j) / layout.inner) % layout.channels;
    out.tau[j] = tau.at(channel);
    out.v_threshold[j] = v_threshold.at(channel);
  }
}

}  // namespace cpu
}  // namespace ndsnn
