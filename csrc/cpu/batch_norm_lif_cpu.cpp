// Fused batch norm + multi-step LIF on the CPU (see ../batch_norm_lif.h for the math). Like the LIF kernel:
// neurons in blocks across threads, the time loop inside a block, per-neuron channel constants loaded once.
#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../batch_norm_lif.h"
#include "cpu_cast.h"

namespace ndsnn {
namespace {

using namespace cpu;

constexpr int64_t kBlocksPerTask = 4;

// The channel of each neuron of a block, counted forward from the first (one division per block, not per
// neuron: 64-bit divisions per neuron cost as much as the LIF arithmetic).
struct BlockChannels {
  int64_t channel[kBlock];
  void load(const BnLifLayout& layout, int64_t first, int64_t count) {
    int64_t c = (first / layout.inner) % layout.channels;
    int64_t position = first % layout.inner;
    for (int64_t j = 0; j < count; ++j) {
      channel[j] = c;
      if (++position == layout.inner) {
        position = 0;
        if (++c == layout.channels) c = 0;
      }
    }
  }
};

// scale = weight * invstd and shift = bias - mean * scale per channel, computed once per call.
template <typename math_t>
struct ChannelAffine {
  std::vector<math_t> scale;
  std::vector<math_t> shift;
  ChannelAffine(const BnAffine<math_t>& affine, int64_t channels) : scale(channels), shift(channels) {
    for (int64_t c = 0; c < channels; ++c) {
      scale[c] = affine.scale(c);
      shift[c] = affine.shift(c, scale[c]);
    }
  }
};

template <typename math_t>
struct BlockAffine {
  math_t scale[kBlock];
  math_t shift[kBlock];
  void load(const ChannelAffine<math_t>& affine, const BlockChannels& channels, int64_t count) {
    for (int64_t j = 0; j < count; ++j) {
      scale[j] = affine.scale[channels.channel[j]];
      shift[j] = affine.shift[channels.channel[j]];
    }
  }
};

// y = x * scale + shift (+ residual) for one block-step; `y` receives the values.
template <typename scalar_t>
inline void block_input(const Raw<scalar_t>* x, const Raw<scalar_t>* residual,
                        const BlockAffine<at::opmath_type<scalar_t>>& affine, at::opmath_type<scalar_t>* y,
                        int64_t count) {
  using math_t = at::opmath_type<scalar_t>;
  math_t x_buffer[kBlock];
  const math_t* xv = as_math<scalar_t>(x, x_buffer, count);
  for (int64_t j = 0; j < count; ++j) y[j] = xv[j] * affine.scale[j] + affine.shift[j];
  if (residual) {
    math_t r_buffer[kBlock];
    const math_t* rv = as_math<scalar_t>(residual, r_buffer, count);
    for (int64_t j = 0; j < count; ++j) y[j] += rv[j];
  }
}

// Runs fn(block_first, count) over blocks of kBlock neurons, in parallel.
template <typename Fn>
inline void for_neuron_blocks(int64_t neurons, const Fn& fn) {
  const int64_t blocks = (neurons + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, kBlocksPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t first = block * kBlock;
      fn(first, std::min(kBlock, neurons - first));
    }
  });
}

template <typename scalar_t>
void forward_kernel(const BnLifForwardArgs<scalar_t>& a) {
  using math_t = at::opmath_type<scalar_t>;
  const BnLifLayout& layout = a.layout;
  const int64_t neurons = layout.neurons;
  const ChannelAffine<math_t> channel_affine(a.affine, layout.channels);
  for_neuron_blocks(neurons, [&](int64_t first, int64_t count) {
    // The settings as local scalars: read through the args or the closure, GCC does not vectorise the loops.
    const math_t tau = a.neuron.tau, v_threshold = a.neuron.v_threshold, v_reset = a.neuron.v_reset;
    const bool hard_reset = a.neuron.hard_reset, decay_input = a.neuron.decay_input;
    BlockChannels channels;
    BlockAffine<math_t> affine;
    math_t v[kBlock];
    math_t y[kBlock];
    math_t spike_buffer[kBlock];
    channels.load(layout, first, count);
    affine.load(channel_affine, channels, count);
    for (int64_t j = 0; j < count; ++j) v[j] = hard_reset ? v_reset : math_t(0);
    for (int64_t t = 0; t < layout.steps; ++t) {
      const int64_t offset = t * neurons + first;
      block_input<scalar_t>(raw_ptr(a.x) + offset, a.residual ? raw_ptr(a.residual) + offset : nullptr, affine, y,
                            count);
      Raw<scalar_t>* spikes_t = raw_ptr(a.spikes) + offset;
      math_t* spikes = math_output<scalar_t>(spikes_t, spike_buffer);
      for (int64_t j = 0; j < count; ++j) {
        const math_t h = lif_charge<math_t>(v[j], y[j], tau, v_reset, decay_input);
        const bool spike = h >= v_threshold;
        spikes[j] = spike ? math_t(1) : math_t(0);
        v[j] = lif_reset<math_t>(h, spike, v_threshold, v_reset, hard_reset);
      }
      if (spikes != reinterpret_cast<math_t*>(spikes_t)) CpuCast<scalar_t>::store_values(spikes, spikes_t, count);
    }
  });
}

// Phase 1: recompute h over all steps, walk the LIF backward, write dL/dy; per-neuron sums over time of
// dL/dy and dL/dy * (x - mean) go to partial_dy / partial_dyxc [neurons].
template <Surrogate S, typename scalar_t>
void backward_phase1_kernel(const BnLifBackwardArgs<scalar_t>& a, at::opmath_type<scalar_t>* partial_dy,
                            at::opmath_type<scalar_t>* partial_dyxc) {
  using math_t = at::opmath_type<scalar_t>;
  const BnLifLayout& layout = a.layout;
  const int64_t neurons = layout.neurons;
  const int64_t steps = layout.steps;
  const int64_t blocks = (neurons + kBlock - 1) / kBlock;
  const ChannelAffine<math_t> channel_affine(a.affine, layout.channels);
  at::parallel_for(0, blocks, kBlocksPerTask, [&](int64_t begin, int64_t end) {
    // Local scalars, as in forward_kernel.
    const math_t tau = a.neuron.tau, v_threshold = a.neuron.v_threshold, v_reset = a.neuron.v_reset;
    const math_t alpha = a.neuron.alpha;
    const bool hard_reset = a.neuron.hard_reset, decay_input = a.neuron.decay_input;
    const auto mode = ResetMode<math_t>::make(hard_reset, a.neuron.detach_reset);
    const math_t keep = math_t(1) - math_t(1) / tau;
    const math_t input_divisor = decay_input ? tau : math_t(1);
    std::vector<math_t> h_all(static_cast<size_t>(steps * kBlock));
    BlockChannels channels;
    BlockAffine<math_t> affine;
    math_t mean[kBlock];
    math_t v[kBlock];
    math_t y[kBlock];
    math_t grad_v[kBlock];
    math_t acc_dy[kBlock];
    math_t acc_dyxc[kBlock];
    math_t gs_buffer[kBlock];
    math_t x_buffer[kBlock];
    math_t out_buffer[kBlock];
    for (int64_t block = begin; block < end; ++block) {
      const int64_t first = block * kBlock;
      const int64_t count = std::min(kBlock, neurons - first);
      channels.load(layout, first, count);
      affine.load(channel_affine, channels, count);
      for (int64_t j = 0; j < count; ++j) {
        mean[j] = a.affine.mean[channels.channel[j]];
        v[j] = hard_reset ? v_reset : math_t(0);
        grad_v[j] = 0;
        acc_dy[j] = 0;
        acc_dyxc[j] = 0;
      }
      for (int64_t t = 0; t < steps; ++t) {
        const int64_t offset = t * neurons + first;
        block_input<scalar_t>(raw_ptr(a.x) + offset, a.residual ? raw_ptr(a.residual) + offset : nullptr, affine,
                              y, count);
        math_t* h_t = h_all.data() + t * kBlock;
        for (int64_t j = 0; j < count; ++j) {
          const math_t h = lif_charge<math_t>(v[j], y[j], tau, v_reset, decay_input);
          h_t[j] = h;
          v[j] = lif_reset<math_t>(h, h >= v_threshold, v_threshold, v_reset, hard_reset);
        }
      }
      for (int64_t t = steps - 1; t >= 0; --t) {
        const int64_t offset = t * neurons + first;
        const math_t* h_t = h_all.data() + t * kBlock;
        const math_t* gs = as_math<scalar_t>(raw_ptr(a.grad_spikes) + offset, gs_buffer, count);
        const math_t* xv = as_math<scalar_t>(raw_ptr(a.x) + offset, x_buffer, count);
        Raw<scalar_t>* out_t = raw_ptr(a.grad_y) + offset;
        math_t* out = math_output<scalar_t>(out_t, out_buffer);
        for (int64_t j = 0; j < count; ++j) {
          const LifStepGrad<math_t> g =
              lif_step_grad<S, math_t>(h_t[j], v_threshold, gs[j], math_t(0), grad_v[j], v_reset, alpha, mode);
          const math_t dy = g.h / input_divisor;
          out[j] = dy;
          acc_dy[j] += dy;
          acc_dyxc[j] += dy * (xv[j] - mean[j]);
          grad_v[j] = g.h * keep;
        }
        if (out != reinterpret_cast<math_t*>(out_t)) CpuCast<scalar_t>::store_values(out, out_t, count);
      }
      for (int64_t j = 0; j < count; ++j) {
        partial_dy[first + j] = acc_dy[j];
        partial_dyxc[first + j] = acc_dyxc[j];
      }
    }
  });
}

template <typename scalar_t>
void backward_phase2_kernel(const BnLifInputGradArgs<scalar_t>& a) {
  using math_t = at::opmath_type<scalar_t>;
  const BnLifLayout& layout = a.layout;
  const int64_t neurons = layout.neurons;
  for_neuron_blocks(neurons, [&](int64_t first, int64_t count) {
    BlockChannels channels;
    math_t scale[kBlock];
    math_t coef_a[kBlock];
    math_t coef_b[kBlock];
    math_t gy_buffer[kBlock];
    math_t x_buffer[kBlock];
    math_t out_buffer[kBlock];
    channels.load(layout, first, count);
    for (int64_t j = 0; j < count; ++j) {
      scale[j] = a.scale[channels.channel[j]];
      coef_a[j] = a.a[channels.channel[j]];
      coef_b[j] = a.b[channels.channel[j]];
    }
    for (int64_t t = 0; t < layout.steps; ++t) {
      const int64_t offset = t * neurons + first;
      const math_t* gy = as_math<scalar_t>(raw_ptr(a.grad_y) + offset, gy_buffer, count);
      const math_t* xv = as_math<scalar_t>(raw_ptr(a.x) + offset, x_buffer, count);
      Raw<scalar_t>* out_t = raw_ptr(a.grad_x) + offset;
      math_t* out = math_output<scalar_t>(out_t, out_buffer);
      for (int64_t j = 0; j < count; ++j) out[j] = gy[j] * scale[j] + xv[j] * coef_a[j] + coef_b[j];
      if (out != reinterpret_cast<math_t*>(out_t)) CpuCast<scalar_t>::store_values(out, out_t, count);
    }
  });
}

// Per-neuron sums over time of x and x^2 in double, then per channel.
template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor> stats_kernel(const at::Tensor& x, const BnLifLayout& layout) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t neurons = layout.neurons;
  at::Tensor sum = at::empty({neurons}, x.options().dtype(at::kDouble));
  at::Tensor sum_sq = at::empty({neurons}, x.options().dtype(at::kDouble));
  const Raw<scalar_t>* data = raw_ptr(x.const_data_ptr<scalar_t>());
  double* sum_out = sum.data_ptr<double>();
  double* sum_sq_out = sum_sq.data_ptr<double>();
  for_neuron_blocks(neurons, [&](int64_t first, int64_t count) {
    double s[kBlock];
    double q[kBlock];
    math_t x_buffer[kBlock];
    for (int64_t j = 0; j < count; ++j) s[j] = q[j] = 0.0;
    for (int64_t t = 0; t < layout.steps; ++t) {
      const math_t* xv = as_math<scalar_t>(data + t * neurons + first, x_buffer, count);
      for (int64_t j = 0; j < count; ++j) {
        const double value = static_cast<double>(xv[j]);
        s[j] += value;
        q[j] += value * value;
      }
    }
    for (int64_t j = 0; j < count; ++j) {
      sum_out[first + j] = s[j];
      sum_sq_out[first + j] = q[j];
    }
  });
  const double total = static_cast<double>(layout.steps * layout.batch * layout.inner);
  const at::Tensor mean = channel_sum(sum, layout) / total;
  const at::Tensor var = (channel_sum(sum_sq, layout) / total - mean * mean).clamp_min(0.0);
  const at::ScalarType math_type = c10::CppTypeToScalarType<math_t>::value;
  return {mean.to(math_type), var.to(math_type)};
}

std::tuple<at::Tensor, at::Tensor> batch_norm_stats_cpu(const at::Tensor& x_in) {
  const BnLifLayout layout = bn_lif_layout(x_in, "ndsnn.batch_norm_stats");
  const at::Tensor x = x_in.contiguous();
  std::tuple<at::Tensor, at::Tensor> result;
  dispatch_bn_lif_type(x.scalar_type(), "ndsnn.batch_norm_stats", [&](auto tag) {
    using scalar_t = typename decltype(tag)::type;
    using math_t = at::opmath_type<scalar_t>;
    const at::ScalarType math_type = c10::CppTypeToScalarType<math_t>::value;
    if (layout.steps * layout.batch * layout.inner == 0) {
      const at::Tensor nan = at::full({layout.channels}, NAN, x.options().dtype(math_type));
      result = {nan, nan.clone()};
      return;
    }
    result = stats_kernel<scalar_t>(x, layout);
  });
  return result;
}

at::Tensor batch_norm_lif_forward_cpu(const at::Tensor& x, const std::optional<at::Tensor>& residual,
                                      const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias,
                                      const at::Tensor& mean, const at::Tensor& invstd, double tau, double v_threshold,
                                      std::optional<double> v_reset, bool decay_input, bool detach_reset,
                                      c10::string_view surrogate, double alpha, bool /*batch_stats*/) {
  return bn_lif_forward_host(x, residual, weight, bias, mean, invstd, tau, v_threshold, v_reset, decay_input,
                             detach_reset, surrogate, alpha, [](const auto& a) {
                               using Args = std::decay_t<decltype(a)>;
                               forward_kernel<typename Args::scalar>(a);
                             });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_lif_backward_cpu(
    const at::Tensor& grad_spikes, const at::Tensor& x, const std::optional<at::Tensor>& residual,
    const std::optional<at::Tensor>& weight, const std::optional<at::Tensor>& bias, const at::Tensor& mean,
    const at::Tensor& invstd, double tau, double v_threshold, std::optional<double> v_reset, bool decay_input,
    bool detach_reset, c10::string_view surrogate, double alpha, bool batch_stats) {
  auto phase1 = [&](auto surrogate_tag, const auto& a) -> std::tuple<at::Tensor, at::Tensor> {
    using Args = std::decay_t<decltype(a)>;
    using math_t = typename Args::math_t;
    const at::ScalarType math_type = c10::CppTypeToScalarType<math_t>::value;
    at::Tensor partial_dy = at::empty({a.layout.neurons}, x.options().dtype(math_type));
    at::Tensor partial_dyxc = at::empty({a.layout.neurons}, x.options().dtype(math_type));
    backward_phase1_kernel<decltype(surrogate_tag)::value, typename Args::scalar>(a, partial_dy.data_ptr<math_t>(),
                                                                                  partial_dyxc.data_ptr<math_t>());
    return {channel_sum(partial_dy, a.layout), channel_sum(partial_dyxc, a.layout)};
  };
  auto phase2 = [](const auto& a) {
    using scalar_t = std::remove_const_t<std::remove_pointer_t<decltype(a.grad_x)>>;
    backward_phase2_kernel<scalar_t>(a);
  };
  return bn_lif_backward_host(grad_spikes, x, residual, weight, bias, mean, invstd, tau, v_threshold, v_reset,
                              decay_input, detach_reset, surrogate, alpha, batch_stats, phase1, phase2);
}

}  // namespace

TORCH_LIBRARY_IMPL(ndsnn, CPU, m) {
  m.impl("batch_norm_stats", &batch_norm_stats_cpu);
  m.impl("batch_norm_lif_forward", &batch_norm_lif_forward_cpu);
  m.impl("batch_norm_lif_backward", &batch_norm_lif_backward_cpu);
}

}  // namespace ndsnn
