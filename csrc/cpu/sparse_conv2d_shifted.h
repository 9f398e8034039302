// Sparse convolution on the CPU as whole-plane shifted sums, for real-valued (dense) tensors.
//
// A sample's planes are copied into zero-padded phase planes (sparse_conv2d_planes.h) with a common row
// pitch, so that through every kept weight an output plane and an input plane are related by one constant
// shift of the flat index: each kept weight then costs one contiguous run of rows * pitch multiply-adds
// (the columns past the true width are computed and discarded). No bounds checks, no layout transposes,
// and the runs vectorise.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include "sparse_conv2d_planes.h"

namespace ndsnn {
namespace shifted {

template <typename scalar_t>
void forward(const scalar_t* x, const scalar_t* weight, const scalar_t* bias, const int64_t* out_ptr,
             const int64_t* out_flat, scalar_t* out, const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  const planes::InputPhases layout(g);
  const int64_t run = g.out_h * layout.pitch;
  const int64_t kept = out_ptr[g.out_channels];
  std::vector<int64_t> offset(kept);
  std::vector<math_t> w(kept);
  planes::for_each_kept(kept, [&](int64_t k) {
    offset[k] = layout.offset(g, out_flat[k]);
    w[k] = static_cast<math_t>(weight[out_flat[k]]);
  });
  const int64_t chunks = planes::channel_chunks(g.out_channels);
  at::parallel_for(0, g.batch * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<math_t> x_phases(g.in_channels * layout.channel_size(g));
    std::vector<math_t> acc(run);
    int64_t loaded = -1;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / chunks;
      const int64_t chunk = item % chunks;
      if (loaded != n) {
        planes::load_input_phases(x + n * g.in_channels * g.in_h * g.in_w, g.in_channels, g, layout, x_phases.data());
        loaded = n;
      }
      for (int64_t o = chunk * g.out_channels / chunks; o < (chunk + 1) * g.out_channels / chunks; ++o) {
        std::fill(acc.begin(), acc.end(), bias ? static_cast<math_t>(bias[o]) : math_t(0));
        math_t* __restrict__ a = acc.data();
        for (int64_t k = out_ptr[o]; k < out_ptr[o + 1]; ++k) {
          const math_t* __restrict__ src = x_phases.data() + offset[k];
          const math_t wk = w[k];
          for (int64_t i = 0; i < run; ++i) a[i] += wk * src[i];
        }
        scalar_t* dst = out + (n * g.out_channels + o) * g.out_h * g.out_w;
        for (int64_t oy = 0; oy < g.out_h; ++oy) {
          for (int64_t ox = 0; ox < g.out_w; ++ox) dst[oy * g.out_w + ox] = static_cast<scalar_t>(a[oy * layout.pitch + ox]);
        }
      }
    }
  });
}

// Input gradient: for each input channel and phase, the kept weights of that phase each add one shifted
// run of the zero-padded output gradient; the phase's quotient plane is then scattered to the inputs.
template <typename scalar_t>
void grad_input(const scalar_t* grad_out, const scalar_t* weight, const int64_t* in_ptr, const int64_t* in_flat,
                scalar_t* grad_x, const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  const planes::OutputPlane layout(g);
  const planes::Axis ry = planes::rows(g), rx = planes::cols(g);
  const planes::PhaseGroups groups = planes::group_by_phase(in_ptr, in_flat, g);
  const int64_t kept = static_cast<int64_t>(groups.flat.size());
  std::vector<int64_t> offset(kept);
  std::vector<math_t> w(kept);
  planes::for_each_kept(kept, [&](int64_t k) {
    const int64_t flat = groups.flat[k];
    offset[k] = g.output_channel(flat) * layout.size() + layout.at(0, 0) - layout.tap_shift(g, g.decode(flat));
    w[k] = static_cast<math_t>(weight[flat]);
  });
  const int64_t phases = planes::phases(g);
  const int64_t chunks = planes::channel_chunks(g.in_channels);
  at::parallel_for(0, g.batch * chunks, 1, [&](int64_t begin, int64_t end) {
    std::vector<math_t> go_planes(g.out_channels * layout.size(), math_t(0));  // margins stay zero
    std::vector<math_t> acc(ry.quotients() * layout.pitch);
    int64_t loaded = -1;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / chunks;
      const int64_t chunk = item % chunks;
      if (loaded != n) {
        planes::load_outputs(grad_out + n * g.out_channels * g.out_h * g.out_w, g.out_channels, g, layout,
                             go_planes.data());
        loaded = n;
      }
      for (int64_t c = chunk * g.in_channels / chunks; c < (chunk + 1) * g.in_channels / chunks; ++c) {
        scalar_t* dst = grad_x + (n * g.in_channels + c) * g.in_h * g.in_w;
        for (int64_t phase = 0; phase < phases; ++phase) {
          const int64_t pa = phase / g.stride_w, pb = phase % g.stride_w;
          // One run over the quotient rows of this phase's real inputs, every column of the pitch.
          const int64_t qy_begin = ry.q_begin(pa), qy_end = ry.q_end(pa);
          const int64_t run = (qy_end - qy_begin) * layout.pitch;
          const int64_t start = qy_begin * layout.pitch;
          std::fill_n(acc.data(), run, math_t(0));
          math_t* __restrict__ a = acc.data();
          for (int64_t k = groups.ptr[c * phases + phase]; k < groups.ptr[c * phases + phase + 1]; ++k) {
            const math_t* __restrict__ src = go_planes.data() + offset[k] + start;
            const math_t wk = w[k];
            for (int64_t i = 0; i < run; ++i) a[i] += wk * src[i];
          }
          for (int64_t qy = qy_begin; qy < qy_end; ++qy) {
            const int64_t iy = ry.input(qy, pa);
            const math_t* row = acc.data() + (qy - qy_begin) * layout.pitch;
            for (int64_t qx = rx.q_begin(pb); qx < rx.q_end(pb); ++qx) {
              dst[iy * g.in_w + rx.input(qx, pb)] = static_cast<scalar_t>(row[qx]);
            }
          }
        }
      }
    }
  });
}

// Weight gradient at the kept positions: per sample, the output gradient laid out at the input phases'
// pitch (zeros in the extra columns) dotted with the shifted input phase plane, one run per kept weight.
template <typename scalar_t>
void grad_weight(const scalar_t* grad_out, const scalar_t* x, const int64_t* out_flat, int64_t kept,
                 scalar_t* grad_w, const ConvGeometry g) {
  using math_t = at::opmath_type<scalar_t>;
  const planes::InputPhases layout(g);
  const int64_t run = g.out_h * layout.pitch;
  std::vector<int64_t> x_offset(kept);
  std::vector<int64_t> go_offset(kept);
  planes::for_each_kept(kept, [&](int64_t k) {
    x_offset[k] = layout.offset(g, out_flat[k]);
    go_offset[k] = g.output_channel(out_flat[k]) * run;
  });
  const int64_t threads = at::get_num_threads();
  std::vector<math_t> partial(threads * kept, math_t(0));
  at::parallel_for(0, g.batch, 1, [&](int64_t begin, int64_t end) {
    math_t* total = partial.data() + at::get_thread_num() * kept;
    std::vector<math_t> x_phases(g.in_channels * layout.channel_size(g));
    std::vector<math_t> go_pitched(g.out_channels * run, math_t(0));  // columns past out_w stay zero
    for (int64_t n = begin; n < end; ++n) {
      planes::load_input_phases(x + n * g.in_channels * g.in_h * g.in_w, g.in_channels, g, layout, x_phases.data());
      const scalar_t* go = grad_out + n * g.out_channels * g.out_h * g.out_w;
      for (int64_t o = 0; o < g.out_channels; ++o) {
        for (int64_t oy = 0; oy < g.out_h; ++oy) {
          math_t* row = go_pitched.data() + o * run + oy * layout.pitch;
          for (int64_t ox = 0; ox < g.out_w; ++ox) row[ox] = static_cast<math_t>(go[(o * g.out_h + oy) * g.out_w + ox]);
        }
      }
      for (int64_t k = 0; k < kept; ++k) {
        const math_t* __restrict__ a = go_pitched.data() + go_offset[k];
        const math_t* __restrict__ b = x_phases.data() + x_offset[k];
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
