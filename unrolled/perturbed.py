"""Perturbed-matrix problems for robust ALISTA (docs/spec.md §7.3; ALISTA repository README, "Robust ALISTA").

For a nominal ``A: (m, n)`` a perturbed matrix is ``Ã = colnorm(A + sigma G)``, ``G`` standard
Gaussian, every column of the sum scaled to unit l2 norm. A batch has the reference's layout:
``Abs`` matrices, each measuring ``xbs`` signals of its own,

    A: (Abs, m, n),  x: (Abs, xbs, n),  y = x Ã^T + e: (Abs, xbs, m)

(signals and noise as the nominal problem's, docs/spec.md §2). Training draws fresh matrices
and signals from a generator the caller owns (:func:`train_batch`). Validation and test use
fixed sets (:func:`fixed_set`, e.g. 100 matrices x 100 signals per sigma) drawn from seeded
streams of their own, one per purpose (validation / test, and in each: matrices, signals,
noise), so that they never overlap with each other or with training.

**Choice (common random numbers):** a fixed set draws ``G``, the signals and the noise
independently of sigma; the set at sigma is ``colnorm(A + sigma G_k)`` with the same ``G_k``.
Curves against sigma therefore compare the same draws, and sigma = 0 is the nominal matrix.
A smaller set is a prefix of a larger one (matrices first, then signals within a matrix).

The curriculum of the joint and data-augmented trainings is the reference's
``linspace(0, psigma_max, psteps)[1:]`` (:func:`curriculum`): 0.005, 0.01, 0.015, 0.02 for
``psigma_max = 0.02, psteps = 5``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from . import ops
from .errors import check
from .ops import Cut
from .problem import Problem

# Stream purposes; problem.py uses 1..5 for the nominal sets, these never coincide with them.
STREAMS = {("val", "matrices"): 11, ("val", "signals"): 12, ("val", "noise"): 13,
           ("test", "matrices"): 21, ("test", "signals"): 22, ("test", "noise"): 23}
SIGMAS = (0.0, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03)  # the test grid


def stream(seed: int, which: str, part: str) -> torch.Generator:
    """The generator of one fixed set's ``part`` (``matrices``, ``signals`` or ``noise``)."""
    check((which, part) in STREAMS, f"unknown stream {which}/{part}; valid: "
                                    f"{', '.join(f'{w}/{p}' for w, p in STREAMS)}")
    return torch.Generator().manual_seed((seed * 1_000_003 + STREAMS[which, part] * 7919) % 2**63)


def colnorm(A: Tensor) -> Tensor:
    """Every column of ``A: (..., m, n)`` scaled to unit l2 norm."""
    return A / torch.linalg.vector_norm(A, dim=-2, keepdim=True)


def perturb(A: Tensor, sigma: float, G: Tensor) -> Tensor:
    """``colnorm(A + sigma G)`` for ``G: (count, m, n)`` (float64)."""
    check(sigma >= 0 and math.isfinite(sigma), f"sigma={sigma} must be a finite number >= 0")
    return colnorm(A.to(torch.float64) + sigma * G)


def curriculum(psigma_max: float = 0.02, psteps: int = 5) -> list[float]:
    """The reference's stages ``linspace(0, psigma_max, psteps)[1:]`` (``psteps - 1`` of them)."""
    check(psteps >= 2, f"psteps={psteps} must be >= 2 (the first point, sigma = 0, is dropped)")
    check(psigma_max > 0 and math.isfinite(psigma_max), f"psigma_max={psigma_max} must be a finite number > 0")
    return [psigma_max * k / (psteps - 1) for k in range(1, psteps)]


@dataclass
class PerturbedBatch:
    """``A: (Abs, m, n)``, ``x: (Abs, xbs, n)``, ``y: (Abs, xbs, m)``, all of one dtype."""

    A: Tensor
    x: Tensor
    y: Tensor
    sigma: float

    @property
    def flat(self) -> tuple[Tensor, Tensor]:
        """``(x, y)`` as ``(Abs * xbs, n)`` and ``(Abs * xbs, m)`` (for models that do not see Ã)."""
        return self.x.reshape(-1, self.x.shape[-1]), self.y.reshape(-1, self.y.shape[-1])

    def to(self, device, dtype: torch.dtype) -> PerturbedBatch:
        return PerturbedBatch(self.A.to(device, dtype), self.x.to(device, dtype), self.y.to(device, dtype),
                              self.sigma)

    def take(self, matrices: int, signals: int | None = None) -> PerturbedBatch:
        """The first ``matrices`` matrices with their first ``signals`` signals."""
        s = slice(None, signals)
        return PerturbedBatch(self.A[:matrices], self.x[:matrices, s], self.y[:matrices, s], self.sigma)


def measure(problem: Problem, A: Tensor, x: Tensor, generator: torch.Generator, snr: float | None) -> Tensor:
    """``y = x Ã^T + e`` per matrix, the noise rule of :meth:`Problem.measure` per sample (float64)."""
    y = torch.matmul(x, A.transpose(-1, -2))
    snr = problem.spec.snr if snr is None else snr
    if math.isinf(snr) and snr > 0:
        return y
    sigma = y.std(dim=-1, correction=0, keepdim=True) * 10 ** (-snr / 20)
    return y + sigma * torch.randn(y.shape, generator=generator, dtype=torch.float64)


def train_batch(problem: Problem, sigma: float, matrices: int, signals: int, generator: torch.Generator,
                snr: float | None = None, dtype: torch.dtype = torch.float32) -> PerturbedBatch:
    """A fresh batch: ``matrices`` new perturbed matrices, ``signals`` new signals each."""
    check(matrices >= 1 and signals >= 1, f"a batch needs matrices >= 1 and signals >= 1, got {matrices}, {signals}")
    m, n = problem.m, problem.n
    G = torch.randn(matrices, m, n, generator=generator, dtype=torch.float64)
    A = perturb(problem.A, sigma, G)
    x = problem.sample_x(matrices * signals, generator).reshape(matrices, signals, n)
    y = measure(problem, A, x, generator, snr)
    return PerturbedBatch(A, x, y, sigma).to("cpu", dtype)


def fixed_set(problem: Problem, which: str, sigma: float, matrices: int = 100, signals: int = 100,
              snr: float | None = None, dtype: torch.dtype = torch.float64) -> PerturbedBatch:
    """The fixed ``which`` (``val`` or ``test``) set at ``sigma``, from the problem's seed.

    ``G``, signals and noise come from three streams per purpose, drawn matrix by matrix, and
    do not depend on sigma or on the SNR (the noise is one standard normal draw scaled per sample).
    """
    check(which in ("val", "test"), f"which={which!r} must be 'val' or 'test'")
    check(matrices >= 1 and signals >= 1, f"a set needs matrices >= 1 and signals >= 1, got {matrices}, {signals}")
    seed, m, n = problem.spec.seed, problem.m, problem.n
    gG, gx, ge = (stream(seed, which, part) for part in ("matrices", "signals", "noise"))
    G = torch.stack([torch.randn(m, n, generator=gG, dtype=torch.float64) for _ in range(matrices)])
    x = torch.stack([problem.sample_x(signals, gx) for _ in range(matrices)])
    unit = torch.stack([torch.randn(signals, m, generator=ge, dtype=torch.float64) for _ in range(matrices)])
    A = perturb(problem.A, sigma, G)
    y = torch.matmul(x, A.transpose(-1, -2))
    snr = problem.spec.snr if snr is None else snr
    if not (math.isinf(snr) and snr > 0):
        y = y + y.std(dim=-1, correction=0, keepdim=True) * 10 ** (-snr / 20) * unit
    return PerturbedBatch(A, x, y, sigma).to("cpu", dtype)


def closed_form_batch(A: Tensor) -> Tensor:
    """The closed-form W of docs/spec.md §4 for every ``A: (Abs, m, n)`` of full row rank, batched.

    ``W = (A A^T)^{-1} A`` with column i divided by ``a_i^T (A A^T)^{-1} a_i``: one batched Cholesky
    factorisation of ``A A^T`` and one solve instead of an SVD per matrix (the two agree to rounding
    where ``A A^T`` is well conditioned, tests/test_robust.py). A matrix whose Cholesky fails or whose
    pivots spread by more than 1e4 (``A A^T`` conditioned beyond about 1e8, rank-deficient included) takes
    :func:`unrolled.analytic.closed_form`'s SVD (pseudo-inverse) instead.
    """
    from .analytic import closed_form

    A64 = A.to(torch.float64)
    L, info = torch.linalg.cholesky_ex(torch.matmul(A64, A64.transpose(1, 2)))
    P = torch.cholesky_solve(A64, L)
    W = P / (A64 * P).sum(-2, keepdim=True)
    pivots = torch.diagonal(L, dim1=-2, dim2=-1).abs()
    weak = (info != 0) | ~(pivots.amin(-1) > 1e-4 * pivots.amax(-1))  # cond(A A^T) beyond ~1e8
    for k in torch.nonzero(weak).flatten().tolist():
        W[k] = closed_form(A64[k])[0]
    return W.to(A.dtype)


# -- the ALISTA iteration with a matrix per group of signals ---------------------------------------


def alista_iterates(y: Tensor, A: Tensor, W: Tensor, gammas: list[Tensor | float], thetas: list[Tensor | float],
                    cuts: list[Cut | None], depth: int | None = None) -> Iterator[Tensor]:
    """``x <- ss(x + gamma_t W^T (y - Ã x), theta_t)`` with ``y: (Abs, xbs, m)``, ``A, W: (Abs, m, n)``.

    The same step as :func:`unrolled.ops.pgd_step` (docs/spec.md §6.2), batched over matrices:
    the gradient step is a batched product, the shrinkage (with its per-sample support
    selection) runs on the flattened ``(Abs * xbs, n)`` iterate. Yields ``x_0 = 0, ..., x_depth``.
    """
    check(y.dim() == 3 and A.dim() == 3 and W.shape == A.shape and y.shape[0] == A.shape[0]
          and y.shape[2] == A.shape[1], f"y {tuple(y.shape)}, A {tuple(A.shape)} and W {tuple(W.shape)} must be "
                                        f"(Abs, xbs, m), (Abs, m, n) and (Abs, m, n)")
    depth = len(gammas) if depth is None else depth
    n = A.shape[2]
    x = y.new_zeros(y.shape[0], y.shape[1], n)
    yield x
    At = A.transpose(1, 2)
    for t in range(depth):
        z = x + gammas[t] * torch.matmul(y - torch.matmul(x, At), W)
        x = ops.shrink(z.reshape(-1, n), thetas[t], cuts[t]).reshape(z.shape)
        yield x


def fista_iterates(y: Tensor, A: Tensor, lam: float, iters: int, L: Tensor) -> Iterator[Tensor]:
    """FISTA on each ``Ã`` (``L: (Abs,)`` its ``||Ã||_2^2``), as :func:`unrolled.solvers.fista`, batched."""
    n = A.shape[2]
    x = y.new_zeros(y.shape[0], y.shape[1], n)
    x_prev, t = x, 1.0
    inv = (1 / L).reshape(-1, 1, 1).to(y.dtype)
    yield x
    At = A.transpose(1, 2)
    for _ in range(iters):
        t, beta = ops.fista_momentum(t)
        z = x + beta * (x - x_prev)
        g = z + inv * torch.matmul(y - torch.matmul(z, At), A)
        x_prev, x = x, ops.soft_threshold(g, lam * inv)
        yield x
