"""Analyses that are not plain per-layer NMSE, and the model hooks of the design-space grids.

Each analysis returns long-format rows (``quantity, layer, value, std`` or scatter points
``panel, x, y``) that the report and the figure read back from the results table:

* ``correlation`` (NA-ALISTA Fig. 1): ``||x*||_1`` against ``u = ||W^T A x*||_1`` for sparse and
  dense ``x*``, and ``u^(i)`` against the true error ``||x^(j) - x*||_1`` along ALISTA iterates.
* ``thresholds`` (NA-ALISTA Fig. 5): per layer, the ratio ``theta/gamma`` that NA-ALISTA
  predicts per sample against the l1 error of the iterate it is applied to.
* ``slista-steps`` (learning-step-sizes poster): SLISTA's learned steps against ``1/L`` and
  ``1/L_S`` of the current support, and its gain over ISTA at the same lambda and depth.

Hooks: :func:`random_architecture` samples design-space gates and neurons from a seeded
generator; :func:`prune_side_connections` removes LISTA's side connections (appendix A.4).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import metrics, solvers
from ..analytic import analytic_weights, coherence
from ..errors import check
from ..models import build
from ..models.design_space import NEURONS
from . import robust


def pearson(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def l1(v: Tensor) -> Tensor:
    return v.abs().sum(1)


@dataclass
class Context:
    """What an analysis sees: the cell's problem and test set, the trained model (or None)."""

    problem: Any
    x: Tensor  # test signals, float64
    y: Tensor
    model: Any  # a trained UnrolledNet, or None for problem-only analyses
    params: dict  # the [analysis] table with the budget's overrides
    scale: float
    seed: int
    store: Any = None  # the budget's training store (runs/repro/BUDGET/_train): analyses that train keep runs there


@dataclass
class Analysis:
    run: Callable[[Context], list[dict]]
    defaults: dict
    per_model: bool  # run once per model listed in `models`, else once per problem cell

    def check(self, table: dict, where: str) -> None:
        valid = ["name", "models", *self.defaults]
        unknown = sorted(set(table) - set(valid))
        check(not unknown, f"unknown key(s) {', '.join(unknown)} in [analysis] of {where}; valid: {', '.join(valid)}")
        check(not self.per_model or table.get("models"), f"{where}: analysis {table['name']} needs models = [...]")


# -- NA-ALISTA Fig. 1 ------------------------------------------------------------------------------


def correlation(ctx: Context) -> list[dict]:
    p, A = ctx.params, ctx.problem.A
    n, g = A.shape[1], torch.Generator().manual_seed(ctx.seed)
    W = analytic_weights(A).W
    rows = []

    def panel(name: str, xa: Tensor, xb: Tensor) -> None:
        r = pearson(xa, xb)
        rows.append(dict(quantity="pearson_r", panel=name, value=r))
        rows.extend(dict(panel=name, x=float(u), y=float(v)) for u, v in zip(xa[:p["points"]], xb[:p["points"]]))

    N = p["samples"]
    sparse = max(1, min(n, round(p["sparse"] * ctx.scale)))
    for name, k in (("a (sparse)", sparse), ("b (dense)", n)):
        keys = torch.rand(N, n, generator=g, dtype=torch.float64)
        mask = torch.zeros(N, n, dtype=torch.bool).scatter_(1, keys.topk(k, dim=1).indices, True)
        x = torch.randn(N, n, generator=g, dtype=torch.float64) * mask
        panel(name, l1(x), l1((x @ A.T) @ W))
    model = build("alista", ctx.problem, {**p["alista"], "K": max(j for _, j in p["pairs"])}, torch.float64)
    x, y = ctx.x[:N], ctx.y[:N]
    with torch.no_grad():
        its = model(y, all_layers=True)
    for letter, (i, j) in zip("cdefgh", p["pairs"]):
        u = l1((y - its[i] @ A.T) @ model.W)
        panel(f"{letter} (i={i}, j={j})", u, l1(its[j] - x))
    rows.append(dict(quantity="non-zeros of the sparse panel", value=sparse))
    return rows


# -- NA-ALISTA Fig. 5 ------------------------------------------------------------------------------


def thresholds(ctx: Context) -> list[dict]:
    model = ctx.model
    check(hasattr(model, "thresholds"), f"analysis 'thresholds' needs NA-ALISTA, got {model.name!r}")
    seen: list[tuple[Tensor, Tensor]] = []
    original = model.thresholds

    def record(t, features, state):
        gamma, theta = original(t, features, state)
        seen.append((gamma.detach(), theta.detach()))
        return gamma, theta

    dev, dt = model.A.device, model.A.dtype
    x, y = ctx.x[: ctx.params["samples"]], ctx.y[: ctx.params["samples"]]
    model.thresholds = record  # the step calls self.thresholds: record (gamma, theta) per layer
    try:
        with torch.no_grad():
            its = [v.double().cpu() for v in model(y.to(dev, dt), all_layers=True)]
    finally:
        del model.thresholds
    mu = coherence(model.W.double().cpu(), model.A.double().cpu())
    rows, ratios, errors = [], [], []
    for t, (gamma, theta) in enumerate(seen, start=1):
        ratio = (theta / gamma).double().cpu().squeeze(1)
        err = l1(its[t - 1] - x)  # the error of the iterate this (theta, gamma) acts on
        ratios.append(float(ratio.mean()))
        errors.append(float(err.mean()))
        rows += [dict(quantity="theta/gamma", layer=t, value=float(ratio.mean()), std=float(ratio.std())),
                 dict(quantity="||x^(k) - x*||_1", layer=t, value=float(err.mean()), std=float(err.std())),
                 dict(quantity="fraction with theta/gamma >= mu ||x^(k) - x*||_1", layer=t,
                      value=float((ratio >= mu * err).double().mean()))]
    rows.append(dict(quantity="pearson_r of the layer means", value=pearson(ratios, errors)))
    rows.append(dict(quantity="generalised coherence mu", value=mu))
    return rows


# -- learning-step-sizes poster ---------------------------------------------------------------------


def support_lipschitz(A: Tensor, S: Tensor, chunk: int = 50) -> Tensor:
    """``L_S = ||A_S||_2^2`` per row of the boolean ``S: (batch, n)`` (NaN for an empty support)."""
    out = []
    for lo in range(0, len(S), chunk):
        s = S[lo:lo + chunk]
        out.append(torch.linalg.matrix_norm(A[None] * s[:, None, :].to(A.dtype), ord=2) ** 2)
    LS = torch.cat(out)
    return torch.where(S.any(1), LS, torch.full_like(LS, math.nan))


def slista_steps(ctx: Context) -> list[dict]:
    model = ctx.model
    check(model.name == "slista", f"analysis 'slista-steps' needs SLISTA, got {model.name!r}")
    A = model.A.double().cpu()
    x, y = ctx.x[: ctx.params["samples"]], ctx.y[: ctx.params["samples"]]
    with torch.no_grad():
        its = [v.double().cpu() for v in model(y.to(model.A.device, model.A.dtype), all_layers=True)]
    L = solvers.lipschitz(A)
    inv_true = float(torch.nanmedian(1 / support_lipschitz(A, x != 0)))
    rows, inside = [], []
    for t in range(1, model.K + 1):
        step = float(model.layers[t - 1].s.detach())
        inv = float(torch.nanmedian(1 / support_lipschitz(A, its[t] != 0)))
        inside.append(inv <= step <= 2 * inv)
        rows += [dict(quantity="learned step s_t", layer=t, value=step), dict(quantity="1/L", layer=t, value=1 / L),
                 dict(quantity="1/L_S (S = supp x_t, median)", layer=t, value=inv),
                 dict(quantity="2/L_S", layer=t, value=2 * inv),
                 dict(quantity="1/L_S* (true support, median)", layer=t, value=inv_true)]
    ista = list(solvers.ista(A, y.double(), model.config.lam, model.K, L))
    gain = metrics.db(float(((ista[-1] - x) ** 2).sum()) / float(((its[-1] - x) ** 2).sum()))
    rows.append(dict(quantity="fraction of layers with 1/L_S <= s_t <= 2/L_S", value=sum(inside) / len(inside)))
    rows.append(dict(quantity="NMSE gain over ISTA at the same lambda and depth (dB)", value=gain))
    return rows


ANALYSES = {
    "correlation": Analysis(correlation, dict(samples=1000, points=300, sparse=15, pairs=[[5, 6], [5, 8]],
                                              alista={}), per_model=False),
    "thresholds": Analysis(thresholds, dict(samples=1000), per_model=True),
    "slista-steps": Analysis(slista_steps, dict(samples=200), per_model=True),
    "robust": Analysis(robust.robust_sweep, robust.DEFAULTS, per_model=False),  # unrolled/repro/robust.py
}


# -- design-space hooks ------------------------------------------------------------------------------


def random_architecture(K: int, seed: int, draw: int, neurons: list[str]) -> tuple[list[list[int]], str, int]:
    """Gates and neurons of a random design-space architecture: ``(gates, neurons, extra)``.

    The number of extra connections is uniform in ``0 .. (K-1)(K-2)/2`` and the
    connections themselves a uniform subset of the allowed slots (``1 <= i < k``);
    each layer's neuron is uniform over ``neurons``. Same ``(K, seed, draw)``, same architecture.
    """
    for name in neurons:
        check(name in NEURONS, f"unknown neuron {name!r}; valid: {', '.join(NEURONS)}")
    rng = np.random.default_rng([seed, draw, K])
    slots = [(k, i) for k in range(K) for i in range(1, k)]
    extra = int(rng.integers(0, len(slots) + 1))
    gates = [[int(i == k) for i in range(K)] for k in range(K)]
    for j in rng.choice(len(slots), size=extra, replace=False):
        k, i = slots[j]
        gates[k][i] = 1
    return gates, ",".join(rng.choice(neurons, size=K)), extra


def pruned_layers(K: int, seed: int, pruned: int, draw: int) -> list[int]:
    """Which side connections (layers ``2..K``; layer 1's carries ``x^(0) = 0``) are removed."""
    check(0 <= pruned <= K - 1, f"pruned={pruned} side connections: at K={K} only 0..{K - 1} can be removed")
    rng = np.random.default_rng([seed, pruned, draw, K])
    return sorted(int(t) for t in rng.choice(np.arange(2, K + 1), size=pruned, replace=False))


def prune_side_connections(model, layers: list[int]) -> None:
    """Remove the input ``alpha_k W_x x~^(k)`` of the given layers: ``alpha_k = 0``, frozen.

    The layer then computes ``sigma(W_b y)`` and ignores the previous iterate; the trainer
    skips parameters that do not require a gradient.
    """
    check(model.name == "lwa", f"pruning side connections needs the 'lwa' model, got {model.name!r}")
    with torch.no_grad():
        for t in layers:
            alpha = model.layers[t - 1].alpha
            alpha.zero_()
            alpha.requires_grad_(False)
