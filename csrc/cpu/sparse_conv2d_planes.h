// Plane layouts shared by the CPU sparse convolution paths: every geometry (stride, padding, dilation) is
// reduced to stride-1 shifts by splitting the padded input into stride_h x stride_w phases.
//
// Along one axis, padded input coordinate Y = i + pad (i: input index) is written Y = q * stride + r. Output
// o reads padded input o * stride + k * dilation through tap k, that is phase r = (k * dilation) % stride at
// quotient q = o + shift, shift = (k * dilation) / stride. So within one phase a tap is a plain shift.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include <ATen/Parallel.h>

#include "../sparse_conv2d.h"

namespace ndsnn {
namespace planes {

struct Axis {
  int64_t in, out, stride, pad, dilation, kernel;

  int64_t phase(int64_t k) const { return (k * dilation) % stride; }
  int64_t shift(int64_t k) const { return (k * dilation) / stride; }
  int64_t max_shift() const { return shift(kernel - 1); }
  // The quotients of phase r that are real inputs (q * stride + r - pad in [0, in)): [q_begin, q_end).
  int64_t q_begin(int64_t r) const { return pad - r <= 0 ? 0 : (pad - r + stride - 1) / stride; }
  int64_t q_end(int64_t r) const { return in - 1 + pad - r < 0 ? 0 : (in - 1 + pad - r) / stride + 1; }
  int64_t input(int64_t q, int64_t r) const { return q * stride + r - pad; }
  // Quotients of real inputs in any phase: q in [0, quotients()).
  int64_t quotients() const { return q_end(0); }
  // The margin an output-side plane needs before quotient 0: a tap may shift a real input's quotient
  // (at least pad / stride) down by up to max_shift.
  int64_t margin() const { return std::max<int64_t>(0, max_shift() - pad / stride); }
};

inline Axis rows(const ConvGeometry& g) {
  return {g.in_h, g.out_h, g.stride_h, g.pad_h, g.dilation_h, g.kernel_h};
}
inline Axis cols(const ConvGeometry& g) {
  return {g.in_w, g.out_w, g.stride_w, g.pad_w, g.dilation_w, g.kernel_w};
}
inline int64_t phases(const ConvGeometry& g) { return g.stride_h * g.stride_w; }
inline int64_t tap_phase(const ConvGeometry& g, const KeptTap& tap) {
  return rows(g).phase(tap.ky) * g.stride_w + cols(g).phase(tap.kx);
}

// The input split into phase planes (per channel stride_h * stride_w of them), each zero outside the
// input: output (oy, ox) reads position (oy * pitch + ox) + tap_shift of its tap's phase plane. One slack
// row lets runs over whole rows (columns past out_w are computed and discarded) stay inside.
struct InputPhases {
  int64_t rows, pitch;
  explicit InputPhases(const ConvGeometry& g)
      : rows(g.out_h + planes::rows(g).max_shift() + 1), pitch(g.out_w + cols(g).max_shift()) {}
  int64_t size() const { return rows * pitch; }
  int64_t channel_size(const ConvGeometry& g) const { return phases(g) * size(); }
  // Offset of a kept weight's (flat index) source run: its input channel, its phase plane, its shift.
  int64_t offset(const ConvGeometry& g, int64_t flat) const {
    const KeptTap tap = g.decode(flat);
    return g.input_channel(flat) * channel_size(g) + tap_phase(g, tap) * size() + planes::rows(g).shift(tap.ky) * pitch +
           cols(g).shift(tap.kx);
  }
};

// Fill the phase planes of channels [0, channels) of one sample x [C, H, W]; dst must be zeroed once.
template <typename scalar_t, typename math_t>
void load_input_phases(const scalar_t* x, int64_t channels, const ConvGeometry& g, const InputPhases& layout,
                       math_t* dst) {
  const Axis ry = rows(g), rx = cols(g);
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t a = 0; a < g.stride_h; ++a) {
      for (int64_t b = 0; b < g.stride_w; ++b) {
        math_t* plane = dst + c * layout.channel_size(g) + (a * g.stride_w + b) * layout.size();
        for (int64_t i = 0; i < layout.rows; ++i) {
          const int64_t iy = ry.input(i, a);
          const bool row_inside = iy >= 0 && iy < g.in_h;
          for (int64_t j = 0; j < layout.pitch; ++j) {
            const int64_t ix = rx.input(j, b);
            plane[i * layout.pitch + j] = row_inside && ix >= 0 && ix < g.in_w
                                              ? static_cast<math_t>(x[(c * g.in_h + iy) * g.in_w + ix])
                                              : math_t(0);
          }
        }
      }
    }
  }
}

// Output-side planes, indexed by input quotients: quotient (qy, qx) sits at (qy + top) * pitch + qx + left,
// for the quotients of real inputs (Axis::q_begin .. q_end),
// and reaches output (qy - shift_y, qx - shift_x) through a tap, at that position minus tap_shift. Output
// (oy, ox) itself sits at (oy + top) * pitch + ox + left. Used as the event path's accumulators and as the
// zero-padded output gradient that the input gradient reads.
struct OutputPlane {
  int64_t top, left, rows, pitch;
  explicit OutputPlane(const ConvGeometry& g)
      : top(planes::rows(g).margin()),
        left(cols(g).margin()),
        rows(std::max(planes::rows(g).quotients(), g.out_h) + top + 1),
        pitch(std::max(cols(g).quotients(), g.out_w) + left) {}
  int64_t size() const { return rows * pitch; }
  int64_t at(int64_t y, int64_t x) const { return (y + top) * pitch + x + left; }
  int64_t tap_shift(const ConvGeometry& g, const KeptTap& tap) const {
    return planes::rows(g).shift(tap.ky) * pitch + cols(g).shift(tap.kx);
  }
};

// Place one sample's output-shaped planes ([C, out_h, out_w]) into zeroed OutputPlanes.
template <typename scalar_t, typename math_t>
void load_outputs(const scalar_t* src, int64_t channels, const ConvGeometry& g, const OutputPlane& layout,
                  math_t* dst) {
  for (int64_t c = 0; c < channels; ++c) {
    for (int64_t oy = 0; oy < g.out_h; ++oy) {
      math_t* row = dst + c * layout.size() + layout.at(oy, 0);
      const scalar_t* in = src + (c * g.out_h + oy) * g.out_w;
      for (int64_t ox = 0; ox < g.out_w; ++ox) row[ox] = static_cast<math_t>(in[ox]);
    }
  }
}

// The kept weights of each input channel split by phase: those of (channel c, phase r) are
// flat[ptr[c * phases + r] .. ptr[c * phases + r + 1]).
struct PhaseGroups {
  std::vector<int64_t> ptr;
  std::vector<int64_t> flat;
};

inline PhaseGroups group_by_phase(const int64_t* in_ptr, const int64_t* in_flat, const ConvGeometry& g) {
  const int64_t count = phases(g);
  const int64_t kept = in_ptr[g.in_channels];
  PhaseGroups groups;
  if (count == 1) {
    groups.ptr.assign(in_ptr, in_ptr + g.in_channels + 1);
    groups.flat.assign(in_flat, in_flat + kept);
    return groups;
  }
  std::vector<int64_t> phase(kept);
  at::parallel_for(0, kept, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) phase[k] = tap_phase(g, g.decode(in_flat[k]));
  });
  groups.ptr.assign(g.in_channels * count + 1, 0);
  groups.flat.resize(kept);
  for (int64_t c = 0; c < g.in_channels; ++c) {
    for (int64_t k = in_ptr[c]; k < in_ptr[c + 1]; ++k) ++groups.ptr[c * count + phase[k] + 1];
  }
  for (size_t i = 1; i < groups.ptr.size(); ++i) groups.ptr[i] += groups.ptr[i - 1];
  std::vector<int64_t> cursor(groups.ptr.begin(), groups.ptr.end() - 1);
  for (int64_t c = 0; c < g.in_channels; ++c) {
    for (int64_t k = in_ptr[c]; k < in_ptr[c + 1]; ++k) groups.flat[cursor[c * count + phase[k]]++] = in_flat[k];
  }
  return groups;
}

// f(k) for every kept weight k, split across threads (decoding a flat index costs a few divisions).
template <typename F>
void for_each_kept(int64_t kept, const F& f) {
  at::parallel_for(0, kept, 2048, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) f(k);
  });
}

// Work items (sample, chunk of channels), so that a small batch still spreads over the threads; a thread
// loads a sample's planes once for consecutive items of the same sample.
inline int64_t channel_chunks(int64_t channels) {
  return std::max<int64_t>(1, std::min<int64_t>(channels, at::get_num_threads()));
}

}  // namespace planes
}  // namespace ndsnn
