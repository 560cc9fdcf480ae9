"""The LISTA design space (Meng, Chen, Jiang & Wang, "A Design Space Study for LISTA and
Beyond", ICLR 2021), docs/spec.md §8: tied LISTA plus gated extra connections and per-layer neurons.

Base layer (paper eq. 4, here with 1-based layer ``t = k + 1``)::

    x^(k+1) = sigma_k(W_b y + alpha_k W_x x~^(k)),   k = 0..K-1,   x^(0) = 0

with ``W_b: (n, m)`` and ``W_x: (n, n)`` tied across layers (init ``A^T / L`` and
``I - A^T A / L``), per-layer ``alpha_k`` (init 1) and ``theta_k`` (init ``lam / L``).
Neurons ``sigma_k``: ``"soft"`` = ``eta_theta`` (with the model's support selection),
``"relu"`` = ``relu(z - theta)``, ``"leaky"`` = ``leaky_relu(z - theta, 0.1)`` (theta is a
negative bias). Support selection acts on soft-threshold layers only: a ReLU layer has
no shrinkage for the selected entries to bypass.

Gates: a K x K 0/1 matrix, ``gates[k][i] = 1`` when ``x^(i)`` feeds the input ``x~^(k)``
of layer ``k + 1`` (row = destination, column = origin, as in the paper's figures). Rules:
``i <= k`` (no gate into the future), ``gates[k][k] = 1`` (LISTA's own connection), and no
gate from ``x^(0) = 0`` except the diagonal of layer 1 (it would carry nothing). An
*extra connection* is a gate with ``i < k``; at most ``(K-1)(K-2)/2`` exist (105 at K = 16,
the paper's 2^105 connectivities); the FISTA pattern :func:`lfista_gates` has ``K - 2``
(14 at K = 16).

Injection of the gated outputs (paper §2.1 and appendix A.3):

* ``"lwa"`` (learnable weighted average, eq. 6): ``x~^(k) = sum_i g_{i,k} c_{i,k} x^(i)`` with
  unbounded learned ``c``; ``c_{k,k} = 1`` and ``c_{i,k} = 0`` (``i < k``) at
  initialisation, so every gate pattern starts as tied LISTA (the paper does not state
  its initial ``c``; FISTA's pattern is recovered by ``c_{k,k} = 1 + m_k``, ``c_{k-1,k} = -m_k``).
* ``"naive"`` (NA, appendix A.3.1): ``x~^(k)`` is the plain mean of the gated outputs; no ``c``.
* ``"momentum"`` (MM, appendix A.3.2): ``x^(k+1) = sigma_k(W_b y + alpha_k W_x x^(k)
  + sum_{i<k} g_{i,k} c_{i,k} W_{k+1-i} x^(i))`` — one matrix ``W_j`` per lag ``j >= 2`` in
  use, shared across layers (init 0: eq. 13 with ``gamma = 1``, i.e. ISTA), and a step
  ``c_{i,k}`` per extra connection (init 1, as the paper says).

With no extra connection and soft neurons every mode is tied LISTA, and at
initialisation it is ISTA with step ``1/L``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import ops
from ..errors import UsageError, check, choice
from ..problem import Problem
from .base import Config, Product, UnrolledNet, layer, register

NEURONS = ("soft", "relu", "leaky")
INJECTIONS = ("lwa", "naive", "momentum")
LEAKY_SLOPE = 0.1


def lista_gates(K: int) -> list[list[int]]:
    """The identity pattern: no extra connection (tied LISTA)."""
    return [[int(i == k) for i in range(K)] for k in range(K)]


def lfista_gates(K: int) -> list[list[int]]:
    """FISTA's pattern: layer ``k + 1`` also sees ``x^(k-1)`` for ``k >= 2`` (``K - 2`` extra connections)."""
    return [[int(i == k or (k >= 2 and i == k - 1)) for i in range(K)] for k in range(K)]


def dense_gates(K: int) -> list[list[int]]:
    """Every gate on: layer ``k + 1`` sees ``x^(1), ..., x^(k)`` (``(K-1)(K-2)/2`` extra connections)."""
    return [[int(i == k or 1 <= i <= k) for i in range(K)] for k in range(K)]


def extra_connections(gates: list[list[int]]) -> int:
    """Number of gates below the diagonal (connections LISTA does not have)."""
    return sum(int(v) for k, row in enumerate(gates) for v in row[:k])


def _is_bit(v) -> bool:
    return isinstance(v, bool) or (isinstance(v, int | float) and v in (0, 1))


PATTERNS = {"lista": lista_gates, "lfista": lfista_gates, "dense": dense_gates}


def check_gates(gates, K: int) -> list[list[int]]:
    """Validate a K x K gate matrix (or the name of a pattern in :data:`PATTERNS`) and return it
    as lists of ints; fail naming the rule broken."""
    if isinstance(gates, str):
        check(gates in PATTERNS, f"gates={gates!r} is not a named pattern; valid: {', '.join(PATTERNS)}, "
                                 f"or a {K}x{K} 0/1 matrix as JSON")
        return PATTERNS[gates](K)
    rule = (f"gates must be a {K}x{K} 0/1 matrix, gates[k][i] = 1 when x^(i) feeds layer k+1, "
            f"with i <= k, gates[k][k] = 1 and no gate from x^(0) below row 0")
    rows = gates if isinstance(gates, list | tuple) else None
    if rows is None or len(rows) != K or not all(isinstance(r, list | tuple) and len(r) == K for r in rows):
        got = (f"{len(rows)} rows of lengths {sorted({len(r) if isinstance(r, list | tuple) else 0 for r in rows})}"
               if rows is not None else type(gates).__name__)
        raise UsageError(f"{rule}; got {got}")
    for k, i in ((k, i) for k in range(K) for i in range(K)):
        v = rows[k][i]
        if not _is_bit(v):
            raise UsageError(f"{rule}; gates[{k}][{i}] = {v!r} is not 0 or 1")
        if v and i > k:
            raise UsageError(f"{rule}; gates[{k}][{i}] = 1 is a gate into the future (i > k)")
        if not v and i == k:
            raise UsageError(f"{rule}; gates[{k}][{k}] = 0 removes LISTA's own connection")
        if v and i == 0 < k:
            raise UsageError(f"{rule}; gates[{k}][0] = 1 connects x^(0) = 0, which carries nothing")
    return [[int(v) for v in row] for row in rows]


def parse_neurons(spec, K: int) -> list[str]:
    """One neuron name for all layers, or ``K`` comma-separated names (a list of names also works)."""
    names = list(spec) if isinstance(spec, list | tuple) else [s.strip(" '\"[]") for s in str(spec).split(",")]
    check(len(names) in (1, K), f"neurons must be one name or {K} comma-separated names "
                                f"(one per layer) from {', '.join(NEURONS)}; got {len(names)}")
    for name in names:
        choice(name, NEURONS, "neuron")
    return names * K if len(names) == 1 else names


def arch_from_params(params: dict, K: int, neuron: str = "soft", injection: str = "lwa") -> dict:
    """The architecture ``{K, gates, neurons, injection}`` of a search trial's parameters
    (``g{k}_{i}`` 0/1 for the extra connection ``x^(i)`` -> layer ``k+1``, ``n{k}`` the neuron of
    layer ``k+1``, ``injection``; unrolled/search/space.py); missing decisions: off, ``neuron``,
    ``injection``. Unknown parameter names are refused."""
    known = {f"g{k}_{i}" for k in range(2, K) for i in range(1, k)} | {f"n{k}" for k in range(K)} | {"injection"}
    unknown = sorted(set(params) - known)
    check(not unknown, f"parameters {unknown} are not decisions of the K={K} design space")
    gates = [[int(i == k or bool(params.get(f"g{k}_{i}", 0))) for i in range(K)] for k in range(K)]
    neurons = ",".join(str(params.get(f"n{k}", neuron)) for k in range(K))
    return {"K": K, "gates": check_gates(gates, K), "neurons": neurons,
            "injection": choice(params.get("injection", injection), INJECTIONS, "injection")}


def load_arch(path: str | Path) -> dict:
    """The architecture ``{K, gates, neurons, injection}`` stored in a JSON file (``unrolled search
    report`` writes ``average.json``), checked."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"cannot read the architecture file {path}: {e}; write one with "
                         f"`unrolled search report STUDY`") from None
    check(isinstance(d, dict) and {"K", "gates"} <= set(d),
          f"{path} is not an architecture file: it needs K and gates (and neurons, injection)")
    K = d["K"]
    check(isinstance(K, int) and not isinstance(K, bool) and K >= 1, f"{path}: K={K!r} must be a positive integer")
    return {"K": K, "gates": check_gates(d["gates"], K),
            "neurons": ",".join(parse_neurons(d.get("neurons", "soft"), K)),
            "injection": choice(d.get("injection", "lwa"), INJECTIONS, "injection")}


@dataclass
class LwaConfig(Config):
    gates: list[list[int]] | str | None = None  # K x K, or lista | lfista | dense; None: the family's default
    neurons: str = "soft"  # one of soft | relu | leaky, or K comma-separated names
    injection: str = "lwa"  # lwa | naive | momentum

    def default_gates(self, K: int) -> list[list[int]]:
        return lista_gates(K)

    @classmethod
    def from_params(cls, params: dict, K: int = 16, **fields) -> LwaConfig:
        """The config of a search trial's parameters (``trial.params``): :func:`arch_from_params`."""
        return cls(**{**fields, **arch_from_params(params, K)})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gates is None:
            self.gates = self.default_gates(self.K)
        self.gates = check_gates(self.gates, self.K)
        if isinstance(self.neurons, list | tuple):
            self.neurons = ",".join(map(str, self.neurons))
        parse_neurons(self.neurons, self.K)
        choice(self.injection, INJECTIONS, "injection")


@dataclass
class DenseConfig(LwaConfig):
    def default_gates(self, K: int) -> list[list[int]]:
        return dense_gates(K)


@register("lwa")
class LWA(UnrolledNet):
    """``x^(k+1) = sigma_k(W_b y + alpha_k W_x x~^(k))`` with gated extra connections (see module doc)."""

    Config = LwaConfig
    reduces_to = "ISTA with step 1/L and the layers' neurons (naive injection: at the mean of the gated iterates)"

    def __init__(self, problem, config: LwaConfig) -> None:
        super().__init__(problem, config)
        A = problem.A.to(torch.float64)
        self.Wb = nn.Parameter(A.T / self.L)
        self.Wx = nn.Parameter(torch.eye(self.n, dtype=torch.float64) - A.T @ A / self.L)
        self.neurons = parse_neurons(config.neurons, self.K)
        g = config.gates
        self.sources = [[i for i in range(k + 1) if g[k][i]] for k in range(self.K)]  # ends with k
        self.last_use = {i: max(k for k in range(self.K) if i in self.sources[k]) for i in range(self.K)}
        theta = config.lam / self.L
        layers = []
        for src in self.sources:
            if config.injection == "lwa":
                c = torch.zeros(len(src), dtype=torch.float64)
                c[-1] = 1.0
                layers.append(layer(alpha=1.0, theta=theta, c=c))
            elif config.injection == "momentum" and len(src) > 1:
                layers.append(layer(alpha=1.0, theta=theta, c=torch.ones(len(src) - 1, dtype=torch.float64)))
            else:
                layers.append(layer(alpha=1.0, theta=theta))
        self.layers = nn.ModuleList(layers)
        if config.injection == "momentum":
            lags = sorted({k + 1 - i for k, src in enumerate(self.sources) for i in src[:-1]})
            self.Wlag = nn.ParameterDict({str(j): nn.Parameter(torch.zeros(self.n, self.n, dtype=torch.float64))
                                          for j in lags})

    def begin(self, y: Tensor, ctx: dict) -> Tensor:
        x = super().begin(y, ctx)
        ctx.update(Wb_y=y @ self.Wb.T, hist={})
        return x

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        k, p, mode = t - 1, self.layers[t - 1], self.config.injection
        hist = ctx["hist"]
        hist[k] = x
        src = self.sources[k]
        if mode == "lwa":
            xt = p.c[-1] * x if len(src) == 1 else sum(p.c[j] * hist[i] for j, i in enumerate(src))
        elif mode == "naive":
            xt = x if len(src) == 1 else sum(hist[i] for i in src) / len(src)
        else:
            xt = x
        z = torch.addmm(ctx["Wb_y"], p.alpha * xt, self.Wx.T)
        if mode == "momentum":
            for j, i in enumerate(src[:-1]):
                z = torch.addmm(z, p.c[j] * hist[i], self.Wlag[str(k + 1 - i)].T)
        for i in [i for i in hist if self.last_use[i] <= k]:
            del hist[i]
        neuron = self.neurons[k]
        if neuron == "soft":
            return self.shrink(t, z, p.theta)
        if neuron == "relu":
            return torch.relu(z - p.theta)
        return nn.functional.leaky_relu(z - p.theta, LEAKY_SLOPE)

    @classmethod
    def skip(cls, problem: Problem, config: LwaConfig | None = None) -> tuple[bool, str]:
        config = config or cls.Config()
        if config.ss.mode != "none" and any(k != "soft" for k in parse_neurons(config.neurons, config.K)):
            return True, "support selection has no shrinkage to bypass in ReLU and LeakyReLU layers"
        return False, ""

    def products(self) -> list[Product]:
        extra = extra_connections(self.config.gates) if self.config.injection == "momentum" else 0
        return [Product(1, self.m, self.n, True), Product(self.K + extra, self.n, self.n, True)]

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        x, theta, outs = y.new_zeros(y.shape[0], self.n), self.config.lam / self.L, []
        outs.append(x)
        for k in range(self.K):
            src = self.sources[k]
            xt = sum(outs[i] for i in src) / len(src) if self.config.injection == "naive" else x
            z = ops.gradient_step(xt, y, self.A, self.A, 1 / self.L)
            neuron = self.neurons[k]
            x = (ops.shrink(z, theta, self.cuts[k]) if neuron == "soft" else torch.relu(z - theta) if neuron == "relu"
                 else nn.functional.leaky_relu(z - theta, LEAKY_SLOPE))
            outs.append(x)
        return outs


@register("dense-lista")
class DenseLISTA(LWA):
    """:class:`LWA` with every gate on (``dense_gates(K)`` unless ``gates`` is given)."""

    Config = DenseConfig
