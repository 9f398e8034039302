// One block of LIF neurons under a constant input current, forward and backward over all steps: the loops the
// CPU kernels of lif_repeated (csrc/cpu/lif_repeated_cpu.cpp) and of lif_repeated followed by max pooling
// (csrc/cpu/lif_repeated_pool_cpu.cpp) share. Blocks hold at most kBlock neurons.
#pragma once

#include <cstdint>

#include <ATen/OpMathType.h>

#include "../lif_repeated.h"
#include "lif_block.h"

namespace ndsnn {
namespace cpu {

// The settings of one call in the arithmetic type.
template <typename math_t>
struct RepeatedSettings {
  math_t v_reset;
  math_t alpha;
  bool hard_reset;
  bool decay_input;
  bool detach_reset;

  template <typename Args>
  static RepeatedSettings from(const Args& a) {
    return {a.v_reset, a.alpha, a.hard_reset, a.decay_input, a.detach_reset};
  }
};

// Spikes of a block of `count` neurons with input x: calls on_step(t, fired) for t = 0..steps-1, fired[j] 0 or 1.
template <typename math_t, typename OnStep>
inline void fire_repeated_block(const math_t* x, const BlockParams<math_t>& params, int64_t steps, int64_t count,
                                const RepeatedSettings<math_t>& s, const OnStep& on_step) {
  math_t v[kBlock];
  math_t fired[kBlock];
  const math_t v_start = s.hard_reset ? s.v_reset : math_t(0);
  for (int64_t j = 0; j < count; ++j) v[j] = v_start;
  for (int64_t t = 0; t < steps; ++t) {
    for (int64_t j = 0; j < count; ++j) {
      const math_t th = params.v_threshold[j];
      const math_t h = lif_charge<math_t>(v[j], x[j], params.tau[j], s.v_reset, s.decay_input);
      const bool spike = h >= th;
      fired[j] = spike ? math_t(1) : math_t(0);
      v[j] = lif_reset<math_t>(h, spike, th, s.v_reset, s.hard_reset);
    }
    on_step(t, static_cast<const math_t*>(fired));
  }
}

// One step of charging: h = the potential before the spike decision, v updated past it. Every pointer is
// restrict-qualified: with h possibly aliasing the others, GCC does not vectorise the loop.
template <typename math_t>
inline void charge_step(const math_t* __restrict__ x, const math_t* __restrict__ tau,
                        const math_t* __restrict__ v_threshold, math_t* __restrict__ v, math_t* __restrict__ h,
                        int64_t count, const RepeatedSettings<math_t>& s) {
  const math_t v_reset = s.v_reset;
  const bool hard_reset = s.hard_reset, decay_input = s.decay_input;
  for (int64_t j = 0; j < count; ++j) {
    const math_t th = v_threshold[j];
    const math_t value = lif_charge<math_t>(v[j], x[j], tau[j], v_reset, decay_input);
    h[j] = value;
    v[j] = lif_reset<math_t>(value, value >= th, th, v_reset, hard_reset);
  }
}

// h_t of one block for every step, as forward computes them: h[t * stride + j].
template <typename math_t>
inline void charge_repeated_block(const math_t* x, const BlockParams<math_t>& params, math_t* h, int64_t stride,
                                  int64_t steps, int64_t count, const RepeatedSettings<math_t>& s) {
  math_t v[kBlock];
  const math_t v_start = s.hard_reset ? s.v_reset : math_t(0);
  for (int64_t j = 0; j < count; ++j) v[j] = v_start;
  for (int64_t t = 0; t < steps; ++t) charge_step(x, params.tau, params.v_threshold, v, h + t * stride, count, s);
}

// What backward of a block returns per neuron: the input's gradient (summed over the steps) and the
// per-neuron partial gradients of tau and v_threshold (written only when asked for).
template <typename math_t>
struct RepeatedBlockGrad {
  math_t* grad_x;
  math_t* grad_tau;  // nullptr: not asked for
  math_t* grad_v_threshold;
};

// Backward through all steps of one block, from its membrane potentials h_at(t) (charge_repeated_block) and
// its spike gradients spike_grad(t) at each step t (count values each).
template <Surrogate S, typename math_t, typename SpikeGrad, typename Charge>
inline void backward_repeated_block(const math_t* x, const BlockParams<math_t>& params, int64_t steps, int64_t count,
                                    const RepeatedSettings<math_t>& s, const SpikeGrad& spike_grad,
                                    const Charge& h_at, const RepeatedBlockGrad<math_t>& out) {
  const auto mode = ResetMode<math_t>::make(s.hard_reset, s.detach_reset);
  const math_t v_start = s.hard_reset ? s.v_reset : math_t(0);
  const math_t charge_reset = s.hard_reset ? s.v_reset : math_t(0);
  math_t input_divisor[kBlock];  // tau with decay_input (x enters as x / tau), else 1
  math_t keep[kBlock];           // dh_t / dv_{t-1} = 1 - 1 / tau
  math_t grad_v[kBlock];
  math_t grad_x[kBlock];
  math_t acc_tau[kBlock];
  math_t acc_th[kBlock];
  math_t grad_h_total[kBlock];
  for (int64_t j = 0; j < count; ++j) {
    input_divisor[j] = s.decay_input ? params.tau[j] : math_t(1);
    keep[j] = math_t(1) - math_t(1) / params.tau[j];
    grad_v[j] = 0;
    grad_x[j] = 0;
    acc_tau[j] = 0;
    acc_th[j] = 0;
  }
  const bool tau_grad = out.grad_tau != nullptr;
  for (int64_t t = steps - 1; t >= 0; --t) {
    const math_t* __restrict__ h = h_at(t);
    const math_t* __restrict__ gs = spike_grad(t);
    for (int64_t j = 0; j < count; ++j) {
      const LifStepGrad<math_t> g =
          lif_step_grad<S, math_t>(h[j], params.v_threshold[j], gs[j], math_t(0), grad_v[j], s.v_reset, s.alpha, mode);
      grad_x[j] += g.h;  // divided by the input divisor once, after the last step
      acc_th[j] += g.threshold;
      grad_v[j] = g.h * keep[j];
      grad_h_total[j] = g.h;
    }
    if (!tau_grad) continue;
    // Leak gradient: needs v_{t-1}, from h_{t-1} and its spike.
    const math_t* h_prev = t > 0 ? h_at(t - 1) : nullptr;
    for (int64_t j = 0; j < count; ++j) {
      math_t v_prev = v_start;
      if (h_prev != nullptr) {
        const math_t hp = h_prev[j];
        const math_t th = params.v_threshold[j];
        v_prev = lif_reset<math_t>(hp, hp >= th, th, s.v_reset, s.hard_reset);
      }
      acc_tau[j] += grad_h_total[j] * lif_dh_dtau<math_t>(h[j], v_prev, params.tau[j], charge_reset, s.decay_input);
    }
  }
  for (int64_t j = 0; j < count; ++j) out.grad_x[j] = grad_x[j] / input_divisor[j];
  if (tau_grad) {
    for (int64_t j = 0; j < count; ++j) out.grad_tau[j] = acc_tau[j];
  }
  if (out.grad_v_threshold != nullptr) {
    for (int64_t j = 0; j < count; ++j) out.grad_v_threshold[j] = acc_th[j];
  }
}

}  // namespace cpu
}  // namespace ndsnn
