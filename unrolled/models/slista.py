"""SLISTA: ISTA with learned step sizes only ("Learning step sizes for unfolded sparse
coding", Ablin, Moreau, Massias & Gramfort, NeurIPS 2019; tomMoral/adopty), docs/spec.md §6.

``x <- eta_{lam s_t}(x + s_t A^T (y - A x))``: one learned step ``s_t`` per layer, ``lam``
fixed (the config's). Initialisation ``s_t = 1/L`` with the exact ``L = ||A||_2^2`` (not
``1.001 L``), so the network at initialisation is ISTA. Learned steps tend to lie in
``[1/L_S, 2/L_S]`` with ``L_S`` the local Lipschitz constant on the support.
"""

from __future__ import annotations

from torch import Tensor, nn

from .. import ops, solvers
from .base import UnrolledNet, layer, register


@register("slista")
class SLISTA(UnrolledNet):
    """``x <- eta_{lam s_t}(x + s_t A^T (y - A x))``; learned ``s_t`` only."""

    reduces_to = "ISTA with step 1/L"

    def __init__(self, problem, config) -> None:
        super().__init__(problem, config)
        self.layers = nn.ModuleList(layer(s=1 / self.L) for _ in range(self.K))

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        s = self.layers[t - 1].s
        return self.shrink(t, ops.gradient_step(x, y, self.A, self.A, s), self.config.lam * s)

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        return list(solvers.ista(self.A, y, self.config.lam, self.K, L=self.L, cuts=self.cuts))
