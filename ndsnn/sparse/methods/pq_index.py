"""PQ-index rewiring (Shen, Xu, Pan and Chen, ICLR 2025, "Improving the sparse structure learning of spiking
neural networks from the view of compression efficiency"): each update measures how compressible a layer's
kept weights are with the PQ index of Diao et al. (ICLR 2023) and rewires, and shrinks, it in proportion.
The density is thus adaptive: it falls where a layer is compressible and stays where it is not.

Sparse from scratch: the masks start at ``init_density`` (default 0.5, the start of this library's NDSNN, so
that runs compare) spread over layers by ``distribution`` (ERK default), random or by magnitude
(``mask_init``). Every ``update_interval`` steps until ``stop_step() = int(stop_fraction * total_steps)``
(stop_fraction default 0.75, RigL's; total_steps is required), for each layer (``scope="layer"``, default)
or for each output neuron / channel, a row of the weight viewed as [out, -1] (``scope="neuron"``):

1. Stage 1, how much to rewire. With d kept weights w,
   PQI_{p,q}(w) = 1 - d^(1/q - 1/p) * ||w||_p / ||w||_q   (0 < p < q; p = 0.5, q = 1 by default, Diao's),
   which is 0 for weights of equal magnitude and 1 - d^(1/q - 1/p) for a single non-zero one; PQI = 0 when
   d = 0 or all kept weights are zero. The compressible count is
   m = d * (1 + eta)^(-q / (q - p)) * (1 - PQI)^(q p / (q - p))   (eta default 0, Diao's bound at no slack),
   and the rewiring ratio c = clamp(gamma * (1 - m / d), 0, beta) (gamma default 1). beta defaults to 0.3, not
   Diao's 0.9: Diao prunes once per 200-epoch training round, while here the ratio applies every
   update_interval steps, so it is capped at RigL's largest drop fraction.
2. Stage 2, rewire. Prune the n = floor(c * d) kept weights of smallest magnitude (of each row, n_i, with
   scope "neuron") and regrow round(regrow_share * n) (regrow_share default 0.5; with scope "neuron" chosen
   over the whole layer) at pruned positions, just-pruned ones included, of highest ``grow_criterion`` score:
   "momentum" (default: the running mean of the dense gradient, steadier than one batch's gradient),
   "gradient" (RigL's) or "random" (SET's). Grown weights start at zero and count among the d kept weights
   of the next update (raising its index until they have trained: use an update_interval long enough for that,
   100 steps by default). The net removal is (1 - regrow_share) * n.
3. Floor: a layer never ends an update below its target count at the final density 1 - ``sparsity``
   (``kept_targets(self.density)``): when the net removal would cross it, as many weights are still pruned but
   more are regrown (n - (kept - floor)). ``sparsity`` is therefore the largest sparsity reached; the final one
   is adaptive and is read from the layers' density.

The log of each update holds, per layer, "pqi" and "ratio" (the mean over rows that have kept weights with
scope "neuron"), "dropped" and "grown"; the base class adds "density". The method keeps no state beyond the
base class's.
"""

from __future__ import annotations

import torch

from .base import ScheduledMethod

Number = float | torch.Tensor


def _check_pq(p: float, q: float) -> None:
    if not 0.0 < p < q:
        raise ValueError(f"p and q must satisfy 0 < p < q, got p={p!r}, q={q!r}")


def pq_index(weights: torch.Tensor, p: float = 0.5, q: float = 1.0, dim: int | None = None,
             mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """PQI_{p,q} of weights (all of them, or along `dim`; only where `mask` is True if given): 0 when the
    magnitudes are equal, up to 1 - d^(1/q - 1/p) when one weight carries everything; 0 for no or all-zero
    weights. Float64, as the counts derived from it should not depend on float32 rounding."""
    _check_pq(p, q)
    w = weights.detach().abs().to(torch.float64)
    if dim is None:
        w = w.reshape(-1)
        mask = None if mask is None else mask.reshape(-1)
        dim = 0
    if mask is None:
        d = torch.full_like(w.sum(dim), w.shape[dim])
    else:
        w = w * mask
        d = mask.sum(dim).to(torch.float64)
    peak = w.amax(dim, keepdim=True)  # the index is scale-free: normalising keeps the powers in range
    w = w / torch.where(peak > 0, peak, 1.0)
    norm_p = (w**p).sum(dim) ** (1.0 / p)
    norm_q = (w**q).sum(dim) ** (1.0 / q)
    valid = (d > 0) & (norm_q > 0)
    ratio = norm_p / torch.where(valid, norm_q, 1.0)
    index = 1.0 - d.clamp(min=1.0) ** (1.0 / q - 1.0 / p) * ratio
    return torch.where(valid, index, 0.0).clamp(min=0.0)


def compressible_count(d: Number, pqi: Number, p: float = 0.5, q: float = 1.0, eta: float = 0.0) -> Number:
    """m = d (1 + eta)^(-q/(q-p)) (1 - PQI)^(qp/(q-p)): how many of d weights carry the layer (Diao et al.)."""
    _check_pq(p, q)
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta!r}")
    rest = 1.0 - pqi
    rest = rest.clamp(min=0.0) if isinstance(rest, torch.Tensor) else max(0.0, rest)
    return d * (1.0 + eta) ** (-q / (q - p)) * rest ** (q * p / (q - p))


def rewiring_ratio(d: Number, m: Number, gamma: float = 1.0, beta: float = 0.3) -> Number:
    """c = clamp(gamma (1 - m / d), 0, beta): the fraction of the d kept weights to prune (0 when d = 0)."""
    if isinstance(d, torch.Tensor) or isinstance(m, torch.Tensor):
        d = torch.as_tensor(d, dtype=torch.float64, device=m.device if isinstance(m, torch.Tensor) else None)
        raw = gamma * (1.0 - m / d.clamp(min=1.0))
        return torch.where(d > 0, raw, 0.0).clamp(0.0, beta)
    if d <= 0:
        return 0.0
    return min(beta, max(0.0, gamma * (1.0 - m / d)))


def smallest_per_row(values: torch.Tensor, mask: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Bool mask selecting, in each row of `values` [rows, cols], the counts[row] smallest entries where mask is
    True (ties by position)."""
    key = torch.where(mask, values, torch.inf)
    order = key.argsort(dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(values.shape[1], device=values.device).expand_as(order))
    return (rank < counts.unsqueeze(1)) & mask


class PQIndex(ScheduledMethod):
    """Adaptive-density rewiring driven by each layer's (or neuron's) PQ index; see the module docstring."""

    name = "pq_index"

    GROW_CRITERIA = ("momentum", "gradient", "random")
    SCOPES = ("layer", "neuron")

    def __init__(self, *args, init_density: float = 0.5, p: float = 0.5, q: float = 1.0, eta: float = 0.0,
                 gamma: float = 1.0, beta: float = 0.3, regrow_share: float = 0.5, scope: str = "layer",
                 grow_criterion: str = "momentum", stop_fraction: float = 0.75, **kwargs) -> None:  # fmt: skip
        _check_pq(p, q)
        checks = (
            ("eta", eta, eta >= 0, ">= 0"),
            ("gamma", gamma, gamma > 0, "> 0"),
            ("beta", beta, 0 < beta <= 1, "in (0, 1]"),
            ("regrow_share", regrow_share, 0 <= regrow_share <= 1, "in [0, 1]"),
            ("init_density", init_density, 0 < init_density <= 1, "in (0, 1]"),
        )
        for label, value, ok, rule in checks:
            if not ok:
                raise ValueError(f"{label} must be {rule}, got {value!r}")
        if scope not in self.SCOPES:
            raise ValueError(f"scope must be one of {', '.join(self.SCOPES)}; got {scope!r}")
        if grow_criterion not in self.GROW_CRITERIA:
            raise ValueError(f"grow_criterion must be one of {', '.join(self.GROW_CRITERIA)}; got {grow_criterion!r}")
        self.p, self.q, self.eta, self.gamma, self.beta = p, q, eta, gamma, beta
        self.regrow_share, self.scope, self.grow_criterion = regrow_share, scope, grow_criterion
        super().__init__(*args, init_density=init_density, stop_fraction=stop_fraction, **kwargs)

    def wants_dense_gradient(self) -> bool:
        return self.grow_criterion == "gradient"

    def tracks_gradient_momentum(self) -> bool:
        return self.grow_criterion == "momentum"

    def _layer_plan(self, weight: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, int, torch.Tensor]:
        """Whole-layer PQI, ratio, prune count and drop score (magnitude)."""
        pqi = pq_index(weight, self.p, self.q, mask=mask)
        d = mask.sum().to(torch.float64)
        ratio = rewiring_ratio(d, compressible_count(d, pqi, self.p, self.q, self.eta), self.gamma, self.beta)
        return float(pqi), float(ratio), int(torch.floor(ratio * d)), weight.detach().abs()

    def _neuron_plan(self, weight: torch.Tensor, mask: torch.Tensor) -> tuple[float, float, int, torch.Tensor]:
        """Per-row PQI and prune counts; the drop score is 0 at the chosen weights and 1 elsewhere, so that
        drop_and_grow, which keeps the highest scores, prunes exactly them."""
        rows, row_mask = weight.detach().abs().reshape(weight.shape[0], -1), mask.reshape(weight.shape[0], -1)
        d = row_mask.sum(1).to(torch.float64)
        pqi = pq_index(rows, self.p, self.q, dim=1, mask=row_mask)
        ratio = rewiring_ratio(d, compressible_count(d, pqi, self.p, self.q, self.eta), self.gamma, self.beta)
        counts = torch.floor(ratio * d).long()
        chosen = smallest_per_row(rows, row_mask, counts)
        live = d > 0
        mean_pqi = float(pqi[live].mean()) if live.any() else 0.0
        mean_ratio = float(ratio[live].mean()) if live.any() else 0.0
        return mean_pqi, mean_ratio, int(counts.sum()), (~chosen).to(weight.dtype).view(weight.shape)

    def update(self) -> dict:
        plans, pqis, ratios = [], {}, {}
        for (name, layer), floor in zip(self.layers, self.kept_targets(self.density), strict=True):
            mask = layer.weight_mask
            kept = int(mask.sum())
            plan = self._layer_plan if self.scope == "layer" else self._neuron_plan
            pqis[name], ratios[name], n_drop, drop_score = plan(layer.weight, mask)
            self.decision_ops += mask.numel()  # the index's pass over the layer (plus the ranking in drop_and_grow)
            n_grow = max(round(self.regrow_share * n_drop), n_drop - (kept - min(floor, kept)))
            plans.append((layer, n_drop, n_grow, drop_score, self.score(name, layer, self.grow_criterion)))
        counts = self.drop_and_grow(plans)
        return {
            "pqi": pqis,
            "ratio": ratios,
            **self.counts_record(counts),
        }
