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

// The channel is counted forward from the block's first neuron (one division per block, not per neuron: 64-bit
// divisions per neuron cost as much as the LIF arithmetic); parameters that are not per channel are copied.
template <typename T>
inline void load_block_params(BlockParams<T>& out, const ChannelParam<T>& tau, const ChannelParam<T>& v_threshold,
                              const LifLayout& layout, int64_t first, int64_t count) {
  if (!tau.per_channel && !v_threshold.per_channel) {
    const T tau_value = tau.at(0);
    const T threshold_value = v_threshold.at(0);
    for (int64_t j = 0; j < count; ++j) {
      out.tau[j] = tau_value;
      out.v_threshold[j] = threshold_value;
    }
    return;
  }
  int64_t channel = (first / layout.inner) % layout.channels;
  int64_t position = first % layout.inner;
  for (int64_t j = 0; j < count; ++j) {
    out.tau[j] = tau.at(channel);
    out.v_threshold[j] = v_threshold.at(channel);
    if (++position == layout.inner) {
      position = 0;
      if (++channel == layout.channels) channel = 0;
    }
  }
}

}  // namespace cpu
}  // namespace ndsnn
