"""ISTA and FISTA as fixed (untrained) K-layer networks.

They call the same step functions as :mod:`unrolled.solvers`, so a network and its
solver cannot drift apart: ``ista`` is ``x <- eta_{lam/L}(x + A^T (y - A x)/L)``, ``fista``
the same step at the momentum point (Beck & Teboulle, 2009).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .. import functional as F
from ..errors import check
from .base import Config, UnrolledNet, register


@dataclass
class ClassicalConfig(Config):
    L: float | None = None  # step 1/L; None: ||A||_2^2

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.L is None or self.L > 0, f"L={self.L} must be positive")


@register("ista")
class ISTANet(UnrolledNet):
    """K ISTA iterations with fixed ``lam``; no trainable parameter."""

    Config = ClassicalConfig

    def __init__(self, problem, config: ClassicalConfig) -> None:
        super().__init__(problem, config)
        self.step_L = self.L if config.L is None else config.L

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        return F.pgd_step(x, y, self.A, self.A, 1 / self.step_L, self.config.lam / self.step_L,
                          self.keep[t - 1], self.with_theta)


@register("fista")
class FISTANet(ISTANet):
    """K FISTA iterations with fixed ``lam``; no trainable parameter."""

    def begin(self, y: Tensor, ctx: dict) -> Tensor:
        x = super().begin(y, ctx)
        ctx.update(x_prev=x, t=1.0)
        return x

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        ctx["t"], beta = F.fista_momentum(ctx["t"])
        z = x + beta * (x - ctx["x_prev"])
        ctx["x_prev"] = x
        return super().step(t, z, y, ctx)
