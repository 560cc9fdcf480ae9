"""VAMP and learned VAMP: a denoiser and an LMMSE stage exchange extrinsic messages, so the denoiser sees
``x + N(0, 1 / gamma_1)`` for every right-rotationally invariant ``A`` (ill-conditioned ones included),
where AMP needs an i.i.d. Gaussian one.

* ``vamp`` (Rangan, Schniter & Fletcher, "Vector approximate message passing", IEEE TIT 2019, Alg. 1
  with the SVD form of Alg. 2), a fixed network. Iteration ``t``, from ``(r_2, gamma_2)``:

  - LMMSE in the SVD domain, ``A = U diag(s) V^T`` (rank ``R``, computed once per problem:
    :func:`svd`): ``x_2 = r_2 + V diag(s / (s^2 + gamma_2 sigma^2)) (U^T y - diag(s) V^T r_2)``,
    ``alpha_2 = ((n - R) + sum_i gamma_2 sigma^2 / (s_i^2 + gamma_2 sigma^2)) / n``;
    extrinsic ``gamma_1 = gamma_2 (1 - alpha_2) / alpha_2``, ``r_1 = (x_2 - alpha_2 r_2) / (1 - alpha_2)``;
  - denoiser: ``x_t = eta(r_1; 1 / gamma_1)``, ``alpha_1 = mean(eta')`` (the Bernoulli-Gaussian MMSE
    denoiser of AMP, :func:`unrolled.ops.bg_denoise`; the soft threshold at ``alpha`` deviations when no
    prior is known, :func:`unrolled.ops.soft_denoise`; or a Gaussian prior, whose VAMP is the LMMSE
    estimate after one iteration); extrinsic ``gamma_2 = gamma_1 (1 - alpha_1) / alpha_1``,
    ``r_2 = (x_t - alpha_1 r_1) / (1 - alpha_1)``.

  It starts at ``r_2 = 0`` with ``gamma_2`` the prior's precision ``1 / E[x^2]`` (the limit of a first
  denoiser step that knows nothing). Per iteration: two products with ``V`` and the denoiser.
  ``sigma^2`` is the noise variance per sample, from ``y`` and the SNR the problem states
  (:func:`noise_variance`). ``damping = beta < 1`` averages ``x_t`` and ``alpha_1`` with their
  previous values from the second iteration (Rangan et al. 2019, Sec. V-B). :meth:`VAMP.trace` is the
  variance ``1 / gamma_1`` handed to the denoiser per iteration and :meth:`VAMP.diverged_at` where it
  blew up (:func:`unrolled.models.amp.first_divergence`, as for AMP).
* ``lvamp`` (Borgerding, Schniter & Rangan, "AMP-inspired deep networks for sparse linear inverse
  problems", IEEE TSP 2017, Sec. IV): the same iteration with per-layer learned denoiser parameters
  (Bernoulli-Gaussian ``p_t``, ``var_t``; soft ``alpha_t``) and a per-layer noise gain on ``sigma^2``,
  with ``linear=spectra`` per-layer spectra ``s_t`` of the linear stage (``U``, ``V`` kept at A's singular
  vectors), and with ``linear=learned`` the whole linear stage (shared ``U``, ``V`` and per-layer ``s_t``).
  At initialisation it equals ``vamp``.

A learned AMP is ``lamp`` (unrolled/models/amp.py). The SVD-domain step is checked against the direct
solve ``(A^T A / sigma^2 + gamma_2 I)^{-1} (A^T y / sigma^2 + gamma_2 r_2)`` (:func:`vamp_direct`, the
initial twin) in tests/test_vamp.py.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from .. import ops
from ..errors import check, choice
from ..ops import reference
from ..problem import Problem
from .amp import DIVERGENCE_FACTOR, first_divergence
from .base import Config, Product, UnrolledNet, layer, register

DENOISERS = ("bg", "soft", "gauss")
LINEAR = ("fixed", "spectra", "learned")
NOISELESS_SNR = 100.0  # dB: the least noise the LMMSE step assumes (noise_variance)
ALPHA_MIN = 1e-6  # alpha_1, alpha_2 are kept in [ALPHA_MIN, 1 - ALPHA_MIN]: precisions stay > 0
RESIDUAL_GUARD = 10.0  # VAMP.diverged_at: residual growth counts above this many times the noise energy m sigma^2
RESIDUAL_FACTOR = 4.0  # ... and by more than this factor (6 dB) over its least value so far
_SVD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def svd(problem: Problem) -> tuple[Tensor, Tensor, Tensor]:
    """``(U (m, R), s (R,), V (n, R))`` of ``problem.A`` in float64, its rank-``R`` economy SVD (singular
    values above ``max(m, n) eps s_max``, NumPy's rank tolerance); computed once per problem object."""
    if problem not in _SVD:
        U, s, Vh = torch.linalg.svd(problem.A.to(torch.float64), full_matrices=False)
        keep = s > max(problem.m, problem.n) * torch.finfo(torch.float64).eps * s[0]
        _SVD[problem] = (U[:, keep].contiguous(), s[keep].contiguous(), Vh[keep].T.contiguous())
    return _SVD[problem]


def noise_variance(y: Tensor, snr: float, n: int) -> Tensor:
    """The noise variance per sample, ``(batch, 1)``, of ``y = A x + e`` measured at ``snr`` dB:
    ``var(y) rho / (1 + rho)`` with ``rho = 10^(-snr / 10)`` (the generator sets ``sigma`` to
    ``std(A x) / sqrt(rho)`` per sample, docs/spec.md §2), at least AMP's rounding floor
    (:func:`unrolled.ops.reference.amp_floor`). An SNR above ``NOISELESS_SNR`` (a noiseless problem) is
    taken as ``NOISELESS_SNR``: with the LMMSE step an exact projection, VAMP amplifies its rounding
    errors once converged (61 x 121, p = 0.1, noiseless, 200 signals: -125 dB at iteration 60, then
    between -121 and +46 dB; assuming 100 dB it stays at -208 dB from iteration 40 to 200)."""
    floor = reference.amp_floor(y, n)
    rho = 10.0 ** (-min(snr, NOISELESS_SNR) / 10)
    var = (y - y.mean(-1, keepdim=True)).square().mean(-1, keepdim=True)  # y.var warns on an empty batch
    return torch.maximum(var * (rho / (1 + rho)), floor)


def gauss_denoise(r: Tensor, tau2: Tensor, var: Tensor | float) -> tuple[Tensor, Tensor]:
    """The MMSE estimate of ``x ~ N(0, var)`` from ``r = x + N(0, tau2)``, ``c r`` with ``c = var / (var + tau2)``,
    and its derivative ``c`` per sample."""
    c = var / (var + tau2)
    return c * r, c.expand(r.shape[0], 1) if isinstance(c, Tensor) else r.new_full((r.shape[0], 1), c)


def lmmse(r2: Tensor, g2: Tensor, uty: Tensor, s: Tensor, V: Tensor, sigma2: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """VAMP's LMMSE stage in the SVD domain: ``(x_2, alpha_2)`` from ``r_2 = x + N(0, 1 / g2)``, ``uty = y U``."""
    s2, q = s * s, g2 * sigma2
    x2 = r2 + ((s / (s2 + q)) * (uty - s * (r2 @ V))) @ V.T
    alpha2 = ((n - s.shape[-1]) + (q / (s2 + q)).sum(-1, keepdim=True)) / n
    return x2, alpha2


def extrinsic(x: Tensor, alpha: Tensor, r: Tensor, gamma: Tensor, floor: Tensor) -> tuple[Tensor, Tensor]:
    """The message leaving a stage: ``((x - alpha r) / (1 - alpha), gamma (1 - alpha) / alpha)``, ``alpha``
    clamped to ``[ALPHA_MIN, 1 - ALPHA_MIN]`` and the variance ``1 / gamma`` kept above ``floor``
    (:func:`unrolled.ops.reference.amp_floor`, the rounding level of ``y``: a noiseless VAMP that
    reached it otherwise divides rounding errors by ever larger variances and blows up)."""
    alpha = alpha.clamp(ALPHA_MIN, 1 - ALPHA_MIN)
    return (x - alpha * r) / (1 - alpha), torch.minimum(gamma * (1 - alpha) / alpha, 1.0 / floor)


@dataclass
class VampConfig(Config):
    denoiser: str = "bg"  # bg (Bernoulli-Gaussian MMSE) | soft (no prior known) | gauss (Gaussian prior)
    p: float | None = None  # bg prior: P(x_i != 0); None: the problem's p
    var: float = 1.0  # bg / gauss prior: variance of the (non-zero) entries
    alpha: float = 1.5  # soft: threshold in noise deviations
    snr: float | None = None  # the SNR (dB) the LMMSE step assumes; None: the problem's
    damping: float = 1.0  # beta in (0, 1]: x and alpha_1 averaged with their previous values (1: none)

    def __post_init__(self) -> None:
        super().__post_init__()
        choice(self.denoiser, DENOISERS, "denoiser")
        check(0 < self.damping <= 1, f"damping={self.damping} must be in (0, 1] (1: no damping; 0.5 is typical)")
        check(self.ss.mode == "none", f"ss={self.ss.mode!r}: VAMP's denoiser selects the support itself; use ss=none")
        check(self.p is None or 0 < self.p < 1, f"p={self.p} must be in (0, 1)")
        check(self.var > 0 and self.alpha >= 0, "var must be > 0 and alpha >= 0")
        check(self.snr is None or not math.isnan(self.snr), "snr must be a number of dB or inf")


@dataclass
class LvampConfig(VampConfig):
    # fixed (the SVD of A) | spectra (per-layer singular values s_t, U and V fixed: the LMMSE stage stays that of an
    # operator with A's singular vectors, so the extrinsic variance stays exact) | learned (also shared U, V)
    linear: str = "fixed"

    def __post_init__(self) -> None:
        super().__post_init__()
        choice(self.linear, LINEAR, "linear")


@register("vamp")
class VAMP(UnrolledNet):
    """K VAMP iterations (SVD-domain LMMSE + fixed denoiser); no trainable parameter."""

    Config = VampConfig
    reduces_to = "VAMP with the config's fixed denoiser, written out (Rangan, Schniter & Fletcher 2019)"

    def __init__(self, problem: Problem, config: VampConfig) -> None:
        super().__init__(problem, config)
        spec = problem.spec
        self.p = spec.p if config.p is None else config.p
        check(config.denoiser != "bg" or 0 < self.p < 1,
              f"the Bernoulli-Gaussian prior needs 0 < p < 1 (the problem has p={self.p}); set p or denoiser=soft")
        snr = spec.snr if config.snr is None else config.snr
        self.snr = float(snr)
        U, s, V = svd(problem)
        self.rank = s.shape[0]
        for name, value in (("U", U), ("s", s), ("V", V)):
            self.register_buffer(name, value.clone(), persistent=False)  # rebuilt from A, not saved

    @classmethod
    def skip(cls, problem: Problem, config: VampConfig | None = None) -> tuple[bool, str]:
        config = config or cls.Config()
        p = problem.spec.p if config.p is None else config.p
        if config.denoiser == "bg" and (problem.spec.signal == "gamma" or not 0 < p < 1):
            return True, "the Bernoulli-Gaussian prior does not fit signals without zero entries (use denoiser=soft)"
        return False, ""

    # -- the pieces a learned variant replaces --------------------------------------------------

    def prior_energy(self, y: Tensor) -> Tensor | float:
        """``E[x_i^2]``: the prior's (``p var``, ``var``), or with the soft threshold ``||y||^2 / ||A||_F^2``."""
        c = self.config
        if c.denoiser == "bg":
            return self.p * c.var
        if c.denoiser == "gauss":
            return c.var
        floor = torch.finfo(y.dtype).tiny
        return ((y * y).sum(-1, keepdim=True) / (self.A * self.A).sum()).clamp_min(floor)

    def denoiser(self, t: int):
        c = self.config
        if c.denoiser == "bg":
            return partial(ops.bg_denoise, eps=self.p, var=c.var)
        if c.denoiser == "gauss":
            return partial(gauss_denoise, var=c.var)
        return partial(ops.soft_denoise, alpha=c.alpha)

    def linear(self, t: int) -> tuple[Tensor, Tensor, Tensor]:
        """``(U, s_t, V)`` of layer ``t``'s LMMSE stage."""
        return self.U, self.s, self.V

    def noise_gain(self, t: int) -> Tensor | float:
        return 1.0

    def damping(self, t: int) -> float:
        """The damping of layer ``t``: none at the first (its estimate has no previous value)."""
        return self.config.damping if t > 1 else 1.0

    # -- the iteration --------------------------------------------------------------------------

    def begin(self, y: Tensor, ctx: dict) -> Tensor:
        U = self.linear(1)[0]
        e = self.prior_energy(y)
        g2 = (1.0 / e) * y.new_ones(y.shape[0], 1) if not isinstance(e, Tensor) else 1.0 / e
        ctx.update(r2=y.new_zeros(y.shape[0], self.n), g2=g2, uty=y @ U, sigma2=noise_variance(y, self.snr, self.n),
                   alpha1=None, floor=reference.amp_floor(y, self.n))
        return super().begin(y, ctx)

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        _, s, V = self.linear(t)
        r2, g2 = ctx["r2"], ctx["g2"]
        x2, alpha2 = lmmse(r2, g2, ctx["uty"], s, V, ctx["sigma2"] * self.noise_gain(t), self.n)
        r1, g1 = extrinsic(x2, alpha2, r2, g2, ctx["floor"])
        x_new, alpha1 = self.denoiser(t)(r1, 1.0 / g1)
        beta = self.damping(t)
        if beta != 1.0:
            x_new, alpha1 = beta * x_new + (1 - beta) * x, beta * alpha1 + (1 - beta) * ctx["alpha1"]
        ctx["r2"], ctx["g2"] = extrinsic(x_new, alpha1, r1, g1, ctx["floor"])
        ctx["alpha1"], ctx["g1"] = alpha1, g1
        return x_new

    def products(self) -> list[Product]:
        trained = self.config.linear == "learned" if isinstance(self.config, LvampConfig) else False
        return [Product(1, self.m, self.rank, trained), Product(2 * self.K, self.n, self.rank, trained)]

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        return vamp_direct(self.A, y, noise_variance(y, self.snr, self.n), VAMP.denoiser(self, 1),
                           VAMP.prior_energy(self, y), self.K, self.config.damping, (self.U, self.s, self.V))

    @torch.no_grad()
    def trace(self, y: Tensor, depth: int | None = None, residual: bool = False) -> Tensor:
        """The variance ``1 / gamma_1`` that iteration ``t = 1..depth`` hands its denoiser, ``(batch, depth)``
        (state evolution makes it non-increasing where VAMP is valid); with ``residual`` instead
        ``||y - A x_t||^2`` of each iterate."""
        depth = self.K if depth is None else depth
        check(y.dim() == 2 and y.shape[1] == self.m, f"y must have shape (batch, {self.m}), got {tuple(y.shape)}")
        check(1 <= depth <= self.K, f"depth={depth} must be in 1..{self.K}")
        ctx: dict = {}
        x = self.begin(y, ctx)
        out = []
        for t in range(1, depth + 1):
            x = self.step(t, x, y, ctx)
            r = y - x @ self.A.T
            out.append((r * r).sum(-1, keepdim=True) if residual else 1.0 / ctx["g1"])
        return torch.cat(out, dim=1)

    def diverged_at(self, y: Tensor, factor: float = DIVERGENCE_FACTOR, depth: int | None = None) -> Tensor:
        """Per sample, the first iteration (1-based) at which VAMP diverged, 0 where it did not; ``(batch,)``.

        Diverged: the denoiser's variance ``1 / gamma_1`` above ``factor`` times the first iteration's
        (:func:`unrolled.models.amp.first_divergence`, AMP's rule), or the error growing: the residual
        ``||y - A x_t||^2`` above ``RESIDUAL_FACTOR`` times both its least value so far and ``RESIDUAL_GUARD m
        sigma^2`` (fluctuations at the noise level are not a divergence), or not finite. (A factor 2 flagged
        one i.i.d. 61 x 121 signal of 200 whose residual doubled once while its error kept falling.) Measured
        on 500 signals at 16 iterations, 40 dB, against "the signal's NMSE rose 6 dB above its best so far": Toeplitz
        (rho = 0.9) 250 x 500, 476 of 500 diverged, all 476 flagged (the variance rule alone: 1); none
        flagged on i.i.d., kappa = 100, low-rank and partial DCT 250 x 500, where none diverged."""
        tau = first_divergence(self.trace(y, depth), factor)
        res = self.trace(y, depth, residual=True)
        low = torch.cat([res[:, :1], torch.cummin(res, dim=1).values[:, :-1]], dim=1)
        guard = RESIDUAL_GUARD * self.m * noise_variance(y, self.snr, self.n)
        bad = ~torch.isfinite(res) | (res > RESIDUAL_FACTOR * torch.maximum(low, guard))
        grew = torch.where(bad.any(dim=1), bad.to(torch.int64).argmax(dim=1) + 1, 0)
        never = res.shape[1] + 1
        first = torch.minimum(torch.where(tau > 0, tau, never), torch.where(grew > 0, grew, never))
        return torch.where(first < never, first, 0)


@register("lvamp")
class LVAMP(VAMP):
    """VAMP with learned per-layer denoiser parameters and noise gains, optionally a learned linear stage."""

    Config = LvampConfig
    reduces_to = "VAMP with the same denoiser (the learned parameters start at VAMP's)"

    def __init__(self, problem: Problem, config: LvampConfig) -> None:
        super().__init__(problem, config)
        if config.denoiser == "bg":  # unconstrained parameters: logit p, log var
            init = dict(logit_p=math.log(self.p / (1 - self.p)), log_var=math.log(config.var))
        elif config.denoiser == "gauss":
            init = dict(log_var=math.log(config.var))
        else:
            init = dict(alpha=config.alpha)
        init["log_gain"] = 0.0
        if config.linear != "fixed":
            init["s"] = self.s
        self.layers = nn.ModuleList(layer(**init) for _ in range(self.K))
        if config.linear == "learned":
            self.U_learned = nn.Parameter(self.U.clone())
            self.V_learned = nn.Parameter(self.V.clone())

    def denoiser(self, t: int):
        q = self.layers[t - 1]
        if self.config.denoiser == "bg":
            return partial(ops.bg_denoise, eps=torch.sigmoid(q.logit_p), var=q.log_var.exp())
        if self.config.denoiser == "gauss":
            return partial(gauss_denoise, var=q.log_var.exp())
        return partial(ops.soft_denoise, alpha=q.alpha)

    def linear(self, t: int) -> tuple[Tensor, Tensor, Tensor]:
        if self.config.linear == "learned":
            return self.U_learned, self.layers[t - 1].s, self.V_learned
        if self.config.linear == "spectra":
            return self.U, self.layers[t - 1].s, self.V
        return self.U, self.s, self.V

    def noise_gain(self, t: int) -> Tensor:
        return self.layers[t - 1].log_gain.exp()


def solve(H: Tensor, b: Tensor) -> Tensor:
    """``H^{-1} b`` by LU and one step of iterative refinement (``A A^T`` of a nearly square A is ill-conditioned)."""
    x = torch.linalg.solve(H, b)
    return x + torch.linalg.solve(H, b - H @ x)


def vamp_direct(A: Tensor, y: Tensor, sigma2: Tensor, denoise, energy: Tensor | float, iters: int,
                damping: float = 1.0, factors: tuple[Tensor, Tensor, Tensor] | None = None) -> list[Tensor]:
    """VAMP as Rangan et al. write it (Alg. 1), the LMMSE stage by a direct solve per sample instead of
    the SVD: ``x_2 = (A^T A / sigma^2 + gamma_2 I)^{-1} (A^T y / sigma^2 + gamma_2 r_2)``, ``alpha_2 =
    gamma_2 tr((A^T A / sigma^2 + gamma_2 I)^{-1}) / n``, both through the ``m x m`` system of the
    matrix inversion lemma (``x_2 = r_2 + A^T (A A^T + q I)^{-1} (y - A r_2)``, ``alpha_2 = 1 -
    tr((A A^T + q I)^{-1} A A^T) / n``, ``q = gamma_2 sigma^2``), which is better conditioned at high SNR.
    Returns ``[0, x_1, ..., x_iters]``; ``O(batch m^3)`` per iteration: a definition for tests. With the SVD
    ``factors = (U, s, V)`` the same loop runs :func:`lmmse` instead (the initial twin: VAMP amplifies
    rounding, so two exact LMMSE forms part by ~1e-11 after a few iterations on a nearly square ``A``)."""
    m, n = A.shape
    G, eye = A @ A.T, torch.eye(m, dtype=A.dtype)
    r2 = y.new_zeros(y.shape[0], n)
    g2 = (1.0 / energy) * y.new_ones(y.shape[0], 1) if not isinstance(energy, Tensor) else 1.0 / energy
    x, alpha1_prev, outs, floor = r2, None, [r2], reference.amp_floor(y, n)
    for t in range(1, iters + 1):
        if factors is not None:
            x2, alpha2 = lmmse(r2, g2, y @ factors[0], factors[1], factors[2], sigma2, n)
        else:
            H = G[None] + (g2 * sigma2)[:, :, None] * eye  # (batch, m, m)
            x2 = r2 + solve(H, (y - r2 @ A.T).unsqueeze(-1)).squeeze(-1) @ A
            alpha2 = 1 - solve(H, G.expand_as(H)).diagonal(dim1=-2, dim2=-1).sum(-1, keepdim=True) / n
        r1, g1 = extrinsic(x2, alpha2, r2, g2, floor)
        x_new, alpha1 = denoise(r1, 1.0 / g1)
        if damping != 1.0 and t > 1:
            x_new, alpha1 = damping * x_new + (1 - damping) * x, damping * alpha1 + (1 - damping) * alpha1_prev
        r2, g2 = extrinsic(x_new, alpha1, r1, g1, floor)
        x, alpha1_prev = x_new, alpha1
        outs.append(x)
    return outs


def bg_mmse(tau2: float, p: float, var: float, points: int = 400001) -> float:
    """The MSE ``E[Var(x | r)]`` of the Bernoulli-Gaussian MMSE denoiser at ``r = x + N(0, tau2)``, by the
    trapezoid rule over ``r`` (posterior variance ``pi c tau2 + pi (1 - pi) c^2 r^2``, no cancellation)."""
    import numpy as np

    width = 12 * math.sqrt(var + tau2)
    r = np.linspace(-width, width, points)
    c = var / (var + tau2)
    pi = 1 / (1 + np.exp(-(math.log(p / (1 - p)) - 0.5 * math.log1p(var / tau2) + 0.5 * c * r * r / tau2)))
    post = pi * c * tau2 + pi * (1 - pi) * c * c * r * r

    def normal(v):
        return np.exp(-r * r / (2 * v)) / math.sqrt(2 * math.pi * v)

    return float(np.trapezoid(post * ((1 - p) * normal(tau2) + p * normal(var + tau2)), r))


def state_evolution(s: Tensor, n: int, sigma2: float, p: float, var: float, iters: int) -> list[tuple[float, float]]:
    """VAMP's state evolution (Rangan et al. 2019, Sec. IV) for a right-rotationally invariant ``A`` with
    singular values ``s``, the Bernoulli-Gaussian prior and its MMSE denoiser, noise variance ``sigma2``:
    per iteration ``(1 / gamma_1, mse)``, the variance the denoiser sees and the predicted MSE per entry
    of ``x_t`` (matched, so ``alpha_1 = gamma_1 mse``)."""
    s2 = (s.double() ** 2).tolist()
    g2, out = 1.0 / (p * var), []
    for _ in range(iters):
        q = g2 * sigma2
        alpha2 = ((n - len(s2)) + sum(q / (v + q) for v in s2)) / n
        g1 = g2 * (1 - alpha2) / alpha2
        mse = bg_mmse(1.0 / g1, p, var)
        alpha1 = min(max(g1 * mse, ALPHA_MIN), 1 - ALPHA_MIN)
        out.append((1.0 / g1, mse))
        g2 = g1 * (1 - alpha1) / alpha1
    return out
