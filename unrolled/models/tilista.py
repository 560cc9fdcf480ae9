"""TiLISTA (Liu, Chen, Wang & Yin, ICLR 2019 — the tied LISTA-CPSS of the ALISTA paper), docs/spec.md §6.

``x <- ss(x + alpha_t W^T (y - A x), theta_t)``: one learned ``W`` of the shape of ``A``,
``(m, n)``, shared by all layers, and two learned scalars ``alpha_t``, ``theta_t`` per layer.
Initialisation ``W = A / scale``, ``alpha = 1``, ``theta = lam / scale`` (``scale = 1.001 L``):
without support selection that is ISTA with step ``1/scale``. Percentage support
selection by default (as in the paper).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .. import ops, solvers
from ..ops import Selection
from .base import Config, Product, UnrolledNet, layer, register, selection


@dataclass
class TiListaConfig(Config):
    ss: Selection = selection("percentage")


@register("tilista")
class TiLISTA(UnrolledNet):
    """``x <- ss(x + alpha_t W^T (y - A x), theta_t)``; learned ``W`` (shared), ``alpha_t``, ``theta_t``."""

    Config = TiListaConfig
    reduces_to = "ISTA with step 1/(1.001 L) (with the model's support selection)"

    def __init__(self, problem, config: TiListaConfig) -> None:
        super().__init__(problem, config)
        self.W = nn.Parameter(self.A / self.scale)
        self.layers = nn.ModuleList(layer(alpha=1.0, theta=config.lam / self.scale) for _ in range(self.K))

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        p = self.layers[t - 1]
        return self.shrink(t, ops.gradient_step(x, y, self.A, self.W, p.alpha), p.theta)

    def products(self) -> list[Product]:
        return [Product(self.K, self.m, self.n), Product(self.K, self.m, self.n, True)]

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        return list(solvers.ista(self.A, y, self.config.lam, self.K, L=self.scale, cuts=self.cuts))
