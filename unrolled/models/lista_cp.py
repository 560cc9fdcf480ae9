"""LISTA-CP and LISTA-CPSS (Chen, Liu, Wang & Yin, NeurIPS 2018), docs/spec.md §6.

LISTA with the coupling ``W_t = I - B_t A`` of their Theorem 1 (partial weight coupling):
``x <- ss(x + W_t^T (y - A x), theta_t)`` with a learned ``W_t`` of the shape of ``A``,
``(m, n)``, used as ``W_t^T`` (the paper's ``(n, m)`` matrix), so the layer is
:func:`~unrolled.ops.gradient_step` with ``gamma = 1``. Initialisation
``W_t = A / scale``, ``theta = lam / scale`` (``scale = 1.001 L``): ISTA with step ``1/scale``.

* ``lista-cp``: no support selection by default; ``tied=True`` shares one ``W``.
* ``lista-cpss``: the same network with percentage support selection (the paper's model
  is untied; the reference README command builds a tied one by mistake).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from .. import ops, solvers
from ..ops import Selection
from .base import Config, Product, UnrolledNet, layer, register, selection


@dataclass
class ListaCPConfig(Config):
    tied: bool = False  # one W for every layer (shared, trained with layer 1)


@dataclass
class ListaCPSSConfig(ListaCPConfig):
    ss: Selection = selection("percentage")


@register("lista-cp")
class LISTA_CP(UnrolledNet):
    """``x <- ss(x + W_t^T (y - A x), theta_t)``; learned ``W_t`` (or tied ``W``) and ``theta_t``."""

    Config = ListaCPConfig
    reduces_to = "ISTA with step 1/(1.001 L) (with the model's support selection)"

    def __init__(self, problem, config: ListaCPConfig) -> None:
        super().__init__(problem, config)
        W = self.A / self.scale
        theta = config.lam / self.scale
        if config.tied:
            self.W = nn.Parameter(W.clone())
            self.layers = nn.ModuleList(layer(theta=theta) for _ in range(self.K))
        else:
            self.layers = nn.ModuleList(layer(W=W, theta=theta) for _ in range(self.K))

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        p = self.layers[t - 1]
        W = self.W if self.config.tied else p.W
        return self.shrink(t, ops.gradient_step(x, y, self.A, W, 1.0), p.theta)

    def products(self) -> list[Product]:
        return [Product(self.K, self.m, self.n), Product(self.K, self.m, self.n, True)]

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        return list(solvers.ista(self.A, y, self.config.lam, self.K, L=self.scale, cuts=self.cuts))


@register("lista-cpss")
class LISTA_CPSS(LISTA_CP):
    """LISTA-CP with percentage support selection (docs/spec.md §5) by default."""

    Config = ListaCPSSConfig
