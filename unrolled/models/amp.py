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
from ..problem import Problem
from .base import Config, UnrolledNet, layer, register

DENOISERS = ("bg", "soft")
MATRICES = ("fixed", "tied", "untied")


@dataclass
class AmpConfig(Config):
    denoiser: str = "bg"  # bg (Bernoulli-Gaussian MMSE) | soft
    p: float | None = None  # bg prior: P(x_i != 0); None: the problem's p
    var: float = 1.0  # bg prior: variance of the non-zero entries
    alpha: float = 1.5  # soft: threshold in noise deviations

    def __post_init__(self) -> None:
        super().__post_init__()
        choice(self.denoiser, DENOISERS, "denoiser")
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
        return False, ""

    def begin(self, y: Tensor, ctx: dict) -> Tensor:
        ctx.update(v=torch.zeros_like(y), b=0.0)
        return super().begin(y, ctx)

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        c = self.config
        denoise = (partial(ops.bg_denoise, eps=self.p, var=c.var) if c.denoiser == "bg"
                   else partial(ops.soft_denoise, alpha=c.alpha))
        x, v, onsager, outs = y.new_zeros(y.shape[0], self.n), torch.zeros_like(y), 0.0, []
        outs.append(x)
        for _ in range(self.K):
            x, v, onsager = ops.amp_step(x, v, onsager, y, self.A, self.A, denoise)
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

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        x, ctx["v"], ctx["b"] = ops.amp_step(x, ctx["v"], ctx["b"], y, self.A, self.matrix(t), self.denoiser(t),
                                           self.gain(t))
        return x


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
