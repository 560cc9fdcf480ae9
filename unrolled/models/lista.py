"""LISTA (Gregor & LeCun, ICML 2010), parametrised as in Chen et al. (NeurIPS 2018), docs/spec.md §6.

``x_t = eta_{theta_t}(W_t x_{t-1} + B y)``, ``x_0 = 0``, with ``B: (n, m)`` shared and
``W_t: (n, n)`` per layer (untied) or one ``W`` for all layers (``tied=True``).
Initialisation ``B = A^T / scale``, ``W = I - B A``, ``theta = lam / scale`` with
``scale = 1.001 L``: then ``W x + B y = x + A^T (y - A x) / scale`` and the network is
ISTA with step ``1/scale``. In row form the layer is ``x W^T + y B^T``; ``y B^T`` is
computed once per forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import solvers
from .base import Config, Product, UnrolledNet, layer, register


@dataclass
class ListaConfig(Config):
    tied: bool = False  # one W for every layer (shared: trained at the newest layer's rate)


@register("lista")
class LISTA(UnrolledNet):
    """``x <- eta_{theta_t}(W_t x + B y)``; learned ``B`` (shared), ``W_t`` or ``W``, ``theta_t``."""

    Config = ListaConfig
    reduces_to = "ISTA with step 1/(1.001 L)"

    def __init__(self, problem, config: ListaConfig) -> None:
        super().__init__(problem, config)
        A = problem.A.to(torch.float64)
        B = A.T / self.scale
        W = torch.eye(self.n, dtype=torch.float64) - B @ A
        theta = config.lam / self.scale
        self.B = nn.Parameter(B)
        if config.tied:
            self.W = nn.Parameter(W)
            self.layers = nn.ModuleList(layer(theta=theta) for _ in range(self.K))
        else:
            self.layers = nn.ModuleList(layer(W=W, theta=theta) for _ in range(self.K))

    def begin(self, y: Tensor, ctx: dict) -> Tensor:
        ctx["By"] = y @ self.B.T
        return super().begin(y, ctx)

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        p = self.layers[t - 1]
        W = self.W if self.config.tied else p.W
        return self.shrink(t, torch.addmm(ctx["By"], x, W.T), p.theta)

    def products(self) -> list[Product]:
        return [Product(1, self.m, self.n, True), Product(self.K, self.n, self.n, True)]

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        return list(solvers.ista(self.A, y, self.config.lam, self.K, L=self.scale, cuts=self.cuts))
