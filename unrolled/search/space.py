"""The design-space search space as Optuna parameters (docs/spec.md §8), and architectures as data.

One decision per Optuna parameter, so that trials are stored, queried and resumed by Optuna:

* ``g{k}_{i}`` (``1 <= i < k < K``): categorical ``(0, 1)``, the extra connection from ``x^(i)``
  into layer ``k + 1`` (``gates[k][i]`` of :mod:`unrolled.models.design_space`); the diagonal
  is fixed on and ``x^(0) = 0`` carries nothing, so neither is a decision. ``(K-1)(K-2)/2``
  decisions: 105 at K = 16.
* ``n{k}`` (``0 <= k < K``): categorical ``soft | relu | leaky``, the neuron of layer ``k + 1``.
* ``injection`` (only when the space includes it): ``lwa | naive | momentum``.

An *architecture* is the ``lwa`` model's config fields ``{K, gates, neurons, injection}``
(:func:`arch_from_params`): ``unrolled train --model lwa --arch FILE`` re-trains one stored
with :func:`save_arch`. The *average architecture* of the paper (§2.3) keeps a connection
when at least half of the top-k have it; per layer it keeps the most frequent neuron.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from optuna.distributions import BaseDistribution, CategoricalDistribution

from ..errors import check
from ..io import write_text
from ..models.design_space import INJECTIONS, NEURONS, arch_from_params, check_gates, extra_connections, parse_neurons
from ..models.design_space import load_arch as load_arch

KEEP = 0.5  # the paper's threshold of the average architecture


@dataclass(frozen=True)
class Space:
    """The decisions at depth ``K``; ``injections`` the modes searched (one: fixed, not a decision);
    ``neurons`` the neuron types searched (``("soft",)``: connectivity only)."""

    K: int = 16
    neurons: tuple[str, ...] = NEURONS
    injections: tuple[str, ...] = ("lwa",)

    def __post_init__(self) -> None:
        check(self.K >= 1, f"K={self.K} must be >= 1")
        check(self.neurons and set(self.neurons) <= set(NEURONS),
              f"neurons {list(self.neurons)} must be from {', '.join(NEURONS)}")
        check(self.injections and set(self.injections) <= set(INJECTIONS),
              f"injections {list(self.injections)} must be from {', '.join(INJECTIONS)}")

    @property
    def gates(self) -> list[tuple[int, int]]:
        """The searchable connections ``(k, i)``, row by row."""
        return [(k, i) for k in range(2, self.K) for i in range(1, k)]

    def distributions(self) -> dict[str, BaseDistribution]:
        """Every decision's name and Optuna distribution, in the controller's order."""
        d: dict[str, BaseDistribution] = {f"g{k}_{i}": CategoricalDistribution((0, 1)) for k, i in self.gates}
        if len(self.neurons) > 1:
            d.update({f"n{k}": CategoricalDistribution(self.neurons) for k in range(self.K)})
        if len(self.injections) > 1:
            d["injection"] = CategoricalDistribution(self.injections)
        return d

    def suggest(self, trial) -> dict:
        """Ask ``trial`` (an Optuna trial) for every decision; its architecture."""
        params = {name: trial.suggest_categorical(name, dist.choices) for name, dist in self.distributions().items()}
        return self.arch(params)

    def arch(self, params: dict) -> dict:
        """The architecture (``lwa`` config fields) of a trial's parameters."""
        return arch_from_params(params, self.K, self.neurons[0], self.injections[0])

    def record(self) -> dict:
        return {"K": self.K, "neurons": list(self.neurons), "injections": list(self.injections)}

    @classmethod
    def from_record(cls, d: dict) -> Space:
        return cls(int(d["K"]), tuple(d["neurons"]), tuple(d["injections"]))


def params_from_arch(arch: dict, space: Space) -> dict:
    """The Optuna parameters of an architecture (the inverse of :meth:`Space.arch`)."""
    K = space.K
    gates, neurons = check_gates(arch["gates"], K), parse_neurons(arch.get("neurons", "soft"), K)
    params: dict = {f"g{k}_{i}": gates[k][i] for k, i in space.gates}
    if len(space.neurons) > 1:
        params.update({f"n{k}": neurons[k] for k in range(K)})
    if len(space.injections) > 1:
        params["injection"] = arch.get("injection", "lwa")
    return params


def gate_frequency(archs: list[dict]) -> list[list[float]]:
    """Per connection ``[k][i]``: the fraction of ``archs`` that have it (the paper's Figure 2)."""
    check(archs, "no architecture to average: the study has no completed trial")
    K = archs[0]["K"]
    return [[sum(a["gates"][k][i] for a in archs) / len(archs) for i in range(K)] for k in range(K)]


def neuron_counts(archs: list[dict]) -> list[dict[str, int]]:
    """Per layer: how many of ``archs`` use each neuron type."""
    K = archs[0]["K"]
    per = [parse_neurons(a["neurons"], K) for a in archs]
    return [{name: sum(p[k] == name for p in per) for name in NEURONS} for k in range(K)]


def average_arch(archs: list[dict]) -> dict:
    """The average architecture: a connection kept when ``>= KEEP`` of ``archs`` have it; per layer
    the most frequent neuron (ties: the order soft, relu, leaky); the most frequent injection."""
    freq = gate_frequency(archs)
    K = archs[0]["K"]
    gates = [[int(i == k or (i > 0 and freq[k][i] >= KEEP)) for i in range(K)] for k in range(K)]
    counts = neuron_counts(archs)
    neurons = ",".join(max(NEURONS, key=lambda name, c=c: (c[name], -NEURONS.index(name))) for c in counts)
    injection = Counter(a.get("injection", "lwa") for a in archs).most_common(1)[0][0]
    return {"K": K, "gates": check_gates(gates, K), "neurons": neurons, "injection": injection}


def describe(arch: dict) -> str:
    """``42 extra connections, neurons 16 soft`` (one line)."""
    names = Counter(parse_neurons(arch["neurons"], arch["K"]))
    return (f"{extra_connections(arch['gates'])} extra connections, neurons "
            + ", ".join(f"{names[n]} {n}" for n in NEURONS if names[n]) + f", injection {arch['injection']}")


def save_arch(path: str | Path, arch: dict, **info) -> Path:
    """Write ``arch`` (and ``info``: where it came from) as JSON, atomically."""
    write_text(Path(path), json.dumps({**info, **arch}, indent=1) + "\n")
    return Path(path)
