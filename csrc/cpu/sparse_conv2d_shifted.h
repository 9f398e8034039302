// Stride-1 sparse convolution on the CPU as whole-plane shifted sums, for real-valued (dense) tensors.
//
// A sample's planes are copied into zero-padded planes with a common row pitch, so that through every kept
// weight an output plane and an input plane are related by one constant shift of the flat index: each kept
// weight then costs one contiguous run of rows * pitch multiply-adds (the columns past the true width are
// computed and discarded). No bounds checks, no layout transposes, and the runs vectorise.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "../sparse_conv2d.h"

namespace ndsnn {
namespace shifted {

inline bool applies(const ConvGeometry& g) { return g.stride_h == 1 && g.stride_w == 1; }

// The input, zero-padded by the convolution's padding (+ one slack row): output (oy, ox) reads padded input
// position (oy * pitch + ox) + ky * dilation_h * pitch + kx * dilation_w through tap (ky, kx).
struct InputPlane {
  int64_t rows, pitch;
  explicit InputPlane(const ConvGeometry& g) : rows(g.in_h + 2 * g.pad_h + 1), pitch(g.in_w + 2 * g.pad_w) {}
  int64_t size() const { return rows * pitch; }
  int64_t shift(const ConvGeometry& g, const KeptTap& tap) const {
    return tap.ky * g.dilation_h * pitch + tap.kx * g.dilation_w;
  }
};

// The output gradient placed so that input (iy, ix) reads position iy * pitch + ix + shift through a tap.
struct GradOutputPlane {
  int64_t top, left;  // where output (0, 0) sits
  int64_t rows, pitch;

  explicit GradOutputPlane(const ConvGeometry& g)
      : top(std::max<int64_t>(0, (g.kernel_h - 1) * g.dilation_h - g.pad_h)),
        left(std::max<int64_t>(0, (g.kernel_w - 1) * g.dilation_w - g.pad_w)),
        rows(std::max(g.in_h + g.pad_h + top, top + g.out_h) + 2),
        pitch(std::max(g.in_w + g.pad_w + left, left + g.out_w)) {}
  int64_t size() const { return rows * pitch; }
  int64_t shift(const ConvGeometry& g, const KeptTap& tap) const {
    return (top + g.pad_h - tap.ky * g.dilation_h) * pitch + (left + g.pad_w - tap.kx * g.dilation_w);
  }
};

// Copy planes [first, first + count) of one sample ([C, H, W]) into padded planes at (top, left).
template <typename scalar_t, typename math_t>
void load_planes(const scalar_t* src, int64_t count, int64_t h, int64_t w, math_t* dst, int64_t plane_size,
                 int64_t pitch, int64_t top, int64_t left) {
  for (int64_t c = 0; c < count; ++c) {
    for (int64_t y = 0; y < h; ++y) {
      math_t* row = dst + c * plane_size + (top + y) * pitch + left;
      const scalar_t* in = src + (c * h + y) * w;
      for (int64_t x = 0; x < w; ++x) row[x] = static_cast<math_t>(in[x]);
    }
  }
}

// Work items: (sample, chunk of channels), so that a small batch still spreads over the threads; a thread
// loads a sample's padded planes once for consecutive items of the same sample.
inline int64_t channel_chunks(int64_t channels) {
  return std::max<int64_t>(1, std::min<int64_t>(channels, at::get_num_threads()));
}

template <typename scalar_t>
void forward(const scalar_t* x, const scalar_t* weight, const scalar_t* bias, const int64_t* out_ptr,
             const int64_t* out_flat, scalar_t* out, const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  const InputPlane padded(g);
  const int64_t run = g.out_h * padded.pitch;
  const int64_t kept = out_ptr[g.out_channels];
  std::vector<int64_t> offset(kept);
  std::vector<math_t> w(kept);
  for (int64_t k = 0; k < kept; ++k) {
    const int64_t o = out_flat[k] / g.taps_per_output();
    const KeptTap tap = g.decode(out_flat[k]);
    offset[k] = ((o / g.out_per_group()) * g.in_per_group + tap.in_channel) * padded.size() + padded.shift(g, tap);
    w[k] = static_cast<math_t>(weight[out_flat[k]]);
  }
  const int64_t chunks = channel_chunks(g.out_channels);
  at::parallel_for(0, g.batch * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<math_t> x_padded(g.in_channels * padded.size(), math_t(0));  // padding stays zero
    std::vector<math_t> acc(run);
    int64_t loaded = -1;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / chunks;
      const int64_t chunk = item % chunks;
      if (loaded != n) {
        load_planes(x + n * g.in_channels * g.in_h * g.in_w, g.in_channels, g.in_h, g.in_w, x_padded.data(),
                    padded.size(), padded.pitch, g.pad_h, g.pad_w);
        loaded = n;
      }
      for (int64_t o = chunk * g.out_channels / chunks; o < (chunk + 1) * g.out_channels / chunks; ++o) {
        std::fill(acc.begin(), acc.end(), bias ? static_cast<math_t>(bias[o]) : math_t(0));
        math_t* __restrict__ a = acc.data();
        for (int64_t k = out_ptr[o]; k < out_ptr[o + 1]; ++k) {
          const math_t* __restrict__ src = x_padded.data() + offset[k];
          const math_t wk = w[k];
          for (int64_t i = 0; i < run; ++i) a[i] += wk * src[i];
        }
        scalar_t* dst = out + (n * g.out_channels + o) * g.out_h * g.out_w;
        for (int64_t oy = 0; oy < g.out_h; ++oy) {
          for (int64_t ox = 0; ox < g.out_w; ++ox) dst[oy * g.out_w + ox] = static_cast<scalar_t>(a[oy * padded.pitch + ox]);
        }
      }
    }
  });
}

template <typename scalar_t>
void grad_input(const scalar_t* grad_out, const scalar_t* weight, const int64_t* in_ptr, const int64_t* in_flat,
                scalar_t* grad_x, const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  const GradOutputPlane padded(g);
  const int64_t run = g.in_h * padded.pitch;
  const int64_t kept = in_ptr[g.in_channels];
  std::vector<int64_t> offset(kept);
  std::vector<math_t> w(kept);
  for (int64_t k = 0; k < kept; ++k) {
    offset[k] = (in_flat[k] / g.taps_per_output()) * padded.size() + padded.shift(g, g.decode(in_flat[k]));
    w[k] = static_cast<math_t>(weight[in_flat[k]]);
  }
  const int64_t chunks = channel_chunks(g.in_channels);
  at::parallel_for(0, g.batch * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<math_t> go_padded(g.out_channels * padded.size(), math_t(0));  // padding stays zero
    std::vector<math_t> acc(run);
    int64_t loaded = -1;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / chunks;
      const int64_t chunk = item % chunks;
      if (loaded != n) {
        load_planes(grad_out + n * g.out_channels * g.out_h * g.out_w, g.out_channels, g.out_h, g.out_w,
                    go_padded.data(), padded.size(), padded.pitch, padded.top, padded.left);
        loaded = n;
      }
      for (int64_t c = chunk * g.in_channels / chunks; c < (chunk + 1) * g.in_channels / chunks; ++c) {
        std::fill(acc.begin(), acc.end(), math_t(0));
        math_t* __restrict__ a = acc.data();
        for (int64_t k = in_ptr[c]; k < in_ptr[c + 1]; ++k) {
          const math_t* __restrict__ src = go_padded.data() + offset[k];
          const math_t wk = w[k];
          for (int64_t i = 0; i < run; ++i) a[i] += wk * src[i];
        }
        scalar_t* dst = grad_x + (n * g.in_channels + c) * g.in_h * g.in_w;
        for (int64_t iy = 0; iy < g.in_h; ++iy) {
          for (int64_t ix = 0; ix < g.in_w; ++ix) dst[iy * g.in_w + ix] = static_cast<scalar_t>(a[iy * padded.pitch + ix]);
        }
      }
    }
  });
}

// Weight gradient at the kept positions: per sample, the output gradient laid out at the input's pitch
// (zeros in the extra columns) dotted with the shifted padded input, one run per kept weight.
template <typename scalar_t>
void grad_weight(const scalar_t* grad_out, const scalar_t* x, const int64_t* out_flat, int64_t kept,
                 scalar_t* grad_w, const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  const InputPlane padded(g);
  const int64_t run = g.out_h * padded.pitch;
  std::vector<int64_t> x_offset(kept);
  std::vector<int64_t> go_offset(kept);
  for (int64_t k = 0; k < kept; ++k) {
    const int64_t o = out_flat[k] / g.taps_per_output();
    const KeptTap tap = g.decode(out_flat[k]);
    x_offset[k] = ((o / g.out_per_group()) * g.in_per_group + tap.in_channel) * padded.size() + padded.shift(g, tap);
    go_offset[k] = o * run;
  }
  const int64_t threads = at::get_num_threads();
  std::vector<math_t> partial(threads * kept, math_t(0));
  at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
    math_t* total = partial.data() + at::get_thread_num() * kept;
    std::vector<math_t> x_padded(g.in_channels * padded.size(), math_t(0));
    std::vector<math_t> go_pitched(g.out_channels * run, math_t(0));  // columns past out_w stay zero
    for (int64_t n = begin; n < end; ++n) {
      load_planes(x + n * g.in_channels * g.in_h * g.in_w, g.in_channels, g.in_h, g.in_w, x_padded.data(),
                  padded.size(), padded.pitch, g.pad_h, g.pad_w);
      load_planes(grad_out + n * g.out_channels * g.out_h * g.out_w, g.out_channels, g.out_h, g.out_w,
                  go_pitched.data(), run, padded.pitch, 0, 0);
      for (int64_t k = 0; k < kept; ++k) {
        const math_t* __restrict__ a = go_pitched.data() + go_offset[k];
        const math_t* __restrict__ b = x_padded.data() + x_offset[k];
        math_t sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t i = 0; i < run; ++i) sum += a[i] * b[i];
        total[k] += sum;
      }
    }
  });
  at::parallel_for(0, kept, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      math_t sum = 0;
      for (int64_t t = 0; t < threads; ++t) sum += partial[t * kept + k];
      grad_w[out_flat[k]] = static_cast<scalar_t>(sum);
    }
  });
}

}  // namespace shifted
}  // namespace ndsnn
