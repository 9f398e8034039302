"""The kept-weight index of a mask: what the sparse kernels read instead of the mask, cached on the mask tensor.

The mask is the truth. An index is reused only while the mask holds exactly the values it was built from:
an in-place change through the tensor moves its version counter, and a change the counter cannot see
(through ``mask.data``, a numpy view, DLPack or another alias of its memory) is caught by comparing the mask
with the snapshot taken when the index was built. The comparison reads the mask once as 64-bit words (about
0.1 ms per million weights on one CPU core, against milliseconds for the convolution it guards); on a CUDA
device it costs one synchronisation, and the dispatcher asks for an index only where it may run the kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_CACHE_ATTRIBUTE = "_ndsnn_kept_index"


@dataclass(frozen=True)
class KeptIndex:
    """Flat indices of the kept weights, grouped by output channel and by input channel."""

    out_ptr: torch.Tensor  # [C_out + 1] int64
    out_flat: torch.Tensor  # [kept] int64, ascending
    in_ptr: torch.Tensor  # [C_in + 1] int64
    in_flat: torch.Tensor  # [kept] int64, grouped by input channel

    @property
    def kept(self) -> int:
        return self.out_flat.numel()


@dataclass(frozen=True)
class _Cached:
    key: tuple
    snapshot: torch.Tensor  # the mask's values when the index was built, flat
    index: KeptIndex


def build_kept_index(mask: torch.Tensor, groups: int) -> KeptIndex:
    """The index of a bool mask [C_out, C_in / groups, KH, KW] (or [out, in] of a linear layer, read as 1x1);
    O(mask size)."""
    out_channels, in_per_group, kh, kw = mask.shape if mask.dim() == 4 else (*mask.shape, 1, 1)
    taps = in_per_group * kh * kw
    out_flat = mask.reshape(-1).nonzero().reshape(-1)
    per_output = torch.bincount(out_flat // taps, minlength=out_channels)
    out_ptr = torch.cat([out_flat.new_zeros(1), per_output.cumsum(0)])
    output = out_flat // taps
    in_channel = (output // (out_channels // groups)) * in_per_group + (out_flat % taps) // (kh * kw)
    order = torch.argsort(in_channel, stable=True)
    in_flat = out_flat[order].contiguous()
    per_input = torch.bincount(in_channel, minlength=in_per_group * groups)
    in_ptr = torch.cat([out_flat.new_zeros(1), per_input.cumsum(0)])
    return KeptIndex(out_ptr.contiguous(), out_flat.contiguous(), in_ptr.contiguous(), in_flat)


def _as_words(flat: torch.Tensor) -> torch.Tensor:
    """A flat bool tensor's bytes as int64 words where its size and alignment allow (a faster comparison)."""
    raw = flat.view(torch.uint8)
    if raw.numel() % 8 == 0 and raw.storage_offset() % 8 == 0:
        return raw.view(torch.int64)
    return raw


def same_values(mask: torch.Tensor, snapshot: torch.Tensor) -> bool:
    """Whether `mask` still holds the values of the flat `snapshot` taken from it."""
    return torch.equal(_as_words(mask.reshape(-1)), _as_words(snapshot))


def kept_index(mask: torch.Tensor, groups: int) -> KeptIndex:
    """The index of `mask` as it is now: the cached one when the mask's values are those it was built from,
    else a new one (then cached on the mask)."""
    key = (mask.data_ptr(), tuple(mask.shape), mask.device, groups)
    cached: _Cached | None = getattr(mask, _CACHE_ATTRIBUTE, None)
    if cached is not None and cached.key == key and same_values(mask, cached.snapshot):
        return cached.index
    index = build_kept_index(mask, groups)
    setattr(mask, _CACHE_ATTRIBUTE, _Cached(key, mask.detach().reshape(-1).clone(), index))
    setattr(mask, _COUNT_ATTRIBUTE, ((mask.data_ptr(), mask._version, tuple(mask.shape)), index.kept))
    return index


_COUNT_ATTRIBUTE = "_ndsnn_kept_count"


def kept_count(mask: torch.Tensor) -> int:
    """The number of kept weights, cached on the mask by its version counter: what the dispatcher's density
    bucket needs on every call, for a tuple comparison instead of a pass over the mask. A change the counter
    cannot see may leave it stale; it only steers a choice of path, and the kernels read the index, which
    kept_index checks against the mask's values (the dispatcher decides again when the two disagree)."""
    key = (mask.data_ptr(), mask._version, tuple(mask.shape))
    cached = getattr(mask, _COUNT_ATTRIBUTE, None)
    if cached is not None and cached[0] == key:
        return cached[1]
    count = int(torch.count_nonzero(mask))
    setattr(mask, _COUNT_ATTRIBUTE, (key, count))
    return count


def cached_index(mask: torch.Tensor) -> KeptIndex | None:
    """The index cached on `mask`, valid or not (for tests and diagnostics)."""
    cached: _Cached | None = getattr(mask, _CACHE_ATTRIBUTE, None)
    return cached.index if cached is not None else None
