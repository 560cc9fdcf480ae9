"""AMP and learned AMP: the residual carries an Onsager correction, so the denoiser sees
``x + N(0, tau^2)`` and can be the Bayes (MMSE) one for the signal prior.

* ``amp`` (Donoho, Maleki & Montanari, PNAS 2009), a fixed network:
  ``v <- y - A x + b v``, ``tau^2 = ||v||^2 / m``, ``x <- eta(x + A^T v; tau^2)``,
  ``b = (n / m) mean(eta')``; ``eta`` is the Bernoulli-Gaussian MMSE denoiser with the
  problem's sparsity ``p`` and unit variance (the generator's prior, docs/spec.md §2), or the soft
  threshold at ``alpha`` deviations.
* ``lamp`` (Borgerding, Schniter & Rangan, "AMP-inspired deep networks for sparse linear
  inverse problems", IEEE TSP 2017): the same step with a learned ``B`` (tied, per layer, or
  fixed at ``A``) in place of ``A^T`` and learned denoiser parameters per layer
  (Bernoulli-Gaussian: ``p_t``, ``var_t`` and a noise ``gain_t``; soft: ``alpha_t``, ``gain_t``).
  At initialisation it equals ``amp``.

Both take ``damping = beta`` (1: none): from the second iteration the residual and the estimate are
averaged with their previous values (:func:`unrolled.ops.reference.amp_step`; damped GAMP, Rangan et al.
2019). AMP is derived for i.i.d. Gaussian ``A``: :meth:`AMP.skip` declines a matrix whose singular
values spread more than such a matrix's (:func:`spectral_spread`) unless ``damping < 1``, and
:meth:`AMP.trace` / :meth:`AMP.diverged_at` report the effective variance per iteration and where it
blew up (docs/spec.md §6.4).

Support selection does not apply: the denoiser already decides per entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from .. import ops
from ..errors import check, choice
from ..ops import reference
from ..problem import Problem
from .base import Config, UnrolledNet, layer, register

DENOISERS = ("bg", "soft")
MATRICES = ("fixed", "tied", "untied")
# AMP's validity check (spectral_spread): A is declined when var(lambda) / mean(lambda)^2 of the eigenvalues
# of A A^T exceeds (SPREAD_RATIO + SPREAD_SLACK / m) m / n, m / n being the Marchenko-Pastur value of an
# i.i.d. Gaussian m x n matrix. 100 i.i.d. seeds per size from 7 x 15 to 101 x 203 (20 at 250 x 500) stay
# below (1 + 6 / m) m / n; on 250 x 500 matrices with log-spaced singular values AMP loses accuracy from
# 1.15 (kappa = 4) and diverges from 1.5 (kappa = 5) times m / n.
SPREAD_RATIO = 1.1
SPREAD_SLACK = 6.0
DIVERGENCE_FACTOR = 2.0  # diverged: tau2_t > DIVERGENCE_FACTOR tau2_1 (or not finite)


@dataclass
class AmpConfig(Config):
    denoiser: str = "bg"  # bg (Bernoulli-Gaussian MMSE) | soft
    p: float | None = None  # bg prior: P(x_i != 0); None: the problem's p
    var: float = 1.0  # bg prior: variance of the non-zero entries
    alpha: float = 1.5  # soft: threshold in noise deviations
    damping: float = 1.0  # beta in (0, 1]: v and x averaged with their previous values (1: undamped AMP)

    def __post_init__(self) -> None:
        super().__post_init__()
        choice(self.denoiser, DENOISERS, "denoiser")
        check(0 < self.damping <= 1, f"damping={self.damping} must be in (0, 1] (1: no damping; 0.5 is typical)")
        check(self.ss.mode == "none", f"ss={self.ss.mode!r}: AMP's denoiser selects the support itself; use ss=none")
        check(self.p is None or 0 < self.p < 1, f"p={self.p} must be in (0, 1)")
        check(self.var > 0 and self.alpha >= 0, "var must be > 0 and alpha >= 0")


@dataclass
class LampConfig(AmpConfig):
    matrix: str = "tied"  # B: tied (one for all layers) | untied (one per layer) | fixed (A)

    def __post_init__(self) -> None:
        super().__post_init__()
        choice(self.matrix, MATRICES, "matrix")


@register("amp")
class AMP(UnrolledNet):
    """K AMP iterations with a fixed denoiser; no trainable parameter."""

    Config = AmpConfig
    reduces_to = "AMP with the config's fixed denoiser (Donoho, Maleki & Montanari 2009)"

    def __init__(self, problem, config: AmpConfig) -> None:
        super().__init__(problem, config)
        self.p = problem.spec.p if config.p is None else config.p
        check(config.denoiser != "bg" or 0 < self.p < 1,
              f"the Bernoulli-Gaussian prior needs 0 < p < 1 (the problem has p={self.p}); set p or denoiser=soft")

    @classmethod
    def skip(cls, problem: Problem, config: AmpConfig | None = None) -> tuple[bool, str]:
        config = config or cls.Config()
        p = problem.spec.p if config.p is None else config.p
        if config.denoiser == "bg" and (problem.spec.signal == "gamma" or not 0 < p < 1):
            return True, "the Bernoulli-Gaussian prior does not fit signals without zero entries (use denoiser=soft)"
        if config.damping == 1.0:
            spread, iid = spectral_spread(problem.A)
            if spread > (SPREAD_RATIO + SPREAD_SLACK / problem.m) * iid:
                s = torch.linalg.svdvals(problem.A)
                kappa = float(s[0] / s[-1]) if float(s[-1]) > 0 else math.inf
                return True, (f"AMP assumes an i.i.d. Gaussian-like A and, undamped, diverges on matrices like "
                              f"this one: the eigenvalues of A A^T spread as var/mean^2 = {spread:.2f} where an i.i.d. "
                              f"{problem.m}x{problem.n} matrix gives m/n = {iid:.2f} (condition number "
                              f"{kappa:.3g}); set damping < 1 (e.g. damping=0.5) or use fista/alista")
        return False, ""

    def begin(self, y: Tensor, ctx: dict) -> Tensor:
        ctx.update(v=torch.zeros_like(y), b=0.0, floor=reference.amp_floor(y, self.n))
        return super().begin(y, ctx)

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        c = self.config
        denoise = (partial(ops.bg_denoise, eps=self.p, var=c.var) if c.denoiser == "bg"
                   else partial(ops.soft_denoise, alpha=c.alpha))
        x, v, onsager, outs = y.new_zeros(y.shape[0], self.n), torch.zeros_like(y), 0.0, []
        outs.append(x)
        for t in range(1, self.K + 1):
            x, v, onsager = ops.amp_step(x, v, onsager, y, self.A, self.A, denoise, damping=self.damping(t))
            outs.append(x)
        return outs

    def denoiser(self, t: int):
        c = self.config
        if c.denoiser == "bg":
            return partial(ops.bg_denoise, eps=self.p, var=c.var)
        return partial(ops.soft_denoise, alpha=c.alpha)

    def matrix(self, t: int) -> Tensor:
        return self.A

    def gain(self, t: int) -> Tensor | float:
        return 1.0

    def damping(self, t: int) -> float:
        """The damping of layer ``t``: none at the first (its residual ``y`` has no previous value)."""
        return self.config.damping if t > 1 else 1.0

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        x, ctx["v"], ctx["b"] = ops.amp_step(x, ctx["v"], ctx["b"], y, self.A, self.matrix(t), self.denoiser(t),
                                           self.gain(t), self.damping(t), ctx["floor"])
        return x

    @torch.no_grad()
    def trace(self, y: Tensor, depth: int | None = None) -> Tensor:
        """The effective noise variance ``tau2_t`` that iteration ``t = 1..depth`` hands its denoiser,
        ``(batch, depth)``: the forward pass's own steps, with ``tau2`` formed again from each residual
        (:func:`unrolled.ops.reference.amp_variance`). State evolution makes it non-increasing on the
        problems AMP is derived for; see :func:`first_divergence`."""
        depth = self.K if depth is None else depth
        check(y.dim() == 2 and y.shape[1] == self.m, f"y must have shape (batch, {self.m}), got {tuple(y.shape)}")
        check(1 <= depth <= self.K, f"depth={depth} must be in 1..{self.K}")
        ctx: dict = {}
        x = self.begin(y, ctx)
        out = []
        for t in range(1, depth + 1):
            x = self.step(t, x, y, ctx)
            out.append(reference.amp_variance(ctx["v"], ctx["floor"], self.gain(t)))
        return torch.cat(out, dim=1)

    def diverged_at(self, y: Tensor, factor: float = DIVERGENCE_FACTOR, depth: int | None = None) -> Tensor:
        """Per sample, the first iteration (1-based) at which AMP diverged, 0 where it did not; ``(batch,)``
        int64. ``first_divergence(self.trace(y, depth), factor)``."""
        return first_divergence(self.trace(y, depth), factor)


@register("lamp")
class LAMP(AMP):
    """AMP with a learned ``B`` and learned per-layer denoiser parameters (initialised at AMP)."""

    Config = LampConfig
    reduces_to = "AMP with the same denoiser (the learned parameters start at AMP's)"

    def __init__(self, problem, config: LampConfig) -> None:
        super().__init__(problem, config)
        if config.denoiser == "bg":  # unconstrained parameters: logit p, log var, log gain
            init = dict(logit_p=math.log(self.p / (1 - self.p)), log_var=math.log(config.var), log_gain=0.0)
        else:
            init = dict(alpha=config.alpha, log_gain=0.0)
        if config.matrix == "untied":
            init["B"] = self.A
        self.layers = nn.ModuleList(layer(**init) for _ in range(self.K))
        if config.matrix == "tied":
            self.B = nn.Parameter(self.A.clone())

    def denoiser(self, t: int):
        q = self.layers[t - 1]
        if self.config.denoiser == "bg":
            return partial(ops.bg_denoise, eps=torch.sigmoid(q.logit_p), var=q.log_var.exp())
        return partial(ops.soft_denoise, alpha=q.alpha)

    def matrix(self, t: int) -> Tensor:
        c = self.config.matrix
        return self.B if c == "tied" else self.layers[t - 1].B if c == "untied" else self.A

    def gain(self, t: int) -> Tensor:
        return self.layers[t - 1].log_gain.exp()


def first_divergence(tau2: Tensor, factor: float = DIVERGENCE_FACTOR) -> Tensor:
    """``tau2: (batch, K)`` (:meth:`AMP.trace`) -> ``(batch,)`` int64: the first ``t`` (1-based) with
    ``tau2_t > factor tau2_1`` or ``tau2_t`` not finite, 0 where there is none.

    ``tau2_1`` is the variance seen from ``x = 0`` (``||y||^2 / m`` for AMP); an effective noise
    ``factor`` times larger (3 dB at the default 2) is impossible under state evolution, in which
    ``tau2`` only falls. Measured on 250 x 500 problems at 40 dB (1000 signals, 16 iterations): none
    flagged with an i.i.d. A; all at kappa = 15 and kappa = 100 (each then has an NMSE above 0 dB);
    with damping 0.5 none at kappa = 15 and 807 at kappa = 100, where damped AMP stays bounded but
    reaches only -2.8 dB (docs/spec.md §6.4).
    """
    check(tau2.dim() == 2 and tau2.shape[1] >= 1, f"tau2 must have shape (batch, K), got {tuple(tau2.shape)}")
    bad = ~torch.isfinite(tau2) | (tau2 > factor * tau2[:, :1])
    first = bad.to(torch.int64).argmax(dim=1) + 1
    return torch.where(bad.any(dim=1), first, torch.zeros_like(first))


def spectral_spread(A: Tensor) -> tuple[float, float]:
    """``(var(lambda) / mean(lambda)^2, m / n)`` for the eigenvalues ``lambda`` of ``A A^T``, ``A: (m, n)``.

    The second is the value of the first for an i.i.d. Gaussian matrix (Marchenko-Pastur law with ratio
    ``m / n``). Both are scale-free; a row-orthogonal ``A`` (a partial DCT) gives 0, a rank-deficient
    or ill-conditioned one more than ``m / n``. Computed from traces, without an eigendecomposition:
    ``mean(lambda) = ||A||_F^2 / m``, ``mean(lambda^2) = ||A A^T||_F^2 / m``.
    """
    A = A.to(torch.float64)
    m, n = A.shape
    G = A @ A.T
    mean = float(torch.trace(G)) / m
    return float((G * G).sum()) / m / mean ** 2 - 1, m / n
