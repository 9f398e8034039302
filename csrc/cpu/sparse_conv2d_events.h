// Event-driven sparse convolution on the CPU, for inputs that are mostly zero (spikes: often 5-20% ones).
//
// Per sample, the nonzero inputs of each input channel are listed (positions and values); then each active
// input adds w * x to the outputs of every kept weight of its input channel (forward), or gathers the
// output gradient there (weight gradient). Work: active inputs x kept weights per input channel, instead
// of output pixels x kept weights.
//
// Stride 1 only. A sample's outputs are accumulated in padded planes, large enough for every input to land
// inside through every tap, so the inner loop is one multiply-add per kept weight without bounds checks:
// input (iy, ix), at padded position iy * pitch + ix, reaches output row iy - off_y - first_row and column
// ix - off_x - first_col of the padded plane.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

#include <ATen/Parallel.h>

#include "../sparse_conv2d.h"

namespace ndsnn {
namespace events {

inline bool applies(const ConvGeometry& g) { return g.stride_h == 1 && g.stride_w == 1; }

// Inputs with at most this fraction of nonzeros take the event-driven forward and weight gradient.
constexpr double kMaxInputDensity = 0.3;

struct PaddedPlane {
  int64_t first_row, first_col;  // the output row / column of padded position 0
  int64_t rows, pitch;

  explicit PaddedPlane(const ConvGeometry& g)
      : first_row(g.pad_h - (g.kernel_h - 1) * g.dilation_h),
        first_col(g.pad_w - (g.kernel_w - 1) * g.dilation_w),
        rows(g.in_h + (g.kernel_h - 1) * g.dilation_h),
        pitch(g.in_w + (g.kernel_w - 1) * g.dilation_w) {}
  int64_t size() const { return rows * pitch; }
  int64_t output(int64_t oy, int64_t ox) const { return (oy - first_row) * pitch + (ox - first_col); }
  // From an input's padded position to its target through one tap.
  int64_t shift(const ConvGeometry& g, const KeptTap& tap) const {
    return (g.pad_h - tap.ky * g.dilation_h - first_row) * pitch + (g.pad_w - tap.kx * g.dilation_w - first_col);
  }
};

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

// One sample's nonzero inputs: channel c's at [start[c], start[c + 1]). Reused across samples by a thread.
template <typename math_t>
struct SampleEvents {
  std::vector<int32_t> position;  // iy * pitch + ix
  std::vector<math_t> value;
  std::vector<int64_t> start;

  template <typename scalar_t>
  void list(const scalar_t* x_sample, const ConvGeometry& g, const PaddedPlane& padded) {
    const int64_t plane = g.in_h * g.in_w;
    position.resize(g.in_channels * plane + 1);  // + 1: the branch-free fill writes one slot ahead
    value.resize(g.in_channels * plane + 1);
    start.resize(g.in_channels + 1);
    int64_t n = 0;
    for (int64_t c = 0; c < g.in_channels; ++c) {
      start[c] = n;
      const scalar_t* src = x_sample + c * plane;
      for (int64_t y = 0; y < g.in_h; ++y) {
        for (int64_t x = 0; x < g.in_w; ++x) {
          const math_t v = static_cast<math_t>(src[y * g.in_w + x]);
          position[n] = static_cast<int32_t>(y * padded.pitch + x);
          value[n] = v;
          n += v != math_t(0);
        }
      }
    }
    start[g.in_channels] = n;
  }
};

// The kept weights grouped by input channel, decoded once: the offset of their target in a sample's padded
// output planes (output channel * plane size + shift), and their value.
template <typename math_t>
struct Taps {
  std::vector<int64_t> offset;
  std::vector<math_t> weight;
};

template <typename scalar_t, typename math_t>
Taps<math_t> decode_taps(const scalar_t* weight, const int64_t* in_flat, int64_t kept, const ConvGeometry& g,
                         const PaddedPlane& padded) {
  Taps<math_t> taps;
  taps.offset.resize(kept);
  taps.weight.resize(weight ? kept : 0);
  for (int64_t k = 0; k < kept; ++k) {
    const int64_t o = in_flat[k] / g.taps_per_output();
    taps.offset[k] = o * padded.size() + padded.shift(g, g.decode(in_flat[k]));
    if (weight) taps.weight[k] = static_cast<math_t>(weight[in_flat[k]]);
  }
  return taps;
}

// target[offset[j]] += w[j] * v for the kept weights of one input channel (distinct targets).
template <typename math_t>
inline void add_scaled(math_t* __restrict__ target, const int64_t* __restrict__ offset,
                       const math_t* __restrict__ w, math_t v, int64_t count) {
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
  const PaddedPlane padded(g);
  const int64_t out_hw = g.out_h * g.out_w;
  const auto taps = decode_taps<scalar_t, math_t>(weight, in_flat, in_ptr[g.in_channels], g, padded);
  at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
    SampleEvents<math_t> events;
    std::vector<math_t> acc(g.out_channels * padded.size());
    for (int64_t n = begin; n < end; ++n) {
      events.list(x + n * g.in_channels * g.in_h * g.in_w, g, padded);
      for (int64_t o = 0; o < g.out_channels; ++o) {
        std::fill_n(acc.data() + o * padded.size(), padded.size(), bias ? static_cast<math_t>(bias[o]) : math_t(0));
      }
      for (int64_t c = 0; c < g.in_channels; ++c) {
        const int64_t* offset = taps.offset.data() + in_ptr[c];
        const math_t* w = taps.weight.data() + in_ptr[c];
        const int64_t count = in_ptr[c + 1] - in_ptr[c];
        if (count == 0) continue;
        for (int64_t e = events.start[c]; e < events.start[c + 1]; ++e) {
          add_scaled(acc.data() + events.position[e], offset, w, events.value[e], count);
        }
      }
      for (int64_t o = 0; o < g.out_channels; ++o) {
        scalar_t* out_plane = out + (n * g.out_channels + o) * out_hw;
        for (int64_t oy = 0; oy < g.out_h; ++oy) {
          const math_t* row = acc.data() + o * padded.size() + padded.output(oy, 0);
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
  const PaddedPlane padded(g);
  const int64_t out_hw = g.out_h * g.out_w;
  const int64_t kept = in_ptr[g.in_channels];
  const auto taps = decode_taps<scalar_t, math_t>(static_cast<const scalar_t*>(nullptr), in_flat, kept, g, padded);
  // One partial sum per kept weight and thread, reduced at the end (the batch is split across threads).
  const int64_t threads = at::get_num_threads();
  std::vector<math_t> partial(threads * kept, math_t(0));
  at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
    math_t* total = partial.data() + at::get_thread_num() * kept;
    SampleEvents<math_t> events;
    std::vector<math_t> go_padded(g.out_channels * padded.size(), math_t(0));  // padding stays zero
    for (int64_t n = begin; n < end; ++n) {
      events.list(x + n * g.in_channels * g.in_h * g.in_w, g, padded);
      for (int64_t o = 0; o < g.out_channels; ++o) {
        const scalar_t* go_plane = grad_out + (n * g.out_channels + o) * out_hw;
        for (int64_t oy = 0; oy < g.out_h; ++oy) {
          math_t* row = go_padded.data() + o * padded.size() + padded.output(oy, 0);
          for (int64_t ox = 0; ox < g.out_w; ++ox) row[ox] = static_cast<math_t>(go_plane[oy * g.out_w + ox]);
        }
      }
      for (int64_t c = 0; c < g.in_channels; ++c) {
        const int64_t* offset = taps.offset.data() + in_ptr[c];
        math_t* sum = total + in_ptr[c];
        const int64_t count = in_ptr[c + 1] - in_ptr[c];
        if (count == 0) continue;
        for (int64_t e = events.start[c]; e < events.start[c + 1]; ++e) {
          const math_t* source = go_padded.data() + events.position[e];
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
      grad_w[in_flat[k]] = static_cast<scalar_t>(sum);
    }
  });
}

}  // namespace events
}  // namespace ndsnn
