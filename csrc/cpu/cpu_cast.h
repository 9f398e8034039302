// Element types, 16-bit float conversions and block helpers shared by the CPU kernels (LIF, batch norm + LIF).
// Header-only; everything is inline or a template in ndsnn::cpu.
#pragma once

#include <cstdint>
#include <type_traits>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace ndsnn {
namespace cpu {

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

}  // namespace cpu
}  // namespace ndsnn
