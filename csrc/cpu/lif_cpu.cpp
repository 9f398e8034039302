// Fused multi-step LIF on the CPU: neurons in blocks across threads, the time loop innermost per block, so
// the membrane state of a block stays in a small local array and each step is one vectorisable pass.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../lif.h"

namespace ndsnn {
namespace {

constexpr int64_t kBlock = 256;

// Element types and conversions for the CPU loops. 16-bit floats are handled as raw uint16_t bits with block
// conversions: GCC does not vectorise accesses through c10::BFloat16 / c10::Half's struct member, nor their
// branchy scalar conversions.
template <typename T>
struct CpuCast {
  using raw = T;
  using math_t = at::opmath_type<T>;
  static inline math_t load(T value) { return static_cast<math_t>(value); }
  static inline T store(math_t value) { return static_cast<T>(value); }
  static inline void load_block(const T* src, math_t* dst, int64_t count) {
    for (int64_t j = 0; j < count; ++j) dst[j] = load(src[j]);
  }
  static inline void store_values(const math_t* src, T* dst, int64_t count) {
    for (int64_t j = 0; j < count; ++j) dst[j] = store(src[j]);
  }
  // Spikes (0/1) and h; in 32/64-bit h is stored exactly, so it reproduces the spikes as it is.
  static inline void store_block(const math_t* h, const math_t* threshold, T* spikes, T* h_out, int64_t count) {
    for (int64_t j = 0; j < count; ++j) {
      spikes[j] = h[j] >= threshold[j] ? T(1) : T(0);
      h_out[j] = h[j];
    }
  }
};

// float <-> bit pattern through a union (GCC documents union type punning): GCC 12 vectorises this, but not
// a memcpy/bit_cast of a computed value.
union FloatBits {
  float f[kBlock];
  uint32_t u[kBlock];
};

// bfloat16: the upper half of a float; rounding to nearest even in integer arithmetic.
struct BFloat16Format {
  static constexpr uint32_t kOne = 0x3f80u;
  static inline float scalar_to_float(uint16_t bits) { return c10::detail::f32_from_bits(bits); }
  static inline void to_float(const uint16_t* src, float* dst, int64_t count) {
    FloatBits staged;
    for (int64_t j = 0; j < count; ++j) staged.u[j] = static_cast<uint32_t>(src[j]) << 16;
    for (int64_t j = 0; j < count; ++j) dst[j] = staged.f[j];
  }
  static inline void from_float(const float* src, uint16_t* dst, int64_t count) {
    FloatBits value;
    for (int64_t j = 0; j < count; ++j) value.f[j] = src[j];
    for (int64_t j = 0; j < count; ++j) {
      const uint32_t bits = value.u[j];
      const uint32_t nearest = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
      const uint32_t nan = 0u - static_cast<uint32_t>((bits & 0x7fffffffu) > 0x7f800000u);
      dst[j] = static_cast<uint16_t>((nan & 0x7fc0u) | (~nan & nearest));
    }
  }
};

#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) inline void half_to_float_f16c(const uint16_t* src, float* dst, int64_t count) {
  int64_t j = 0;
  for (; j + 8 <= count; j += 8) {
    _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j))));
  }
  for (; j < count; ++j) dst[j] = c10::detail::fp16_ieee_to_fp32_value(src[j]);
}

__attribute__((target("avx,f16c"))) inline void float_to_half_f16c(const float* src, uint16_t* dst, int64_t count) {
  int64_t j = 0;
  for (; j + 8 <= count; j += 8) {
    const __m128i half = _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j), half);
  }
  for (; j < count; ++j) dst[j] = c10::detail::fp16_ieee_from_fp32_value(src[j]);
}

inline bool cpu_has_f16c() {
  static const bool has = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return has;
}
#endif

// IEEE half: the F16C conversion instructions where the CPU has them (checked at run time), else c10's.
struct HalfFormat {
  static constexpr uint32_t kOne = 0x3c00u;
  static inline float scalar_to_float(uint16_t bits) { return c10::detail::fp16_ieee_to_fp32_value(bits); }
  static inline void to_float(const uint16_t* src, float* dst, int64_t count) {
#if defined(__x86_64__)
    if (cpu_has_f16c()) return half_to_float_f16c(src, dst, count);
#endif
    for (int64_t j = 0; j < count; ++j) dst[j] = c10::detail::fp16_ieee_to_fp32_value(src[j]);
  }
  static inline void from_float(const float* src, uint16_t* dst, int64_t count) {
#if defined(__x86_64__)
    if (cpu_has_f16c()) return float_to_half_f16c(src, dst, count);
#endif
    for (int64_t j = 0; j < count; ++j) dst[j] = c10::detail::fp16_ieee_from_fp32_value(src[j]);
  }
};

// 16-bit storage through a Format's block conversions.
template <typename Format>
struct CpuCast16 {
  using raw = uint16_t;
  static inline float load(uint16_t value) { return Format::scalar_to_float(value); }
  static inline void load_block(const uint16_t* src, float* dst, int64_t count) { Format::to_float(src, dst, count); }
  static inline void store_values(const float* src, uint16_t* dst, int64_t count) {
    Format::from_float(src, dst, count);
  }
  // Spikes, and h rounded to nearest even but one ulp toward the spike's side where rounding crossed the
  // threshold (as SpikeConsistentStore: both formats are sign-magnitude, so a step is +-1 on the bits).
  // Integer masks, no branches and no 32-bit multiplies (SSE2 has none), so the loop vectorises.
  static inline void store_block(const float* h, const float* threshold, uint16_t* spikes, uint16_t* h_out,
                                 int64_t count) {
    uint16_t rounded_bits[kBlock];
    float rounded[kBlock];
    Format::from_float(h, rounded_bits, count);
    Format::to_float(rounded_bits, rounded, count);
    for (int64_t j = 0; j < count; ++j) {
      const uint32_t up = h[j] >= threshold[j] ? 1u : 0u;
      const uint32_t bits = rounded_bits[j];
      const uint32_t crossed = 0u - ((rounded[j] >= threshold[j] ? 1u : 0u) ^ up);
      const uint32_t sign = bits >> 15;
      const uint32_t is_zero = 0u - static_cast<uint32_t>((bits & 0x7fffu) == 0);
      const uint32_t stepped = bits + ((up ^ sign) << 1) - 1u;  // away from zero when up == positive
      const uint32_t from_zero = 0x8001u - (up << 15);           // +/- smallest subnormal
      const uint32_t fixed = (is_zero & from_zero) | (~is_zero & stepped);
      h_out[j] = static_cast<uint16_t>((crossed & fixed) | (~crossed & bits));
      spikes[j] = static_cast<uint16_t>(up * Format::kOne);
    }
  }
};

template <>
struct CpuCast<c10::BFloat16> : CpuCast16<BFloat16Format> {};
template <>
struct CpuCast<c10::Half> : CpuCast16<HalfFormat> {};

template <typename T>
using Raw = typename CpuCast<T>::raw;

template <typename T>
inline Raw<T>* raw_ptr(T* p) {
  return reinterpret_cast<Raw<T>*>(p);
}
template <typename T>
inline const Raw<T>* raw_ptr(const T* p) {
  return reinterpret_cast<const Raw<T>*>(p);
}
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

// A block of elements as arithmetic-type values: the data itself when it already has that type, else
// converted into `buffer`.
template <typename T>
inline const at::opmath_type<T>* as_math(const Raw<T>* src, at::opmath_type<T>* buffer, int64_t count) {
  if constexpr (std::is_same_v<Raw<T>, at::opmath_type<T>>) {
    return src;
  } else {
    CpuCast<T>::load_block(src, buffer, count);
    return buffer;
  }
}

// Where to write arithmetic-type results destined for `dst`: dst itself when the types agree, else `buffer`
// (then converted with CpuCast<T>::store_values).
template <typename T>
inline at::opmath_type<T>* math_output(Raw<T>* dst, at::opmath_type<T>* buffer) {
  if constexpr (std::is_same_v<Raw<T>, at::opmath_type<T>>) {
    return dst;
  } else {
    return buffer;
  }
}

// Writes one block-step of spikes (input dtype) and h (saved dtype).
template <typename scalar_t, typename store_t>
inline void store_forward_block(const at::opmath_type<scalar_t>* h, const at::opmath_type<scalar_t>* threshold,
                                Raw<scalar_t>* spikes, Raw<store_t>* h_out, int64_t count) {
  if constexpr (std::is_same_v<scalar_t, store_t>) {
    CpuCast<scalar_t>::store_block(h, threshold, spikes, h_out, count);
  } else {
    Raw<store_t> ignored[kBlock];
    Raw<scalar_t> spikes_unused[kBlock];
    CpuCast<store_t>::store_block(h, threshold, ignored, h_out, count);
    CpuCast<scalar_t>::store_block(h, threshold, spikes, spikes_unused, count);
  }
}

template <typename scalar_t, typename store_t>
void forward_cpu_kernel(const Raw<scalar_t>* __restrict__ x, Raw<scalar_t>* __restrict__ spikes,
                        Raw<store_t>* __restrict__ h_out,
                        const LifLayout layout,
                        const ChannelParam<at::opmath_type<scalar_t>> tau,
                        const ChannelParam<at::opmath_type<scalar_t>> v_threshold,
                        const at::opmath_type<scalar_t> v_reset, const bool hard_reset, const bool decay_input) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t neurons = layout.neurons;
  const int64_t blocks = (neurons + kBlock - 1) / kBlock;
  at::parallel_for(0, blocks, kBlocksPerTask, [&](int64_t block_begin, int64_t block_end) {
    BlockParams<math_t> params;
    math_t v[kBlock];
    math_t x_in[kBlock];
    math_t h_block[kBlock];
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t first = block * kBlock;
      const int64_t count = std::min(kBlock, neurons - first);
      load_block_params(params, tau, v_threshold, layout, first, count);
      const math_t v_start = hard_reset ? v_reset : math_t(0);
      for (int64_t j = 0; j < count; ++j) v[j] = v_start;
      for (int64_t t = 0; t < layout.steps; ++t) {
        const int64_t offset = t * neurons + first;
        CpuCast<scalar_t>::load_block(x + offset, x_in, count);
        for (int64_t j = 0; j < count; ++j) {
          const math_t th = params.v_threshold[j];
          const math_t h = lif_charge<math_t>(v[j], x_in[j], params.tau[j], v_reset, decay_input);
          h_block[j] = h;
          v[j] = lif_reset<math_t>(h, h >= th, th, v_reset, hard_reset);
        }
        store_forward_block<scalar_t, store_t>(h_block, params.v_threshold, spikes + offset, h_out + offset, count);
      }
    }
  });
}

// Backward over one block of neurons, one time step: the branch-free part every call needs. Returns dL/dh
// per neuron in `grad_h_total` for the optional leak-gradient pass.
template <Surrogate S, bool HasGradH, typename scalar_t, typename store_t, typename math_t>
inline void backward_block_step(const Raw<scalar_t>* __restrict__ gs_t, const Raw<store_t>* __restrict__ gh_t,
                                const Raw<store_t>* __restrict__ h_t, Raw<scalar_t>* __restrict__ gx_t,
                                const BlockParams<math_t>& params, const math_t* __restrict__ input_divisor,
                                const math_t* __restrict__ keep, math_t* __restrict__ grad_v,
                                math_t* __restrict__ acc_th, math_t* __restrict__ grad_h_total, int64_t count,
                                math_t v_reset, math_t alpha, ResetMode<math_t> mode) {
  math_t h_buffer[kBlock];
  math_t gs_buffer[kBlock];
  math_t gh_buffer[kBlock];
  math_t gx_buffer[kBlock];
  const math_t* __restrict__ h = as_math<store_t>(h_t, h_buffer, count);
  const math_t* __restrict__ gs = as_math<scalar_t>(gs_t, gs_buffer, count);
  const math_t* __restrict__ gh = HasGradH ? as_math<store_t>(gh_t, gh_buffer, count) : nullptr;
  math_t* __restrict__ gx = math_output<scalar_t>(gx_t, gx_buffer);
  for (int64_t j = 0; j < count; ++j) {
    const math_t gh_out = HasGradH ? gh[j] : math_t(0);
    const LifStepGrad<math_t> g =
        lif_step_grad<S, math_t>(h[j], params.v_threshold[j], gs[j], gh_out, grad_v[j], v_reset, alpha, mode);
    gx[j] = g.h / input_divisor[j];
    acc_th[j] += g.threshold;
    grad_v[j] = g.h * keep[j];
    grad_h_total[j] = g.h;
  }
  if (gx != reinterpret_cast<math_t*>(gx_t)) CpuCast<scalar_t>::store_values(gx, gx_t, count);
}

template <Surrogate S, typename scalar_t, typename store_t>
void backward_cpu_kernel(const Raw<scalar_t>* grad_spikes, const Raw<store_t>* grad_h, const Raw<store_t>* h_seq,
                         Raw<scalar_t>* grad_x,
                         at::opmath_type<scalar_t>* grad_tau, at::opmath_type<scalar_t>* grad_v_threshold,
                         const LifLayout layout, const ChannelParam<at::opmath_type<scalar_t>> tau,
                         const ChannelParam<at::opmath_type<scalar_t>> v_threshold,
                         const at::opmath_type<scalar_t> v_reset, const bool hard_reset, const bool decay_input,
                         const bool detach_reset, const at::opmath_type<scalar_t> alpha) {
  using math_t = at::opmath_type<scalar_t>;
  const int64_t neurons = layout.neurons;
  const int64_t blocks = (neurons + kBlock - 1) / kBlock;
  const math_t v_start = hard_reset ? v_reset : math_t(0);
  const math_t charge_reset = hard_reset ? v_reset : math_t(0);
  const auto mode = ResetMode<math_t>::make(hard_reset, detach_reset);
  at::parallel_for(0, blocks, kBlocksPerTask, [&](int64_t block_begin, int64_t block_end) {
    BlockParams<math_t> params;
    math_t input_divisor[kBlock];  // tau with decay_input (x enters as x / tau), else 1
    math_t keep[kBlock];           // dh_t / dv_{t-1} = 1 - 1 / tau
    math_t grad_v[kBlock];
    math_t grad_h_total[kBlock];
    math_t acc_tau[kBlock];
    math_t acc_th[kBlock];
    for (int64_t block = block_begin; block < block_end; ++block) {
      const int64_t first = block * kBlock;
      const int64_t count = std::min(kBlock, neurons - first);
      load_block_params(params, tau, v_threshold, layout, first, count);
      for (int64_t j = 0; j < count; ++j) {
        input_divisor[j] = decay_input ? params.tau[j] : math_t(1);
        keep[j] = math_t(1) - math_t(1) / params.tau[j];
        grad_v[j] = 0;
        acc_tau[j] = 0;
        acc_th[j] = 0;
      }
      for (int64_t t = layout.steps - 1; t >= 0; --t) {
        const int64_t offset = t * neurons + first;
        const Raw<store_t>* h_t = h_seq + offset;
        if (grad_h) {
          backward_block_step<S, true, scalar_t, store_t>(grad_spikes + offset, grad_h + offset, h_t, grad_x + offset,
                                                          params, input_divisor, keep, grad_v, acc_th, grad_h_total,
                                                          count, v_reset, alpha, mode);
        } else {
          backward_block_step<S, false, scalar_t, store_t>(grad_spikes + offset, grad_h, h_t, grad_x + offset, params,
                                                           input_divisor, keep, grad_v, acc_th, grad_h_total, count,
                                                           v_reset, alpha, mode);
        }
        if (!grad_tau) continue;
        // Leak gradient: needs v_{t-1}, rebuilt from h_{t-1} and its spike.
        const Raw<store_t>* h_prev = h_t - neurons;
        for (int64_t j = 0; j < count; ++j) {
          const math_t th = params.v_threshold[j];
          math_t v_prev = v_start;
          if (t > 0) {
            const math_t hp = CpuCast<store_t>::load(h_prev[j]);
            v_prev = lif_reset<math_t>(hp, hp >= th, th, v_reset, hard_reset);
          }
          const math_t h = CpuCast<store_t>::load(h_t[j]);
          acc_tau[j] += grad_h_total[j] * lif_dh_dtau<math_t>(h, v_prev, params.tau[j], charge_reset, decay_input);
        }
      }
      for (int64_t j = 0; j < count; ++j) {
        if (grad_tau) grad_tau[first + j] = acc_tau[j];
        if (grad_v_threshold) grad_v_threshold[first + j] = acc_th[j];
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> lif_forward_cpu(const at::Tensor& x, const std::optional<at::Tensor>& tau,
                                                   const std::optional<at::Tensor>& v_threshold, double tau_value,
                                                   double v_threshold_value, std::optional<double> v_reset,
                                                   bool decay_input, bool /*detach_reset*/,
                                                   c10::string_view surrogate, double alpha,
                                                   std::optional<at::ScalarType> saved_dtype) {
  return lif_forward_host(x, tau, v_threshold, tau_value, v_threshold_value, v_reset, decay_input, surrogate, alpha,
                          saved_dtype, [](const auto& a) {
                            using Args = std::decay_t<decltype(a)>;
                            forward_cpu_kernel<typename Args::scalar, typename Args::store>(
                                raw_ptr(a.x), raw_ptr(a.spikes), raw_ptr(a.h), a.layout, a.tau, a.v_threshold,
                                a.v_reset, a.hard_reset, a.decay_input);
                          });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lif_backward_cpu(
    const at::Tensor& grad_spikes, const std::optional<at::Tensor>& grad_h, const at::Tensor& h,
    const std::optional<at::Tensor>& tau, const std::optional<at::Tensor>& v_threshold, double tau_value,
    double v_threshold_value, std::optional<double> v_reset, bool decay_input, bool detach_reset,
    c10::string_view surrogate, double alpha, bool tau_grad, bool v_threshold_grad) {
  return lif_backward_host(
      grad_spikes, grad_h, h, tau, v_threshold, tau_value, v_threshold_value, v_reset, decay_input, detach_reset,
      surrogate, alpha, tau_grad, v_threshold_grad, [](auto surrogate_tag, const auto& a) {
        using Args = std::decay_t<decltype(a)>;
        backward_cpu_kernel<decltype(surrogate_tag)::value, typename Args::scalar, typename Args::store>(
            raw_ptr(a.grad_spikes), raw_ptr(a.grad_h), raw_ptr(a.h), raw_ptr(a.grad_x), a.grad_tau,
            a.grad_v_threshold, a.layout, a.tau, a.v_threshold, a.v_reset, a.hard_reset, a.decay_input,
            a.detach_reset, a.alpha);
      });
}

}  // namespace

TORCH_LIBRARY_IMPL(ndsnn, CPU, m) {
  m.impl("lif_forward", &lif_forward_cpu);
  m.impl("lif_backward", &lif_backward_cpu);
}

}  // namespace ndsnn
