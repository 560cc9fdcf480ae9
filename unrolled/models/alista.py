"""ALISTA and its thresholding variants: analytic W, a few learned scalars per layer.

* ``alista`` (Liu et al., ICLR 2019): ``x <- ss(x + gamma_t W^T (y - A x), theta_t)``, W from
  SPEC §4, ``gamma = 1``, ``theta = lam / (1.001 L)`` at initialisation.
* ``alista-at`` (adaptive thresholds, Kim & Park 2020 as in the NA-ALISTA code): the same
  step with per-entry ``theta_{t,i} = theta_t / (|x_i| / eps + 1)`` from the current iterate.
* ``aglista`` (Wu et al., ICLR 2020): gain gate ``g = 1 + theta_{t-1} nu_t exp(-v_t |x|)``,
  ``x~ = ss(x - gamma_t W^T (A (g * x) - y), theta_t)``, overshoot
  ``o = 1 + a_t / (|x~ - x| + 0.01)`` and ``x <- o * x~ + (1 - o) * x`` (SPEC §6 form).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import functional as F
from ..analytic import analytic_weights
from ..errors import choice
from .base import Config, UnrolledNet, layer, register


@dataclass
class AlistaConfig(Config):
    ss: str = "percentage"
    weights: str = "closed-form"  # closed-form | pgd  (analytic W, SPEC §4)
    gamma0: float = 1.0
    theta0: float | None = None  # None: lam / (1.001 L)

    def __post_init__(self) -> None:
        super().__post_init__()
        choice(self.weights, ("closed-form", "pgd"), "weights method")


class AnalyticNet(UnrolledNet):
    """Base of the ALISTA family: the analytic W as a buffer."""

    Config = AlistaConfig

    def __init__(self, problem, config: AlistaConfig) -> None:
        super().__init__(problem, config)
        self.register_buffer("W", analytic_weights(problem.A, config.weights).W.clone())

    def theta0(self) -> float:
        c = self.config
        return c.lam / self.scale if c.theta0 is None else c.theta0


@register("alista")
class ALISTA(AnalyticNet):
    """``x <- ss(x + gamma_t W^T (y - A x), theta_t)``; 2K learned scalars."""

    def __init__(self, problem, config: AlistaConfig) -> None:
        super().__init__(problem, config)
        self.layers = nn.ModuleList(layer(gamma=config.gamma0, theta=self.theta0()) for _ in range(self.K))

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        p = self.layers[t - 1]
        return F.pgd_step(x, y, self.A, self.W, p.gamma, p.theta, self.keep[t - 1], self.with_theta)


@dataclass
class AlistaATConfig(AlistaConfig):
    gamma0: float = 0.5
    theta0: float | None = 0.5
    eps: float = 0.1


@register("alista-at")
class ALISTA_AT(ALISTA):
    """ALISTA with per-entry thresholds ``theta_t / (|x_i| / eps + 1)``."""

    Config = AlistaATConfig

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        p = self.layers[t - 1]
        return F.pgd_step(x, y, self.A, self.W, p.gamma, p.theta, self.keep[t - 1], self.with_theta,
                          eps=self.config.eps)


@dataclass
class AglistaConfig(AlistaConfig):
    gamma0: float = 0.5
    theta0: float | None = 0.5
    a0: float = 0.01
    v0: float = 1.0
    nu0: float = 0.05
    theta_init: float = 1.0


@register("aglista")
class AGLISTA(AnalyticNet):
    """ALISTA with gain and overshoot gates (per layer gamma, theta, nu, v, a; shared theta_init)."""

    Config = AglistaConfig

    def __init__(self, problem, config: AglistaConfig) -> None:
        super().__init__(problem, config)
        c = config
        self.theta_init = nn.Parameter(torch.tensor(c.theta_init, dtype=torch.float64))
        self.layers = nn.ModuleList(layer(gamma=c.gamma0, theta=self.theta0(), nu=c.nu0, v=c.v0, a=c.a0)
                                    for _ in range(self.K))

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        p = self.layers[t - 1]
        theta_prev = self.theta_init if t == 1 else self.layers[t - 2].theta
        return F.gated_step(x, y, self.A, self.W, theta_prev * p.nu, p.v, p.gamma, p.theta, p.a,
                            self.keep[t - 1], self.with_theta)
