"""Analytic weight matrix of ALISTA (docs/spec.md §4).

``min_W sum_{i != j} (w_i^T a_j)^2  s.t.  w_i^T a_i = 1`` (Frobenius approximation of the
generalised coherence). ``W`` has the shape of ``A``, ``(m, n)``, and acts as ``W^T``.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from .errors import check

METHODS = ("closed-form", "pgd")


@dataclass
class AnalyticW:
    """A weight matrix with how it was obtained."""

    W: Tensor
    method: str
    objective: float
    coherence: float
    rank: int
    seconds: float
    iterations: int = 0  # pgd: iterations run (closed form: 0)
    change: float = 0.0  # pgd: the last relative change ||W_new - W||_F / ||W||_F
    converged: bool = True  # pgd: the change fell below tol within max_iter

    @property
    def rank_deficient(self) -> bool:
        return self.rank < self.W.shape[0]


def objective(W: Tensor, A: Tensor) -> float:
    """``sum_{i != j} (w_i^T a_j)^2``."""
    G = W.T @ A
    return float((G * G).sum() - (torch.diagonal(G) ** 2).sum())


def coherence(W: Tensor, A: Tensor) -> float:
    """Generalised mutual coherence ``max_{i != j} |w_i^T a_j|`` (``W = A`` gives the plain one)."""
    G = (W.T @ A).abs()
    G.fill_diagonal_(0)
    return float(G.max())


def closed_form(A: Tensor, rcond: float = 1e-10) -> tuple[Tensor, int]:
    """``W = (A^+)^T`` with column ``i`` divided by ``(A^+ A)_ii``; returns ``(W, rank)``.

    Column ``i`` solves ``min ||A^T w||^2 s.t. a_i^T w = 1``, i.e. ``w_i ∝ (A A^T)^+ a_i``;
    the pseudo-inverse handles a rank-deficient ``A`` (the minimum-norm optimum).
    """
    A64 = _finite(A)
    U, S, Vh = torch.linalg.svd(A64, full_matrices=False)
    rank = int((S > rcond * S[0]).sum())
    U, S, Vh = U[:, :rank], S[:rank], Vh[:rank]
    P = (Vh.T / S) @ U.T  # A^+, (n, m)
    d = (P * A64.T).sum(dim=1)  # (A^+ A)_ii
    check(bool((d > 1e-12).all()), "a column of A lies (numerically) outside A's range; cannot satisfy w_i^T a_i = 1")
    return (P.T / d).to(A.dtype), rank


class PGDResult(NamedTuple):
    """The outcome of :func:`pgd`."""

    W: Tensor
    iterations: int
    change: float  # the last relative change ||W_new - W||_F / ||W||_F
    converged: bool  # change < tol within max_iter
    step: float


def pgd(A: Tensor, step: float | None = None, max_iter: int = 1000, tol: float = 1e-12) -> PGDResult:
    """Projected gradient on ``min 1/2 ||A^T W - I||_F^2 s.t. w_i^T a_i = 1`` (ALISTA's ``CalculateW.m``).

    From ``W = A``: ``W <- W - step A (A^T W - I)``, then per column
    ``w_i <- w_i + (1 - a_i^T w_i) a_i / ||a_i||^2`` (the exact projection onto the constraint);
    stop when ``||W_new - W||_F / ||W||_F < tol``. On the constraint set this objective is
    ``1/2 sum_{i != j} (w_i^T a_j)^2`` plus a constant, so both have the same minimiser.

    The gradient ``W -> A (A^T W - I)`` is affine with Hessian ``I (x) A A^T``, so it is Lipschitz with
    ``L = ||A||_2^2`` (not ``||A||_2^4``): the iteration converges for ``0 < step < 2 / L``.
    ``step=None`` takes ``1 / L``; an explicit step (the reference's 0.1, stable while
    ``||A||_2^2 < 20``) outside ``(0, 2 / L)`` is an error, as is a non-finite ``A``.
    """
    A64 = _finite(A)
    L = float(torch.linalg.matrix_norm(A64, ord=2)) ** 2
    check(L > 0, "A is zero; an analytic W needs a non-zero matrix")
    check(max_iter >= 1 and tol >= 0, f"max_iter={max_iter} must be >= 1 and tol={tol} >= 0")
    if step is None:
        step = 1.0 / L
    check(0 < step * L < 2, f"PGD step={step:g} diverges for this A: it needs 0 < step < 2/||A||^2 = {2 / L:.4g} "
                            f"(||A||^2 = {L:.4g}); omit step to use 1/||A||^2")
    n = A64.shape[1]
    eye = torch.eye(n, dtype=torch.float64)
    norms2 = (A64 * A64).sum(0)
    W = A64.clone()
    iterations, change = 0, math.inf
    while iterations < max_iter and not change < tol:
        iterations += 1
        W_new = W - step * (A64 @ (A64.T @ W - eye))
        W_new = W_new + A64 * ((1 - (A64 * W_new).sum(0)) / norms2)
        change = float(torch.linalg.norm(W_new - W) / torch.linalg.norm(W))
        W = W_new
        check(math.isfinite(change), f"PGD produced NaN/Inf at iteration {iterations} (step={step:g}, "
                                     f"||A||^2 = {L:.4g}); use the closed form (method='closed-form')")
    return PGDResult(W.to(A.dtype), iterations, change, change < tol, step)


def projected_gradient(A: Tensor, step: float | None = None, max_iter: int = 1000,
                       tol: float = 1e-12) -> tuple[Tensor, int]:
    """:func:`pgd` as ``(W, iterations)``, warning when it stops at ``max_iter`` before meeting ``tol``."""
    res = pgd(A, step, max_iter, tol)
    _warn_unconverged(res, max_iter, tol)
    return res.W, res.iterations


def _warn_unconverged(res: PGDResult, max_iter: int, tol: float) -> None:
    if not res.converged:
        warnings.warn(f"PGD stopped at max_iter={max_iter} with relative change {res.change:.2g} > tol={tol:g}; "
                      f"W is not converged (raise max_iter, or use method='closed-form')", stacklevel=3)


def _finite(A: Tensor) -> Tensor:
    """``A`` in float64, refused if it holds NaN or Inf."""
    A64 = A.to(torch.float64)
    check(bool(torch.isfinite(A64).all()), "A contains NaN or Inf; an analytic W needs a finite matrix")
    return A64


def analytic_weights(A: Tensor, method: str = "closed-form", **kwargs) -> AnalyticW:
    """Compute W by ``method`` (``closed-form``, or ``pgd`` with :func:`pgd`'s keywords) and report its
    quality and, for ``pgd``, its convergence (a warning when it stops at ``max_iter``).

    A rank-deficient ``A`` (singular ``A A^T``) triggers a warning that the
    pseudo-inverse is used; a non-finite ``A`` is an error.
    """
    check(method in METHODS, f"unknown W method {method!r}; valid: {', '.join(METHODS)}")
    start = time.perf_counter()
    if method == "closed-form":
        W, rank = closed_form(A, **kwargs)
        iters, change, converged = 0, 0.0, True
        seconds = time.perf_counter() - start
    else:
        res = pgd(A, **kwargs)
        seconds = time.perf_counter() - start
        _warn_unconverged(res, kwargs.get("max_iter", 1000), kwargs.get("tol", 1e-12))
        W, iters, change, converged = res.W, res.iterations, res.change, res.converged
        rank = int(torch.linalg.matrix_rank(A.to(torch.float64), rtol=1e-10))
    if rank < A.shape[0]:
        warnings.warn(f"A is rank-deficient (rank {rank} < m={A.shape[0]}): A A^T is singular, "
                      f"W uses the pseudo-inverse (minimum-norm optimum)", stacklevel=2)
    return AnalyticW(W, method, objective(W, A), coherence(W, A), rank, seconds, iters, change, converged)
