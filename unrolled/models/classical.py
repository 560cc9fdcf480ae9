"""ISTA and FISTA as fixed (untrained) K-layer networks.

They call the same step functions as :mod:`unrolled.solvers`, so a network and its
solver cannot drift apart: ``ista`` is ``x <- eta_{lam/L}(x + A^T (y - A x)/L)``, ``fista``
the same step at the momentum point (Beck & Teboulle, 2009).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .. import ops, solvers
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
    reduces_to = "ISTA (unrolled.solvers.ista)"

    def __init__(self, problem, config: ClassicalConfig) -> None:
        super().__init__(problem, config)
        self.step_L = self.L if config.L is None else config.L

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        return ops.pgd_step(x, y, self.A, self.A, 1 / self.step_L, self.config.lam / self.step_L, self.cuts[t - 1])

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        return list(solvers.ista(self.A, y, self.config.lam, self.K, L=self.step_L, cuts=self.cuts))


@register("fista")
class FISTANet(ISTANet):
    """K FISTA iterations with fixed ``lam``; no trainable parameter."""

    reduces_to = "FISTA (unrolled.solvers.fista)"

    def begin(self, y: Tensor, ctx: dict) -> Tensor:
        x = super().begin(y, ctx)
        ctx.update(x_prev=x, t=1.0)
        return x

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        ctx["t"], beta = ops.fista_momentum(ctx["t"])
        z = x + beta * (x - ctx["x_prev"])
        ctx["x_prev"] = x
        return super().step(t, z, y, ctx)

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        return list(solvers.fista(self.A, y, self.config.lam, self.K, L=self.step_L, cuts=self.cuts))
