// LIF of a constant input current followed by max pooling, on the CPU (csrc/lif_repeated_pool.h). The work is
// split into groups of whole pooling rows of one channel plane: a group's spikes over all steps live in a
// thread-local buffer (a few kilobytes) from which the pooled spikes are written, so the full-size spikes never
// reach memory. Backward recomputes the group's spikes, places each pooled gradient on its window's first
// maximum, and runs the LIF backward of lif_repeated over the group.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../lif_repeated_pool.h"
#include "cpu_cast.h"
#include "lif_block.h"
#include "lif_repeated_block.h"

namespace ndsnn {
namespace {

using namespace cpu;

constexpr int64_t kGroupPixels = 1024;  // the pixels a work item covers, at least one pooling row

// Pooling rows b in [first_band, last_band) of one plane; band out_height (if the frame has rows the pooling
// drops) holds those rows: their neurons are computed (they fire, and count) but reach no output.
struct PoolGroup {
  int64_t plane;
  int64_t first_band;
  int64_t last_band;
  int64_t first_pixel;  // offset of the group's first neuron in the frame
  int64_t pixels;       // its neurons, rows first_band * window .. min(last_band * window, height) - 1
};

class GroupSplit {
 public:
  explicit GroupSplit(const RepeatedPoolGeometry& g)
      : g_(g),
        bands_(g.out_height + (g.height > g.out_height * g.window ? 1 : 0)),
        bands_per_group_(std::max<int64_t>(1, kGroupPixels / (g.window * g.width))),
        groups_per_plane_((bands_ + bands_per_group_ - 1) / bands_per_group_) {}

  int64_t items() const { return g_.planes * groups_per_plane_; }
  int64_t max_pixels() const { return std::min(bands_per_group_ * g_.window, g_.height) * g_.width; }

  PoolGroup group(int64_t item) const {
    PoolGroup group;
    group.plane = item / groups_per_plane_;
    group.first_band = (item % groups_per_plane_) * bands_per_group_;
    group.last_band = std::min(group.first_band + bands_per_group_, bands_);
    const int64_t first_row = group.first_band * g_.window;
    const int64_t end_row = std::min(group.last_band * g_.window, g_.height);
    group.first_pixel = group.plane * g_.height * g_.width + first_row * g_.width;
    group.pixels = (end_row - first_row) * g_.width;
    return group;
  }

 private:
  RepeatedPoolGeometry g_;
  int64_t bands_;
  int64_t bands_per_group_;
  int64_t groups_per_plane_;
};

// The group's spikes of every step into fired[t * group.pixels + i]; returns how many fired.
template <typename scalar_t>
int64_t fire_group(const LifRepeatedArgs<scalar_t>& a, const PoolGroup& group, at::opmath_type<scalar_t>* fired) {
  using math_t = at::opmath_type<scalar_t>;
  const Raw<scalar_t>* current = raw_ptr(a.current);
  const auto settings = RepeatedSettings<math_t>::from(a);
  BlockParams<math_t> params;
  math_t x[kBlock];
  int64_t count_fired = 0;
  for (int64_t offset = 0; offset < group.pixels; offset += kBlock) {
    const int64_t first = group.first_pixel + offset;
    const int64_t count = std::min(kBlock, group.pixels - offset);
    load_block_params(params, a.tau, a.v_threshold, a.layout, first, count);
    CpuCast<scalar_t>::load_block(current + first, x, count);
    fire_repeated_block(x, params, a.layout.steps, count, settings, [&](int64_t t, const math_t* spikes) {
      math_t* out = fired + t * group.pixels + offset;
      int32_t fired_now = 0;
      for (int64_t j = 0; j < count; ++j) {
        out[j] = spikes[j];
        fired_now += static_cast<int32_t>(spikes[j] != math_t(0));
      }
      count_fired += fired_now;
    });
  }
  return count_fired;
}

// The maximum of each window of one pooling row: out[ox] over rows spikes[r * width + ox * k + c].
// K is the window when known at compile time (2, the common case, in a loop GCC vectorises), else 0.
template <int64_t K, typename math_t>
inline void pool_row(const math_t* __restrict__ spikes, int64_t width, int64_t k_runtime, int64_t out_width,
                     math_t* __restrict__ out) {
  if constexpr (K == 2) {
    const math_t* __restrict__ below = spikes + width;
    for (int64_t ox = 0; ox < out_width; ++ox) {
      out[ox] = std::max(std::max(spikes[2 * ox], spikes[2 * ox + 1]), std::max(below[2 * ox], below[2 * ox + 1]));
    }
  } else {
    const int64_t k = k_runtime;
    for (int64_t ox = 0; ox < out_width; ++ox) {
      math_t best = spikes[ox * k];
      for (int64_t r = 0; r < k; ++r) {
        for (int64_t c = 0; c < k; ++c) best = std::max(best, spikes[r * width + ox * k + c]);
      }
      out[ox] = best;
    }
  }
}

// Spike gradients of one pooling row: grad_out[ox] goes to the first neuron of its window (row-major) whose
// potential h reached the threshold, else to the window's first neuron; the other places get 0. Writes every
// place of the row's windows.
template <int64_t K, typename math_t>
inline void route_row(const math_t* __restrict__ h, math_t threshold, const math_t* __restrict__ grad_out,
                      int64_t width, int64_t k_runtime, int64_t out_width, math_t* __restrict__ grads) {
  if constexpr (K == 2) {
    const math_t* __restrict__ h_below = h + width;
    math_t* __restrict__ grads_below = grads + width;
    for (int64_t ox = 0; ox < out_width; ++ox) {
      const bool a = h[2 * ox] >= threshold;
      const bool b = h[2 * ox + 1] >= threshold;
      const bool c = h_below[2 * ox] >= threshold;
      const bool d = h_below[2 * ox + 1] >= threshold;
      const math_t g = grad_out[ox];
      grads[2 * ox] = (a || !(b || c || d)) ? g : math_t(0);
      grads[2 * ox + 1] = (!a && b) ? g : math_t(0);
      grads_below[2 * ox] = (!a && !b && c) ? g : math_t(0);
      grads_below[2 * ox + 1] = (!a && !b && !c && d) ? g : math_t(0);
    }
  } else {
    const int64_t k = k_runtime;
    for (int64_t ox = 0; ox < out_width; ++ox) {
      bool taken = false;
      for (int64_t r = 0; r < k; ++r) {
        for (int64_t c = 0; c < k; ++c) {
          const int64_t at = r * width + ox * k + c;
          const bool here = !taken && h[at] >= threshold;
          taken = taken || here;
          grads[at] = here ? grad_out[ox] : math_t(0);
        }
      }
      if (!taken) grads[ox * k] = grad_out[ox];
    }
  }
}

template <int64_t K, typename scalar_t>
void pool_forward_kernel(const LifRepeatedPoolArgs<scalar_t>& a) {
  using math_t = at::opmath_type<scalar_t>;
  const RepeatedPoolGeometry g = a.pool;
  const int64_t steps = a.lif.layout.steps;
  const int64_t k = g.window;
  const int64_t out_plane = g.out_height * g.out_width;
  const int64_t out_step = g.planes * out_plane;
  const GroupSplit split(g);
  Raw<scalar_t>* pooled = raw_ptr(a.pooled);
  std::atomic<int64_t> total_fired{0};
  at::parallel_for(0, split.items(), 1, [&](int64_t begin, int64_t end) {
    std::vector<math_t> fired(static_cast<size_t>(steps * split.max_pixels()));
    std::vector<math_t> row(static_cast<size_t>(g.out_width));
    int64_t local_fired = 0;
    for (int64_t item = begin; item < end; ++item) {
      const PoolGroup group = split.group(item);
      local_fired += fire_group(a.lif, group, fired.data());
      for (int64_t band = group.first_band; band < std::min(group.last_band, g.out_height); ++band) {
        const int64_t band_offset = (band - group.first_band) * k * g.width;
        for (int64_t t = 0; t < steps; ++t) {
          Raw<scalar_t>* dst = pooled + t * out_step + group.plane * out_plane + band * g.out_width;
          math_t* out = math_output<scalar_t>(dst, row.data());
          pool_row<K>(fired.data() + t * group.pixels + band_offset, g.width, k, g.out_width, out);
          if (out != reinterpret_cast<math_t*>(dst)) CpuCast<scalar_t>::store_values(out, dst, g.out_width);
        }
      }
    }
    total_fired.fetch_add(local_fired, std::memory_order_relaxed);
  });
  *a.spike_count = total_fired.load();
}

template <Surrogate S, int64_t K, typename scalar_t>
void pool_backward_kernel(const LifRepeatedPoolArgs<scalar_t>& a) {
  using math_t = at::opmath_type<scalar_t>;
  const LifRepeatedArgs<scalar_t>& lif = a.lif;
  const LifLayout layout = lif.layout;
  const RepeatedPoolGeometry g = a.pool;
  const int64_t steps = layout.steps;
  const int64_t k = g.window;
  const int64_t out_plane = g.out_height * g.out_width;
  const int64_t out_step = g.planes * out_plane;
  const GroupSplit split(g);
  const Raw<scalar_t>* current = raw_ptr(lif.current);
  const Raw<scalar_t>* grad_pooled = raw_ptr(a.grad_pooled);
  Raw<scalar_t>* grad_current = raw_ptr(lif.grad_current);
  const auto settings = RepeatedSettings<math_t>::from(lif);
  at::parallel_for(0, split.items(), 1, [&](int64_t begin, int64_t end) {
    const size_t buffer = static_cast<size_t>(steps * split.max_pixels());
    std::vector<math_t> h(buffer);
    std::vector<math_t> grad_spikes(buffer);
    std::vector<math_t> grad_row(static_cast<size_t>(g.out_width));
    BlockParams<math_t> params;
    math_t x[kBlock];
    math_t grad_x_buffer[kBlock];
    for (int64_t item = begin; item < end; ++item) {
      const PoolGroup group = split.group(item);
      const int64_t pixels = group.pixels;
      for (int64_t offset = 0; offset < pixels; offset += kBlock) {
        const int64_t first = group.first_pixel + offset;
        const int64_t count = std::min(kBlock, pixels - offset);
        load_block_params(params, lif.tau, lif.v_threshold, layout, first, count);
        CpuCast<scalar_t>::load_block(current + first, x, count);
        charge_repeated_block(x, params, h.data() + offset, pixels, steps, count, settings);
      }
      // the plane's neurons share their channel's threshold
      const math_t threshold = lif.v_threshold.at((group.first_pixel / layout.inner) % layout.channels);
      const int64_t routed = (std::min(group.last_band, g.out_height) - group.first_band) * k * g.width;
      for (int64_t t = 0; t < steps; ++t) {
        math_t* grads = grad_spikes.data() + t * pixels;
        std::fill(grads + std::max<int64_t>(routed, 0), grads + pixels, math_t(0));
        for (int64_t band = group.first_band; band < std::min(group.last_band, g.out_height); ++band) {
          const int64_t band_offset = (band - group.first_band) * k * g.width;
          math_t* band_grads = grads + band_offset;
          if (g.out_width * k < g.width) {  // the columns the pooling drops
            for (int64_t r = 0; r < k; ++r) {
              std::fill(band_grads + r * g.width + g.out_width * k, band_grads + (r + 1) * g.width, math_t(0));
            }
          }
          const math_t* grad_out =
              as_math<scalar_t>(grad_pooled + t * out_step + group.plane * out_plane + band * g.out_width,
                                grad_row.data(), g.out_width);
          route_row<K>(h.data() + t * pixels + band_offset, threshold, grad_out, g.width, k, g.out_width,
                       band_grads);
        }
      }
      for (int64_t offset = 0; offset < pixels; offset += kBlock) {
        const int64_t first = group.first_pixel + offset;
        const int64_t count = std::min(kBlock, pixels - offset);
        load_block_params(params, lif.tau, lif.v_threshold, layout, first, count);
        CpuCast<scalar_t>::load_block(current + first, x, count);
        const RepeatedBlockGrad<math_t> out{math_output<scalar_t>(grad_current + first, grad_x_buffer),
                                            lif.grad_tau ? lif.grad_tau + first : nullptr,
                                            lif.grad_v_threshold ? lif.grad_v_threshold + first : nullptr};
        backward_repeated_block<S>(
            x, params, steps, count, settings,
            [&](int64_t t) { return static_cast<const math_t*>(grad_spikes.data() + t * pixels + offset); },
            [&](int64_t t) { return static_cast<const math_t*>(h.data() + t * pixels + offset); }, out);
        if (out.grad_x != reinterpret_cast<math_t*>(grad_current + first)) {
          CpuCast<scalar_t>::store_values(out.grad_x, grad_current + first, count);
        }
      }
    }
  });
}

// Calls fn(std::integral_constant<int64_t, K>) with K = 2 for windows of 2, else 0 (the window read at run time).
template <typename Fn>
inline void dispatch_window(int64_t window, const Fn& fn) {
  if (window == 2) {
    fn(std::integral_constant<int64_t, 2>{});
  } else {
    fn(std::integral_constant<int64_t, 0>{});
  }
}

std::tuple<at::Tensor, at::Tensor> lif_repeated_max_pool_forward_cpu(
    const at::Tensor& current, int64_t steps, int64_t window, const std::optional<at::Tensor>& tau,
    const std::optional<at::Tensor>& v_threshold, double tau_value, double v_threshold_value,
    std::optional<double> v_reset, bool decay_input, bool detach_reset, c10::string_view surrogate, double alpha) {
  return lif_repeated_max_pool_forward_host(current, steps, window, tau, v_threshold, tau_value, v_threshold_value,
                                            v_reset, decay_input, detach_reset, surrogate, alpha,
                                            [](const auto& args) {
                                              using Args = std::decay_t<decltype(args)>;
                                              dispatch_window(args.pool.window, [&](auto window_tag) {
                                                pool_forward_kernel<decltype(window_tag)::value,
                                                                    typename Args::scalar>(args);
                                              });
                                            });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_repeated_max_pool_backward_cpu(
    const at::Tensor& grad_pooled, const at::Tensor& current, int64_t window, const std::optional<at::Tensor>& tau,
    const std::optional<at::Tensor>& v_threshold, double tau_value, double v_threshold_value,
    std::optional<double> v_reset, bool decay_input, bool detach_reset, c10::string_view surrogate, double alpha,
    bool tau_grad, bool v_threshold_grad) {
  return lif_repeated_max_pool_backward_host(
      grad_pooled, current, window, tau, v_threshold, tau_value, v_threshold_value, v_reset, decay_input,
      detach_reset, surrogate, alpha, tau_grad, v_threshold_grad, [](auto surrogate_tag, const auto& args) {
        using Args = std::decay_t<decltype(args)>;
        dispatch_window(args.pool.window, [&](auto window_tag) {
          pool_backward_kernel<decltype(surrogate_tag)::value, decltype(window_tag)::value, typename Args::scalar>(
              args);
        });
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(ndsnn, CPU, m) {
  m.impl("lif_repeated_max_pool_forward", &lif_repeated_max_pool_forward_cpu);
  m.impl("lif_repeated_max_pool_backward", &lif_repeated_max_pool_backward_cpu);
}

}  // namespace ndsnn
