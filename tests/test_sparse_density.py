"""Building blocks of the sparsity engine: per-layer densities (uniform, ERK), schedules, exact-count masks."""

from __future__ import annotations

import math

import pytest
import torch

from ndsnn.sparse.density import erk_densities, erk_raw_score, kept_counts, layer_densities, uniform_densities
from ndsnn.sparse.masks import magnitude_mask, random_mask, top_k_mask
from ndsnn.sparse.schedule import cosine_drop_fraction, cubic_density

VGG_LIKE = [(64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3), (256, 128, 3, 3), (512, 256, 3, 3), (10, 512)]


@pytest.mark.parametrize("density", [0.01, 0.1, 0.5, 0.9])
def test_erk_keeps_the_budget_and_follows_the_formula(density):
    densities = erk_densities(VGG_LIKE, density)
    sizes = [math.prod(s) for s in VGG_LIKE]
    kept = sum(d * n for d, n in zip(densities, sizes, strict=True))
    assert kept == pytest.approx(density * sum(sizes), rel=1e-9)
    assert all(0.0 < d <= 1.0 for d in densities)
    free = [i for i, d in enumerate(densities) if d < 1.0]
    ratios = [densities[i] / erk_raw_score(VGG_LIKE[i]) for i in free]
    assert max(ratios) == pytest.approx(min(ratios), rel=1e-9)  # one scale for every layer not made dense


def test_erk_makes_small_layers_dense_at_high_density():
    densities = erk_densities(VGG_LIKE, 0.5)
    assert densities[0] == 1.0  # 3-channel first layer: its ERK score would exceed 1
    assert densities[4] < densities[3] < 1.0
    sparse = erk_densities(VGG_LIKE, 0.05)
    assert sparse[4] < sparse[3] < sparse[2] < sparse[1] < 1.0  # wider layers: sparser


def test_uniform_and_named_distributions():
    assert uniform_densities(VGG_LIKE, 0.2) == [0.2] * len(VGG_LIKE)
    assert layer_densities(VGG_LIKE, 0.2, "uniform") == [0.2] * len(VGG_LIKE)
    assert layer_densities(VGG_LIKE, 0.2, "erk") == erk_densities(VGG_LIKE, 0.2)
    with pytest.raises(ValueError, match="distribution must be one of uniform, erk"):
        layer_densities(VGG_LIKE, 0.2, "normal")


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan"), "0.5"])
def test_density_outside_range_is_refused(bad):
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]"):
        erk_densities(VGG_LIKE, bad)


def test_kept_counts_are_whole_and_at_least_one():
    counts = kept_counts([(10, 10), (3, 1)], [0.123, 0.01])
    assert counts == [12, 1]


def test_cubic_density_decreases_from_initial_to_final():
    values = [cubic_density(t, 0.5, 0.01, start=10, end=110) for t in range(0, 130)]
    assert values[0] == values[10] == pytest.approx(0.5)
    assert values[110] == values[-1] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))
    assert cubic_density(60, 0.5, 0.01, 10, 110) == pytest.approx(0.01 + 0.49 * 0.5**3)


def test_cosine_drop_fraction():
    assert cosine_drop_fraction(0, 0.3, 100) == pytest.approx(0.3)
    assert cosine_drop_fraction(50, 0.3, 100) == pytest.approx(0.15)
    assert cosine_drop_fraction(100, 0.3, 100) == 0.0


@pytest.mark.parametrize("kept", [0, 1, 17, 60])
def test_masks_keep_exact_counts(kept):
    weight = torch.randn(6, 10)
    assert random_mask(weight.shape, kept, torch.Generator().manual_seed(0)).sum() == kept
    mask = magnitude_mask(weight, kept)
    assert mask.sum() == kept
    if 0 < kept < weight.numel():
        assert weight.abs()[mask].min() >= weight.abs()[~mask].max()


def test_top_k_mask_rejects_bad_counts():
    with pytest.raises(ValueError, match=r"kept must be an integer in \[0, 4\]"):
        top_k_mask(torch.randn(2, 2), 5)
