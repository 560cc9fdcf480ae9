"""Robust ALISTA (Liu, Chen, Wang & Yin, ICLR 2019; the ALISTA repository's ``AtoW_grad`` + ``robust_ALISTA``).

An encoder maps a (perturbed) matrix ``Ã: (m, n)`` to its weight ``W(Ã)``; an ALISTA decoder
recovers ``x`` from ``y = Ã x`` with ``Ã`` and ``W(Ã)`` (docs/spec.md §7.3).

**Encoder** (``AtoW``): ``eT`` unrolled gradient steps on the re-weighted l2 coherence loss
(``rel2``)

    F(W; Ã) = 1/2 sum_ij Q_ij^2 (Ã^T W - I)_ij^2,  Q_ij^2 = 1 (i != j), n - 1 (i = j),
    W_0 = Ã,   W_t = W_{t-1} - B_t ((Ã^T W_{t-1} - I) o Q^2),   t = 1 .. eT,

with one learned ``B_t: (m, n)`` per layer in place of the ``Ã`` of the true gradient
``Ã ((Ã^T W - I) o Q^2)``. On the constraint set ``w_i^T ã_i = 1`` the loss is half the
ALISTA objective of docs/spec.md §4; the heavy diagonal weight ``n - 1`` is the reference's
penalty form of that constraint. Initialisation (``binit="default"``): ``B_t = eta A`` with the
nominal A and ``eta = 1e-3``, so at initialisation the encoder is plain gradient descent with
step ``eta`` (``binit = normal | uniform``: N(0, 0.01^2) or U(-0.01, 0.01), seeded by ``init_seed``).
**Choice (extension):** ``project=True`` follows every step with the exact projection
``w_i <- w_i + (1 - ã_i^T w_i) ã_i / ||ã_i||^2`` of analytic.pgd (the reference has none).

**Decoder**: ALISTA's ``x <- ss(x + gamma_t W^T (y - Ã x), theta_t)`` (docs/spec.md §6.2) with
``W = W(Ã)``. :meth:`RobustALISTA.forward` serves the nominal matrix (the registry contract);
:meth:`RobustALISTA.decode` takes a matrix per group of signals, batched over matrices.
Training: unrolled/training/robust.py (encoder pre-training, joint curriculum).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import ops, solvers
from ..errors import check, choice
from ..ops import Selection
from ..perturbed import alista_iterates
from .base import Config, Product, UnrolledNet, layer, register, selection

BINITS = ("default", "normal", "uniform")


def rel2_loss(W: Tensor, A: Tensor) -> Tensor:
    """``F(W; Ã)`` of every matrix of ``W, A: (..., m, n)``, shape ``(...)``."""
    n = A.shape[-1]
    Z = torch.matmul(A.transpose(-1, -2), W) - torch.eye(n, dtype=A.dtype, device=A.device)
    diag = torch.diagonal(Z, dim1=-2, dim2=-1)
    return 0.5 * ((Z * Z).sum((-2, -1)) + (n - 2) * (diag * diag).sum(-1))


def project_columns(W: Tensor, A: Tensor) -> Tensor:
    """``w_i + (1 - a_i^T w_i) a_i / ||a_i||^2``: the nearest W with ``w_i^T a_i = 1``."""
    return W + A * ((1 - (A * W).sum(-2, keepdim=True)) / (A * A).sum(-2, keepdim=True))


def coherence_descent(A: Tensor, eta: float, steps: int, project: bool = False) -> Tensor:
    """``steps`` of plain gradient descent ``W <- W - eta grad F(W; A)`` from ``W = A``, the gradient by
    autograd: what the encoder computes at its default initialisation when ``A`` is the nominal matrix."""
    W = A.clone()
    for _ in range(steps):
        with torch.enable_grad():
            Wg = W.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(rel2_loss(Wg, A).sum(), Wg)
        W = W - eta * grad
        if project:
            W = project_columns(W, A)
    return W


class AtoW(nn.Module):
    """The encoder ``Ã -> W(Ã)``, batched: ``A: (Abs, m, n) -> W: (Abs, m, n)`` (see the module docstring)."""

    def __init__(self, A: Tensor, steps: int = 4, eta: float = 1e-3, binit: str = "default", init_seed: int = 0,
                 project: bool = False) -> None:
        super().__init__()
        choice(binit, BINITS, "encoder init (binit)")
        check(steps >= 1, f"eT={steps} must be >= 1")
        check(eta > 0, f"eta={eta} must be > 0")
        g = torch.Generator().manual_seed(init_seed)
        shape, A64 = A.shape, A.to(torch.float64)

        def init() -> Tensor:
            if binit == "normal":
                return 0.01 * torch.randn(shape, generator=g, dtype=torch.float64)
            if binit == "uniform":
                return 0.02 * torch.rand(shape, generator=g, dtype=torch.float64) - 0.01
            return eta * A64.clone()

        self.B = nn.ParameterList(nn.Parameter(init()) for _ in range(steps))
        self.project = project

    def forward(self, A: Tensor) -> Tensor:
        check(A.dim() == 3 and A.shape[1:] == self.B[0].shape,
              f"the encoder takes matrices (Abs, {self.B[0].shape[0]}, {self.B[0].shape[1]}), got {tuple(A.shape)}")
        n = A.shape[-1]
        eye = torch.eye(n, dtype=A.dtype, device=A.device)
        q2 = 1 + (n - 2) * eye  # Q o Q of the reference's rel2 loss
        At, W = A.transpose(1, 2), A
        for B in self.B:
            W = W - torch.matmul(B, (torch.matmul(At, W) - eye) * q2)
            if self.project:
                W = project_columns(W, A)
        return W

    def flops(self, matrices: int, backward: bool = False) -> float:
        """Matrix-product FLOPs for ``matrices`` matrices: per layer ``Ã^T W`` and ``B dF`` (2 m n^2 each);
        a training step's backward adds two products per product (input and the trained ``B``)."""
        m, n = self.B[0].shape
        return 2.0 * matrices * len(self.B) * 2 * m * n * n * (3 if backward else 1)


@dataclass
class RobustAlistaConfig(Config):
    ss: Selection = selection("percentage")
    gamma0: float = 1.0
    theta0: float | None = None  # None: lam / (1.001 L)
    eT: int = 4
    eta: float = 1e-3
    binit: str = "default"  # default (B_t = eta A) | normal | uniform
    init_seed: int = 0
    project: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        choice(self.binit, BINITS, "encoder init (binit)")
        check(isinstance(self.eT, int) and self.eT >= 1, f"eT={self.eT} must be an integer >= 1")
        check(self.eta > 0, f"eta={self.eta} must be > 0")


@register("robust-alista")
class RobustALISTA(UnrolledNet):
    """ALISTA whose W is the encoder's ``W(Ã)``; learned: ``B_1..B_eT`` (shared) and ``gamma_t``, ``theta_t``."""

    Config = RobustAlistaConfig
    reduces_to = ("the proximal-gradient iteration with W = eT steps of gradient descent (step eta) on the rel2 "
                  "coherence loss from W = A, gamma = gamma0, theta = theta0")

    def __init__(self, problem, config: RobustAlistaConfig) -> None:
        super().__init__(problem, config)
        c = config
        self.encoder = AtoW(problem.A, c.eT, c.eta, c.binit, c.init_seed, c.project)
        self.layers = nn.ModuleList(layer(gamma=c.gamma0, theta=self.theta0()) for _ in range(self.K))

    def theta0(self) -> float:
        c = self.config
        return c.lam / self.scale if c.theta0 is None else c.theta0

    def weights(self, A: Tensor | None = None) -> Tensor:
        """``W(Ã)`` for ``A: (Abs, m, n)``, or ``W(A)`` of the nominal matrix, ``(m, n)``."""
        return self.encoder(self.A[None])[0] if A is None else self.encoder(A)

    def begin(self, y: Tensor, ctx: dict) -> Tensor:
        ctx["W"] = self.weights()
        return super().begin(y, ctx)

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        p = self.layers[t - 1]
        return self.shrink(t, ops.gradient_step(x, y, self.A, ctx["W"], p.gamma), p.theta)

    def decode(self, y: Tensor, A: Tensor, W: Tensor | None = None, depth: int | None = None,
               all_layers: bool = False) -> Tensor | list[Tensor]:
        """``y: (Abs, xbs, m)`` measured by ``A: (Abs, m, n)`` -> ``x: (Abs, xbs, n)``; ``W`` defaults to the
        encoder's ``W(A)`` (give a closed-form W to use the decoder alone)."""
        W = self.weights(A) if W is None else W
        gammas = [p.gamma for p in self.layers]
        thetas = [p.theta for p in self.layers]
        its = alista_iterates(y, A, W, gammas, thetas, self.cuts, depth)
        return list(its) if all_layers else solvers.final(its)

    def products(self) -> list[Product]:
        return [Product(2 * self.K, self.m, self.n)]

    def flops(self, batch: int, backward: bool = False) -> float:
        """The decoder's products for ``batch`` samples plus one encoder pass (one matrix per forward)."""
        return super().flops(batch, backward) + self.encoder.flops(1, backward)

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        c = self.config
        W = coherence_descent(self.A, c.eta, c.eT, c.project)
        return list(solvers.proximal_gradient(self.A, y, W, c.gamma0, self.theta0(), self.K, self.cuts))
