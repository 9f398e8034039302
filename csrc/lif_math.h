// LIF neuron arithmetic shared by the CPU and CUDA kernels, so both compute the same numbers.
//
// Semantics (SpikingJelly's LIFNode, multi-step):
//   decay_input:  h_t = v_{t-1} + (x_t - (v_{t-1} - v_reset)) / tau
//   otherwise:    h_t = v_{t-1} - (v_{t-1} - v_reset) / tau + x_t
//   s_t = (h_t >= v_threshold)
//   hard reset:   v_t = s_t ? v_reset : h_t          soft reset: v_t = h_t - v_threshold * s_t
// with v_0 = v_reset (0 for soft reset, where v_reset is also taken as 0 in the charge).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include <c10/macros/Macros.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>
#include <c10/util/Half.h>

namespace ndsnn {

enum class Surrogate : int { ATan = 0, Sigmoid = 1, Triangle = 2, Rectangle = 3, SoftSign = 4 };

inline Surrogate surrogate_from_name(const std::string& name) {
  if (name == "atan") return Surrogate::ATan;
  if (name == "sigmoid") return Surrogate::Sigmoid;
  if (name == "triangle") return Surrogate::Triangle;
  if (name == "rectangle") return Surrogate::Rectangle;
  if (name == "soft_sign") return Surrogate::SoftSign;
  TORCH_CHECK(false, "ndsnn.lif: surrogate must be one of atan, sigmoid, triangle, rectangle, soft_sign; got '",
              name, "'");
}

// d/du of the surrogate spike function at u = h - v_threshold (SpikingJelly's formulas).
template <Surrogate S, typename T>
C10_HOST_DEVICE inline T surrogate_grad(T u, T alpha) {
  if constexpr (S == Surrogate::ATan) {
    const T a = alpha / T(2);
    const T z = T(3.14159265358979323846) * a * u;
    return a / (T(1) + z * z);
  } else if constexpr (S == Surrogate::Sigmoid) {
#ifdef __CUDA_ARCH__
    const T sig = T(1) / (T(1) + ::exp(-alpha * u));
#else
    const T sig = T(1) / (T(1) + std::exp(-alpha * u));
#endif
    return alpha * (T(1) - sig) * sig;
  } else if constexpr (S == Surrogate::Triangle) {
    const T au = u < T(0) ? -u : u;
    return au > T(1) / alpha ? T(0) : alpha - alpha * alpha * au;
  } else if constexpr (S == Surrogate::Rectangle) {
    const T au = u < T(0) ? -u : u;
    return au < T(0.5) / alpha ? alpha : T(0);
  } else {
    const T au = u < T(0) ? -u : u;
    const T d = T(1) / alpha + au;
    return T(1) / (T(2) * alpha * d * d);
  }
}

// Charge: the membrane potential before the spike decision.
template <typename T>
C10_HOST_DEVICE inline T lif_charge(T v_prev, T x, T tau, T v_reset, bool decay_input) {
  return decay_input ? v_prev + (x - (v_prev - v_reset)) / tau : v_prev - (v_prev - v_reset) / tau + x;
}

// Reset: the membrane potential after the spike decision.
template <typename T>
C10_HOST_DEVICE inline T lif_reset(T h, bool spike, T v_threshold, T v_reset, bool hard_reset) {
  return hard_reset ? (spike ? v_reset : h) : (spike ? h - v_threshold : h);
}

// Gradients of one time step, walking backward: the total gradient reaching h_t (from the spike output,
// an optional gradient on h itself, and the next step through the reset) and this step's share of the
// v_threshold gradient. grad_v is dL/dv_t carried back from step t+1. The reset mode enters as 0/1 numbers
// (multiplying by exactly 0 or 1 is exact) so that the CPU loops over neurons have no branches to vectorise.
template <typename T>
struct LifStepGrad {
  T h;          // dL/dh_t
  T threshold;  // contribution to dL/dv_threshold
};

template <typename T>
struct ResetMode {
  T hard;     // 1: hard reset, 0: soft reset
  T through;  // 1: the reset passes gradient through the spike, 0: detach_reset
  static C10_HOST_DEVICE ResetMode make(bool hard_reset, bool detach_reset) {
    return {hard_reset ? T(1) : T(0), detach_reset ? T(0) : T(1)};
  }
};

template <Surrogate S, typename T>
C10_HOST_DEVICE inline LifStepGrad<T> lif_step_grad(T h, T v_threshold, T grad_spike, T grad_h_out, T grad_v,
                                                    T v_reset, T alpha, ResetMode<T> mode) {
  const T spike = h >= v_threshold ? T(1) : T(0);
  const T sg = surrogate_grad<S, T>(h - v_threshold, alpha);
  const T through_spike = sg * mode.through;  // ds/dh as seen by the reset
  // hard: v = s ? v_reset : h        soft: v = h - v_threshold * s
  const T hard_dv_dh = (T(1) - spike) + (v_reset - h) * through_spike;
  const T soft_dv_dh = T(1) - v_threshold * through_spike;
  const T hard_dv_dth = -(v_reset - h) * through_spike;
  const T soft_dv_dth = -spike + v_threshold * through_spike;
  const T soft = T(1) - mode.hard;
  const T dv_dh = mode.hard * hard_dv_dh + soft * soft_dv_dh;
  const T dv_dth = mode.hard * hard_dv_dth + soft * soft_dv_dth;
  return {grad_spike * sg + grad_h_out + grad_v * dv_dh, -grad_spike * sg + grad_v * dv_dth};
}

// dh_t/dtau given the membrane potential after the previous step's reset.
template <typename T>
C10_HOST_DEVICE inline T lif_dh_dtau(T h, T v_prev, T tau, T charge_reset, bool decay_input) {
  return decay_input ? -(h - v_prev) / tau : (v_prev - charge_reset) / (tau * tau);
}

// Storage of h for backward, rounded so that (stored >= v_threshold) reproduces the forward's spike exactly.
// Rounding to a 16-bit type could otherwise flip a spike for h within half an ulp of the threshold.
template <typename S>
struct SpikeConsistentStore {
  template <typename T>
  C10_HOST_DEVICE static S store(T h, bool, T) {
    return static_cast<S>(h);
  }
};

template <typename Bits16>
C10_HOST_DEVICE inline Bits16 step_toward(Bits16 value, bool upward) {
  // One ulp up or down for a 16-bit float stored as sign-magnitude bits.
  Bits16 out = value;
  const uint16_t bits = value.x;
  const bool negative = (bits & 0x8000u) != 0;
  const uint16_t magnitude = bits & 0x7fffu;
  uint16_t result;
  if (magnitude == 0) {
    result = upward ? uint16_t(0x0001u) : uint16_t(0x8001u);
  } else if (upward != negative) {
    result = uint16_t(bits + 1u);  // away from zero
  } else {
    result = uint16_t(bits - 1u);  // toward zero
  }
  out.x = result;
  return out;
}

template <typename Bits16>
struct SpikeConsistentStore16 {
  template <typename T>
  C10_HOST_DEVICE static Bits16 store(T h, bool spike, T v_threshold) {
    Bits16 r = static_cast<Bits16>(static_cast<float>(h));
    const bool stored_spike = static_cast<T>(static_cast<float>(r)) >= v_threshold;
    if (stored_spike != spike) r = step_toward(r, spike);
    return r;
  }
};

template <>
struct SpikeConsistentStore<c10::Half> : SpikeConsistentStore16<c10::Half> {};
template <>
struct SpikeConsistentStore<c10::BFloat16> : SpikeConsistentStore16<c10::BFloat16> {};

// Per-neuron parameter: a number, a one-element tensor, or one value per channel of x[t] viewed as
// [N, C, inner]. Tensors are read through a pointer so a device-resident parameter never forces a sync.
template <typename T>
struct ChannelParam {
  const T* values;  // nullptr: use `value`
  T value;
  bool per_channel;
  C10_HOST_DEVICE inline T at(int64_t channel) const {
    return values ? values[per_channel ? channel : 0] : value;
  }
};

}  // namespace ndsnn
