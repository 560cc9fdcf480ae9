"""LFISTA: learned FISTA with untied momentum matrices (docs/spec.md §6; Open-L2O's LFISTA). The
design-space paper's "LFISTA" is another network: ``lwa`` with the FISTA gate pattern (§8).

``x_t = eta_{theta_t}(W_e y + W_g^t x_{t-1} + W_m^t x_{t-2})`` with ``x_0 = x_{-1} = 0``;
``W_e: (n, m)`` shared, ``W_g^t, W_m^t: (n, n)`` and ``theta_t`` per layer.

Initialisation: ``W_e = A^T / L``, ``W_g^t = (1 + m_t)(I - W_e A)``,
``W_m^t = -m_t (I - W_e A)``, ``theta = lam / L`` with the FISTA extrapolation weight
``m_t = (s_t - 1) / s_{t+1}``, ``s_1 = 1`` (:func:`~unrolled.ops.fista_momentum`,
so ``m_1 = 0``). Then ``W_e y + W_g x_{t-1} + W_m x_{t-2}`` is the ISTA step at the
momentum point ``z = x_{t-1} + m_t (x_{t-1} - x_{t-2})`` and the network is FISTA with
step ``1/L``. ``W_m^1`` multiplies ``x_{-1} = 0``; it is kept so that every layer has the
same parameters (its gradient is zero).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import ops, solvers
from .base import Product, UnrolledNet, layer, register


@register("lfista")
class LFISTA(UnrolledNet):
    """``x_t = eta_{theta_t}(W_e y + W_g^t x_{t-1} + W_m^t x_{t-2})``; all matrices learned."""

    reduces_to = "FISTA with step 1/L"

    def __init__(self, problem, config) -> None:
        super().__init__(problem, config)
        A = problem.A.to(torch.float64)
        We = A.T / self.L
        P = torch.eye(self.n, dtype=torch.float64) - We @ A
        self.We = nn.Parameter(We)
        layers, s = [], 1.0
        for _ in range(self.K):
            s, m = ops.fista_momentum(s)
            layers.append(layer(Wg=(1 + m) * P, Wm=-m * P, theta=config.lam / self.L))
        self.layers = nn.ModuleList(layers)

    def begin(self, y: Tensor, ctx: dict) -> Tensor:
        x = super().begin(y, ctx)
        ctx.update(We_y=y @ self.We.T, x_prev=x)
        return x

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        p = self.layers[t - 1]
        z = torch.addmm(torch.addmm(ctx["We_y"], x, p.Wg.T), ctx["x_prev"], p.Wm.T)
        ctx["x_prev"] = x
        return self.shrink(t, z, p.theta)

    def products(self) -> list[Product]:
        return [Product(1, self.m, self.n, True), Product(2 * self.K, self.n, self.n, True)]

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        return list(solvers.fista(self.A, y, self.config.lam, self.K, L=self.L, cuts=self.cuts))
