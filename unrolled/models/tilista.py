"""TiLISTA (Liu, Chen, Wang & Yin, ICLR 2019 — the tied LISTA-CPSS of the ALISTA paper), SPEC §6.

``x <- ss(x + alpha_t W^T (y - A x), theta_t)``: one learned ``W`` of the shape of ``A``,
``(m, n)``, shared by all layers, and two learned scalars ``alpha_t``, ``theta_t`` per layer.
Initialisation ``W = A / scale``, ``alpha = 1``, ``theta = lam / scale`` (``scale = 1.001 L``):
without support selection that is ISTA with step ``1/scale``. Percentage support
selection by default (as in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .. import functional as F
from .base import Config, UnrolledNet, layer, register


@dataclass
class TiListaConfig(Config):
    ss: str = "percentage"


@register("tilista")
class TiLISTA(UnrolledNet):
    """``x <- ss(x + alpha_t W^T (y - A x), theta_t)``; learned ``W`` (shared), ``alpha_t``, ``theta_t``."""

    Config = TiListaConfig

    def __init__(self, problem, config: TiListaConfig) -> None:
        super().__init__(problem, config)
        self.W = nn.Parameter(self.A / self.scale)
        self.layers = nn.ModuleList(layer(alpha=1.0, theta=config.lam / self.scale) for _ in range(self.K))

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        p = self.layers[t - 1]
        return self.shrink(t, F.gradient_step(x, y, self.A, self.W, p.alpha), p.theta)
