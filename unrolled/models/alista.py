"""ALISTA and its thresholding variants: analytic W, a few learned scalars per layer.

* ``alista`` (Liu et al., ICLR 2019): ``x <- ss(x + gamma_t W^T (y - A x), theta_t)``, W from
  docs/spec.md §4, ``gamma = min(1, 1.9 / rho(W^T A))``, ``theta = lam / (1.001 L)`` at initialisation.

Initial step (docs/spec.md §6.5, §11): the linear part ``I - gamma W^T A`` is stable iff
``gamma rho(W^T A) < 2``; ``gamma0 = None`` (the default) starts at ``min(1, 1.9 / rho)`` (0.5
instead of 1 for ALISTA-AT and AGLISTA, their papers' value): the Newton step on a sparse
support where that is stable, 5 % inside the range elsewhere (rho = 2.15 at 250x500, 4-4.9 on
partial-DCT or kappa = 100 matrices, where the old constant 1 diverged). A number pins it.
``bound=True`` (the default) clamps AGLISTA's learned steps to :func:`step_bound` (see NA-ALISTA).
``guard=True`` (the default, every model here and NA-ALISTA) caps, per sample, the step of an
iterate with more than ``s`` non-zeros at the stable edge for that many (:class:`StepGuard`).
* ``alista-at`` (adaptive thresholds, Kim & Park 2020 as in the NA-ALISTA code): the same
  step with per-entry ``theta_{t,i} = theta_t / (|x_i| / eps + 1)`` from the current iterate.
* ``aglista`` (Wu et al., ICLR 2020): gain gate ``g = 1 + theta_{t-1} nu_t exp(-v_t |x|)``,
  ``x~ = ss(x - gamma_t W^T (A (g * x) - y), theta_t)``, overshoot
  ``o = 1 + a_t / (|x~ - x| + 0.01)`` and ``x <- o * x~ + (1 - o) * x`` (docs/spec.md §6 form).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import ops, solvers
from ..analytic import METHODS, analytic_weights
from ..errors import check, choice
from ..ops import Selection
from .base import Config, UnrolledNet, layer, register, selection

STEP_MARGIN = 1.9  # initial steps: gamma0 <= 1.9 / rho(W^T A), 5 % inside the stable gamma rho < 2
SUPPORT_DRAWS = 64  # random supports behind rho_S (support_radius)
GUARD_SIZES = (1.25, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)  # the guard's support sizes, in multiples of s
GUARD_DRAWS = 16  # random supports per size beyond s (rho_S varies little there)


def spectral_radius(W: Tensor, A: Tensor) -> float:
    """``rho(W^T A)``, from the eigenvalues of the ``m x m`` matrix ``A W^T`` (the same non-zero ones)."""
    return float(torch.linalg.eigvals(A.double() @ W.double().T).abs().max())


def support_radius(W: Tensor, A: Tensor, s: float, draws: int = SUPPORT_DRAWS, seed: int = 0) -> float:
    """``rho_S``: the largest ``rho((W^T A)_SS)`` over ``draws`` random supports of ``round(s)`` columns
    (a fixed generator, so the same bits every time; ``s x s`` products, never the ``n x n`` one)."""
    m, n = A.shape
    k = min(n, max(1, round(s)))
    g = torch.Generator().manual_seed(seed)
    supports = (torch.randperm(n, generator=g)[:k] for _ in range(draws))
    # beyond m columns the m x m product A_S W_S^T has the same non-zero eigenvalues, at less cost
    product = (lambda S: W[:, S].double().T @ A[:, S].double()) if k <= m else \
        (lambda S: A[:, S].double() @ W[:, S].double().T)
    return max(float(torch.linalg.eigvals(product(S)).abs().max()) for S in supports)


def step_bound(W: Tensor, A: Tensor, s: float) -> float:
    """The largest step of a bounded model (``bound=True``): ``2 / rho_S``, the edge of the stable range
    on supports of the expected size ``s`` (the step that matters once the support is found), never
    below ``1.9 / rho(W^T A)``, stable on every mode (docs/spec.md §11.7)."""
    return max(STEP_MARGIN / spectral_radius(W, A), 2 / support_radius(W, A, s))


class StepGuard:
    """Per-sample steps that stay stable on the support a sample actually has (``guard=True``).

    A trained step ``gamma`` is stable while ``gamma rho((W^T A)_SS) < 2`` on the entries S that
    the iterate moves; typical samples keep about ``s`` of them, where ``rho_S`` is small. An
    atypical sample whose iterate spreads over many more entries (at n/m = 8, hundreds) meets a
    larger ``rho_S`` and, with the same step, an error that grows from layer to layer (+68 dB on
    one vector of 10,000 at 250x2000). The guard caps the step of a sample whose current iterate
    has ``k > s`` non-zeros at ``max(1.9 / rho, 2 / rho_S(k))``, ``rho_S(k)`` interpolated
    linearly in ``k`` between random-support estimates at :data:`GUARD_SIZES` (``rho_S(n) = rho``);
    samples with ``k <= s``, and any step already below the cap, are untouched (docs/spec.md §11.7).
    """

    def __init__(self, W: Tensor, A: Tensor, s: float) -> None:
        n, rho = A.shape[1], spectral_radius(W, A)
        k0 = min(n, max(1, round(s)))
        sizes = sorted({k0, n} | {round(s * f) for f in GUARD_SIZES if k0 < round(s * f) < n})
        radii = [support_radius(W, A, k, SUPPORT_DRAWS if k == k0 else GUARD_DRAWS) if k < n else rho for k in sizes]
        for i in range(1, len(radii)):  # rho_S grows with the support; estimates keep that order
            radii[i] = max(radii[i], radii[i - 1])
        self.sizes, self.radii, self.floor = sizes, radii, STEP_MARGIN / rho

    def caps(self, x: Tensor) -> Tensor:
        """``(batch, 1)``: each sample's largest stable step (``inf`` where ``k <= s``)."""
        ks = torch.tensor(self.sizes, dtype=x.dtype, device=x.device)
        rs = torch.tensor(self.radii, dtype=x.dtype, device=x.device)
        k = (x != 0).sum(1, keepdim=True).to(x.dtype)
        i = (ks < k.clamp(ks[0], ks[-1])).sum(1, keepdim=True).clamp(1, max(1, len(ks) - 1))  # ONNX has no searchsorted
        k0, k1, r0, r1 = ks[i - 1], ks[i], rs[i - 1], rs[i]
        rho_k = r0 + (r1 - r0) * (k - k0) / (k1 - k0).clamp(min=1)
        cap = (2 / rho_k).clamp(min=self.floor)
        return torch.where(k > ks[0], cap, torch.full_like(cap, math.inf))

    def __call__(self, gamma: Tensor, x: Tensor) -> Tensor:
        """``gamma`` (a scalar or ``(batch, 1)``), capped per sample where it exceeds the sample's cap;
        on the CPU ``gamma`` itself where no sample needs it (its fused kernels take a scalar); traced
        for export, always the capped form (no branch on the data)."""
        caps = self.caps(x)
        if x.device.type == "cpu" and not torch.compiler.is_compiling() and not bool((caps < gamma).any()):
            return gamma
        return torch.minimum(gamma, caps)


@dataclass
class AlistaConfig(Config):
    ss: Selection = selection("percentage")
    weights: str = "closed-form"  # closed-form | pgd  (analytic W, docs/spec.md §4)
    gamma0: float | None = None  # None: min(1, 1.9 / rho(W^T A)), inside the stable range (docs/spec.md §6.5)
    theta0: float | None = None  # None: lam / (1.001 L)
    guard: bool = True  # per-sample steps capped by the sample's support size (StepGuard); False: as the papers

    def __post_init__(self) -> None:
        super().__post_init__()
        choice(self.weights, METHODS, "weights method")
        check(self.gamma0 is None or self.gamma0 > 0,
              f"gamma0={self.gamma0} must be > 0 (or None: derived from rho(W^T A))")


class AnalyticNet(UnrolledNet):
    """Base of the ALISTA family: the analytic W as a buffer."""

    Config = AlistaConfig
    reduces_to = "the proximal-gradient iteration with the analytic W, gamma = gamma0, theta = theta0"

    def __init__(self, problem, config: AlistaConfig) -> None:
        super().__init__(problem, config)
        self.register_buffer("W", analytic_weights(problem.A, config.weights).W.clone())
        self.rho = spectral_radius(self.W, self.A)
        self.guard = StepGuard(self.W, self.A, problem.spec.sparsity) if getattr(config, "guard", False) else None

    def guarded(self, gamma: Tensor, x: Tensor) -> Tensor:
        """The step of layer input ``x``: ``gamma``, or with ``guard`` capped per sample (:class:`StepGuard`)."""
        return gamma if self.guard is None else self.guard(gamma, x)

    gamma_cap: float = 1.0  # the derived initial step is min(gamma_cap, STEP_MARGIN / rho)

    def gamma0(self) -> float:
        """The initial step: ``config.gamma0``, or where it is ``None`` ``min(gamma_cap, 1.9 / rho(W^T A))``:
        1 is the Newton step on a sparse support (``diag(W^T A) = 1``, so ``(W^T A)_SS ~ I``), and
        ``1.9 / rho`` keeps the whole linear part inside its stable range ``gamma rho < 2``."""
        g = getattr(self.config, "gamma0", None)
        return min(self.gamma_cap, STEP_MARGIN / self.rho) if g is None else g

    def theta0(self) -> float:
        c = self.config
        return c.lam / self.scale if c.theta0 is None else c.theta0

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        eps, g0 = getattr(self.config, "eps", None), self.gamma0()
        gamma = g0 if self.guard is None else (lambda x: self.guarded(torch.tensor(g0, dtype=x.dtype), x))
        return list(solvers.proximal_gradient(self.A, y, self.W, gamma, self.theta0(), self.K, self.cuts, eps))


@register("alista")
class ALISTA(AnalyticNet):
    """``x <- ss(x + gamma_t W^T (y - A x), theta_t)``; 2K learned scalars."""

    def __init__(self, problem, config: AlistaConfig) -> None:
        super().__init__(problem, config)
        self.layers = nn.ModuleList(layer(gamma=self.gamma0(), theta=self.theta0()) for _ in range(self.K))

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        p = self.layers[t - 1]
        return ops.pgd_step(x, y, self.A, self.W, self.guarded(p.gamma, x), p.theta, self.cuts[t - 1])


@dataclass
class AlistaATConfig(AlistaConfig):
    theta0: float | None = 0.5
    eps: float = 0.1


@register("alista-at")
class ALISTA_AT(ALISTA):
    """ALISTA with per-entry thresholds ``theta_t / (|x_i| / eps + 1)``."""

    Config = AlistaATConfig
    gamma_cap = 0.5  # the papers' initial step, kept wherever it is stable

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        p = self.layers[t - 1]
        return ops.pgd_step(x, y, self.A, self.W, self.guarded(p.gamma, x), p.theta, self.cuts[t - 1],
                            eps=self.config.eps)


@dataclass
class AglistaConfig(AlistaConfig):
    theta0: float | None = 0.5
    a0: float = 0.01
    v0: float = 1.0
    nu0: float = 0.05
    theta_init: float = 1.0
    bound: bool = True  # steps clamped to step_bound (2 / rho_S); False: unbounded, as the papers' code


@register("aglista")
class AGLISTA(AnalyticNet):
    """ALISTA with gain and overshoot gates (per layer gamma, theta, nu, v, a; shared theta_init)."""

    Config = AglistaConfig
    gamma_cap = 0.5  # the papers' initial step, kept wherever it is stable
    reduces_to = "AGLISTA's gated iteration with the initial constants (gamma0, theta0, nu0, v0, a0, theta_init)"

    def __init__(self, problem, config: AglistaConfig) -> None:
        super().__init__(problem, config)
        c = config
        self.theta_init = nn.Parameter(torch.tensor(c.theta_init, dtype=torch.float64))
        self.layers = nn.ModuleList(layer(gamma=self.gamma0(), theta=self.theta0(), nu=c.nu0, v=c.v0, a=c.a0)
                                    for _ in range(self.K))
        self.step_max = step_bound(self.W, self.A, problem.spec.sparsity) if c.bound else None

    def bounded(self, gamma: Tensor) -> Tensor:
        return gamma if self.step_max is None else gamma.clamp(max=self.step_max)

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        p = self.layers[t - 1]
        theta_prev = self.theta_init if t == 1 else self.layers[t - 2].theta
        return ops.gated_step(x, y, self.A, self.W, theta_prev * p.nu, p.v, self.guarded(self.bounded(p.gamma), x),
                              p.theta, p.a, self.cuts[t - 1])

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        c, x = self.config, y.new_zeros(y.shape[0], self.n)
        const = {k: torch.tensor(v, dtype=y.dtype) for k, v in dict(gamma=self.gamma0(), theta=self.theta0(), nu=c.nu0,
                                                                  v=c.v0, a=c.a0, first=c.theta_init).items()}
        const["gamma"] = self.bounded(const["gamma"])
        outs = [x]
        for t in range(1, self.K + 1):
            theta_prev = const["first"] if t == 1 else const["theta"]
            x = ops.reference.gated_step(x, y, self.A, self.W, theta_prev * const["nu"], const["v"],
                                         self.guarded(const["gamma"], x), const["theta"], const["a"], self.cuts[t - 1])
            outs.append(x)
        return outs
