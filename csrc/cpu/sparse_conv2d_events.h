// Event-driven sparse convolution on the CPU, for inputs that are mostly zero (spikes: often 5-20% ones).
//
// Per sample, the nonzero inputs are listed by input channel and phase (sparse_conv2d_planes.h); then each
// active input adds w * x to the outputs of every kept weight of its channel and phase (forward), or
// gathers the output gradient there (weight gradient). Work: active inputs x kept weights per input
// channel, instead of output pixels x kept weights. Outputs are accumulated in OutputPlanes, whose margins
// take the targets outside the output, so the inner loop is one multiply-add per kept weight, no checks.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <type_traits>
#include <vector>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "sparse_conv2d_planes.h"

namespace ndsnn {
namespace events {

// Inputs with at most this fraction of nonzeros take the event-driven forward and weight gradient.
constexpr double kMaxInputDensity = 0.3;

// Whether x has few enough nonzeros for the event path (a vectorisable count, split across threads).
template <typename scalar_t>
bool sparse_enough(const scalar_t* x, int64_t numel) {
  using math_t = at::opmath_type<scalar_t>;
  std::atomic<int64_t> nonzero{0};
  at::parallel_for(0, numel, 1 << 16, [&](int64_t begin, int64_t end) {
    int64_t count = 0;
    for (int64_t i = begin; i < end; ++i) count += static_cast<math_t>(x[i]) != math_t(0);
    nonzero += count;
  });
  return nonzero.load() <= kMaxInputDensity * static_cast<double>(numel);
}

// One sample's nonzero inputs: those of (channel c, phase r) at [start[c * phases + r], start[... + 1]),
// as their quotient's position in an OutputPlane and their value. Groups without kept weights are left
// empty. Reused across samples by a thread.
template <typename math_t>
struct SampleEvents {
  std::vector<int32_t> position;
  std::vector<math_t> value;
  std::vector<int64_t> start;

  // Append the nonzeros of row[q * stride], q in [begin, end), at positions base + q; returns the new count.
  template <typename scalar_t, typename stride_t>
  int64_t compact(const scalar_t* row, int64_t begin, int64_t end, stride_t stride, int32_t base, int64_t n) {
    int32_t* __restrict__ pos = position.data();
    math_t* __restrict__ val = value.data();
    for (int64_t q = begin; q < end; ++q) {
      const math_t v = static_cast<math_t>(row[q * stride]);
      pos[n] = base + static_cast<int32_t>(q);
      val[n] = v;
      n += v != math_t(0);
    }
    return n;
  }

  template <typename scalar_t>
  void list(const scalar_t* x_sample, const ConvGeometry& g, const planes::OutputPlane& layout,
            const std::vector<int64_t>& tap_ptr) {
    const planes::Axis ry = planes::rows(g), rx = planes::cols(g);
    const int64_t phases = planes::phases(g);
    position.resize(g.in_channels * g.in_h * g.in_w + 1);  // + 1: the branch-free fill writes one ahead
    value.resize(position.size());
    start.resize(g.in_channels * phases + 1);
    int64_t n = 0;
    for (int64_t c = 0; c < g.in_channels; ++c) {
      const scalar_t* src = x_sample + c * g.in_h * g.in_w;
      for (int64_t phase = 0; phase < phases; ++phase) {
        const int64_t group = c * phases + phase;
        start[group] = n;
        if (tap_ptr[group] == tap_ptr[group + 1]) continue;
        const int64_t a = phase / g.stride_w, b = phase % g.stride_w;
        for (int64_t qy = ry.q_begin(a); qy < ry.q_end(a); ++qy) {
          const scalar_t* row = src + ry.input(qy, a) * g.in_w + b - g.pad_w;
          const int32_t base = static_cast<int32_t>(layout.at(qy, 0));
          if (g.stride_w == 1) {
            n = compact(row, rx.q_begin(b), rx.q_end(b), std::integral_constant<int64_t, 1>{}, base, n);
          } else {
            n = compact(row, rx.q_begin(b), rx.q_end(b), g.stride_w, base, n);
          }
        }
      }
    }
    start[g.in_channels * phases] = n;
  }
};

// The kept weights grouped by (input channel, phase), decoded once: the offset from an event's position to
// its target in a sample's OutputPlanes (output channel * plane size - tap shift), and the weight.
template <typename math_t>
struct Taps {
  planes::PhaseGroups groups;
  std::vector<int64_t> offset;
  std::vector<math_t> weight;
};

template <typename scalar_t, typename math_t>
Taps<math_t> decode_taps(const scalar_t* weight, const int64_t* in_ptr, const int64_t* in_flat, const ConvGeometry& g,
                         const planes::OutputPlane& layout) {
  Taps<math_t> taps;
  taps.groups = planes::group_by_phase(in_ptr, in_flat, g);
  const auto& flat = taps.groups.flat;
  taps.offset.resize(flat.size());
  taps.weight.resize(weight ? flat.size() : 0);
  planes::for_each_kept(static_cast<int64_t>(flat.size()), [&](int64_t k) {
    taps.offset[k] = g.output_channel(flat[k]) * layout.size() - layout.tap_shift(g, g.decode(flat[k]));
    if (weight) taps.weight[k] = static_cast<math_t>(weight[flat[k]]);
  });
  return taps;
}

// target[offset[j]] += w[j] * v for the kept weights of one input channel and phase (distinct targets).
template <typename math_t>
inline void add_scaled(math_t* __restrict__ target, const int64_t* __restrict__ offset, const math_t* __restrict__ w,
                       math_t v, int64_t count) {
  int64_t j = 0;
  for (; j + 4 <= count; j += 4) {
    const math_t a = target[offset[j]] + w[j] * v;
    const math_t b = target[offset[j + 1]] + w[j + 1] * v;
    const math_t c = target[offset[j + 2]] + w[j + 2] * v;
    const math_t d = target[offset[j + 3]] + w[j + 3] * v;
    target[offset[j]] = a;
    target[offset[j + 1]] = b;
    target[offset[j + 2]] = c;
    target[offset[j + 3]] = d;
  }
  for (; j < count; ++j) target[offset[j]] += w[j] * v;
}

template <typename scalar_t>
void forward(const scalar_t* x, const scalar_t* weight, const scalar_t* bias, const int64_t* in_ptr,
             const int64_t* in_flat, scalar_t* out, const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  const planes::OutputPlane layout(g);
  const auto taps = decode_taps<scalar_t, math_t>(weight, in_ptr, in_flat, g, layout);
  const int64_t groups = g.in_channels * planes::phases(g);
  at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
    SampleEvents<math_t> events;
    std::vector<math_t> acc(g.out_channels * layout.size());
    for (int64_t n = begin; n < end; ++n) {
      events.list(x + n * g.in_channels * g.in_h * g.in_w, g, layout, taps.groups.ptr);
      for (int64_t o = 0; o < g.out_channels; ++o) {
        std::fill_n(acc.data() + o * layout.size(), layout.size(), bias ? static_cast<math_t>(bias[o]) : math_t(0));
      }
      for (int64_t group = 0; group < groups; ++group) {
        const int64_t first = taps.groups.ptr[group];
        const int64_t count = taps.groups.ptr[group + 1] - first;
        if (count == 0) continue;
        for (int64_t e = events.start[group]; e < events.start[group + 1]; ++e) {
          add_scaled(acc.data() + events.position[e], taps.offset.data() + first, taps.weight.data() + first,
                     events.value[e], count);
        }
      }
      for (int64_t o = 0; o < g.out_channels; ++o) {
        scalar_t* out_plane = out + (n * g.out_channels + o) * g.out_h * g.out_w;
        for (int64_t oy = 0; oy < g.out_h; ++oy) {
          const math_t* row = acc.data() + o * layout.size() + layout.at(oy, 0);
          for (int64_t ox = 0; ox < g.out_w; ++ox) out_plane[oy * g.out_w + ox] = static_cast<scalar_t>(row[ox]);
        }
      }
    }
  });
}

template <typename scalar_t>
void grad_weight(const scalar_t* grad_out, const scalar_t* x, const int64_t* in_ptr, const int64_t* in_flat,
                 scalar_t* grad_w, const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  const planes::OutputPlane layout(g);
  const auto taps = decode_taps<scalar_t, math_t>(static_cast<const scalar_t*>(nullptr), in_ptr, in_flat, g, layout);
  const int64_t kept = static_cast<int64_t>(taps.groups.flat.size());
  const int64_t groups = g.in_channels * planes::phases(g);
  // One partial sum per kept weight and thread, reduced at the end (the batch is split across threads).
  const int64_t threads = at::get_num_threads();
  std::vector<math_t> partial(threads * kept, math_t(0));
  at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
    math_t* total = partial.data() + at::get_thread_num() * kept;
    SampleEvents<math_t> events;
    std::vector<math_t> go_planes(g.out_channels * layout.size(), math_t(0));  // margins stay zero
    for (int64_t n = begin; n < end; ++n) {
      events.list(x + n * g.in_channels * g.in_h * g.in_w, g, layout, taps.groups.ptr);
      planes::load_outputs(grad_out + n * g.out_channels * g.out_h * g.out_w, g.out_channels, g, layout,
                           go_planes.data());
      for (int64_t group = 0; group < groups; ++group) {
        const int64_t first = taps.groups.ptr[group];
        const int64_t count = taps.groups.ptr[group + 1] - first;
        if (count == 0) continue;
        const int64_t* offset = taps.offset.data() + first;
        math_t* sum = total + first;
        for (int64_t e = events.start[group]; e < events.start[group + 1]; ++e) {
          const math_t* source = go_planes.data() + events.position[e];
          const math_t v = events.value[e];
          for (int64_t j = 0; j < count; ++j) sum[j] += source[offset[j]] * v;
        }
      }
    }
  });
  at::parallel_for(0, kept, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      math_t sum = 0;
      for (int64_t t = 0; t < threads; ++t) sum += partial[t * kept + k];
      grad_w[taps.groups.flat[k]] = static_cast<scalar_t>(sum);
    }
  });
}

}  // namespace events
}  // namespace ndsnn
