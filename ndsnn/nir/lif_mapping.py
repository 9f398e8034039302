"""ndsnn's discrete LIF neuron as NIR's continuous LIF, and back.

NIR:   tau dv/dt = (v_leak - v) + r I;  z = (v > v_threshold);  v <- v_reset after a spike.
ndsnn: h_t = v_{t-1} + (x_t - (v_{t-1} - v_reset)) / tau_steps           (decay_input=True)
       h_t = v_{t-1} - (v_{t-1} - v_reset) / tau_steps + x_t             (decay_input=False)
       s_t = (h_t >= v_threshold);  v_t = v_reset after a spike, else h_t;  v_0 = v_reset.

One forward-Euler step of length dt of NIR's equation is v + (dt / tau) (v_leak - v + r x). It equals ndsnn's
charge with tau = tau_steps * dt, v_leak = v_reset, and r = 1 (decay_input=True) or r = tau_steps
(decay_input=False). So the graph stores tau in seconds for a step of dt seconds (DEFAULT_DT = 1e-4 s, the
step snnTorch's and Norse's importers assume).

The spike conditions differ at equality: ndsnn fires at h >= v_threshold, NIR at v > v_threshold. For float32
membranes (ndsnn's arithmetic) h >= t is exactly h > (the float32 just below t), so the export writes that
value and the import reads a NIR threshold t as ndsnn's next float32 above t. What cannot agree exactly is
listed in docs/nir.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..nn import LIF
from ..ops.surrogate import SURROGATES
from .errors import require_nir, unsupported
from .modules import Fire

DEFAULT_DT = 1e-4


def _per_neuron(value: float | torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """A per-layer or per-channel parameter as a float64 array of the neurons' shape (channels first)."""
    if isinstance(value, torch.Tensor):
        array = value.detach().double().cpu().numpy().reshape(-1)
        if array.size == 1:
            return np.full(shape, array[0])
        return np.broadcast_to(array.reshape((-1,) + (1,) * (len(shape) - 1)), shape).copy()
    return np.full(shape, float(value))


def nir_threshold(threshold: np.ndarray) -> np.ndarray:
    """NIR's threshold (fire at v > it) for ndsnn's (fire at h >= it): the float32 just below, as float64."""
    below = np.nextafter(np.asarray(threshold, dtype=np.float32), np.float32(-np.inf))
    return below.astype(np.float64)


def ndsnn_threshold(threshold: np.ndarray) -> np.ndarray:
    """ndsnn's threshold for NIR's: the float32 just above (inverts nir_threshold for float32 values)."""
    above = np.nextafter(np.asarray(threshold, dtype=np.float32), np.float32(np.inf))
    return above.astype(np.float64)


def lif_to_nir(lif: LIF, shape: tuple[int, ...], dt: float, where: str) -> Any:
    """A nir.LIF for the neurons of `lif` whose input frames have `shape` (without batch)."""
    nir = require_nir()
    if lif.v_reset is None:
        raise unsupported(where, "LIF(v_reset=None)", "NIR's LIF resets to v_reset; soft reset (subtracting "
                          "the threshold) has no NIR form. Train with a hard reset (v_reset a number)")  # fmt: skip
    tau_steps = _per_neuron(lif.tau, shape)
    v_reset = np.full(shape, float(lif.v_reset))
    return nir.LIF(
        tau=tau_steps * dt,
        r=np.ones(shape) if lif.decay_input else tau_steps.copy(),
        v_leak=v_reset.copy(),
        v_threshold=nir_threshold(_per_neuron(lif.v_threshold, shape)),
        v_reset=v_reset,
        metadata={"surrogate": lif.surrogate, "detach_reset": bool(lif.detach_reset)},
    )


def fire_to_nir(fire: Fire, shape: tuple[int, ...], dt: float) -> Any:
    """A nir.LIF with tau = dt (no memory) computing `fire`."""
    nir = require_nir()
    threshold = nir_threshold(_per_neuron(fire.v_threshold, shape))
    return nir.LIF(tau=np.full(shape, float(dt)), r=_per_neuron(fire.r, shape), v_leak=_per_neuron(fire.v_leak, shape),
                   v_threshold=threshold, v_reset=np.zeros(shape))  # fmt: skip


def _collapse(array: np.ndarray, where: str, name: str) -> float | torch.Tensor:
    """A per-neuron array as one number, or one value per channel (axis 0) if it varies across channels."""
    array = np.asarray(array, dtype=np.float64)
    flat = array.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return float(flat[0])
    channels = array.reshape(array.shape[0], -1) if array.ndim else array.reshape(1, 1)
    if np.all(channels == channels[:, :1]):
        return torch.tensor(channels[:, 0], dtype=torch.float64)
    raise unsupported(where, "nir.LIF", f"{name} varies within a channel; ndsnn's LIF has one per layer or channel")


def _as_float32_tensor(value: float | torch.Tensor) -> float | torch.Tensor:
    return value.float() if isinstance(value, torch.Tensor) else value


def nir_to_lif(node: Any, dt: float, where: str) -> LIF | Fire:
    """The ndsnn module for a nir.LIF node: LIF(tau = tau / dt), or Fire when tau equals dt."""
    tau_steps = np.asarray(node.tau, dtype=np.float64) / dt
    r = np.asarray(node.r, dtype=np.float64)
    if np.allclose(tau_steps, 1.0, rtol=1e-9, atol=0):
        parameters = ((ndsnn_threshold(node.v_threshold), "v_threshold"), (r, "r"), (node.v_leak, "v_leak"))
        return Fire(*(_as_float32_tensor(_collapse(value, where, name)) for value, name in parameters))
    if not np.all(tau_steps > 1.0):
        raise unsupported(where, "nir.LIF", f"tau / dt must be > 1 (or exactly 1), got min {tau_steps.min():.6g} "
                          f"for dt = {dt:g} s; ndsnn's discrete LIF needs tau > 1 step")  # fmt: skip
    if np.allclose(r, 1.0, rtol=1e-9, atol=0):
        decay_input = True
    elif np.allclose(r, tau_steps, rtol=1e-9, atol=0):
        decay_input = False
    else:
        raise unsupported(where, "nir.LIF", "r must be 1 (ndsnn's decay_input=True) or tau / dt (decay_input=False)")
    v_reset = _collapse(node.v_reset, where, "v_reset")
    if isinstance(v_reset, torch.Tensor):
        raise unsupported(where, "nir.LIF", "v_reset differs between neurons; ndsnn's LIF has one per layer")
    if not np.array_equal(np.asarray(node.v_leak, dtype=np.float64), np.full(np.shape(node.v_leak), v_reset)):
        raise unsupported(where, "nir.LIF", "v_leak must equal v_reset: ndsnn's membrane decays toward v_reset")
    tau = _collapse(tau_steps, where, "tau")
    threshold = _collapse(ndsnn_threshold(node.v_threshold), where, "v_threshold")
    channels = next((p.numel() for p in (tau, threshold) if isinstance(p, torch.Tensor)), None)
    metadata = getattr(node, "metadata", None) or {}
    options: dict[str, Any] = {}
    if metadata.get("surrogate") in SURROGATES:  # training options ndsnn keeps beside the NIR parameters
        options["surrogate"] = str(metadata["surrogate"])
    if "detach_reset" in metadata:
        options["detach_reset"] = bool(metadata["detach_reset"])
    lif = LIF(tau=tau if not isinstance(tau, torch.Tensor) else 2.0,
              v_threshold=threshold if not isinstance(threshold, torch.Tensor) else 1.0,
              v_reset=v_reset, decay_input=decay_input, num_channels=channels, **options)  # fmt: skip
    if isinstance(tau, torch.Tensor):
        lif.tau_values.copy_(tau.float())
    elif channels is not None:
        lif.tau_values.fill_(tau)
    if isinstance(threshold, torch.Tensor):
        lif.threshold_values.copy_(threshold.float())
    elif channels is not None:
        lif.threshold_values.fill_(threshold)
    return lif
