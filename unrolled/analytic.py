"""Analytic weight matrix of ALISTA (docs/spec.md §4).

``min_W sum_{i != j} (w_i^T a_j)^2  s.t.  w_i^T a_i = 1`` (Frobenius approximation of the
generalised coherence). ``W`` has the shape of ``A``, ``(m, n)``, and acts as ``W^T``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

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
    iterations: int = 0

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
    A64 = A.to(torch.float64)
    U, S, Vh = torch.linalg.svd(A64, full_matrices=False)
    rank = int((S > rcond * S[0]).sum())
    U, S, Vh = U[:, :rank], S[:rank], Vh[:rank]
    P = (Vh.T / S) @ U.T  # A^+, (n, m)
    d = (P * A64.T).sum(dim=1)  # (A^+ A)_ii
    check(bool((d > 1e-12).all()), "a column of A lies (numerically) outside A's range; cannot satisfy w_i^T a_i = 1")
    return (P.T / d).to(A.dtype), rank


def projected_gradient(A: Tensor, step: float = 0.1, max_iter: int = 1000, tol: float = 1e-12) -> tuple[Tensor, int]:
    """The reference algorithm (ALISTA's ``CalculateW.m``); returns ``(W, iterations)``.

    From ``W = A``: ``W <- W - step A (A^T W - I)``, then per column
    ``w_i <- w_i + (1 - a_i^T w_i) a_i / ||a_i||^2``; stop when
    ``||W_new - W||_F / ||W||_F < tol``.
    """
    A64 = A.to(torch.float64)
    n = A64.shape[1]
    eye = torch.eye(n, dtype=torch.float64)
    norms2 = (A64 * A64).sum(0)
    W = A64.clone()
    iterations = 0
    while iterations < max_iter:
        iterations += 1
        W_new = W - step * (A64 @ (A64.T @ W - eye))
        W_new = W_new + A64 * ((1 - (A64 * W_new).sum(0)) / norms2)
        change = float(torch.linalg.norm(W_new - W) / torch.linalg.norm(W))
        W = W_new
        if change < tol:
            break
    return W.to(A.dtype), iterations


def analytic_weights(A: Tensor, method: str = "closed-form", **kwargs) -> AnalyticW:
    """Compute W by ``method`` (``closed-form`` or ``pgd``) and report its quality.

    A rank-deficient ``A`` (singular ``A A^T``) triggers a warning that the
    pseudo-inverse is used.
    """
    check(method in METHODS, f"unknown W method {method!r}; valid: {', '.join(METHODS)}")
    start = time.perf_counter()
    if method == "closed-form":
        W, rank = closed_form(A, **kwargs)
        iters = 0
        seconds = time.perf_counter() - start
    else:
        W, iters = projected_gradient(A, **kwargs)
        seconds = time.perf_counter() - start
        rank = int(torch.linalg.matrix_rank(A.to(torch.float64), rtol=1e-10))
    if rank < A.shape[0]:
        warnings.warn(f"A is rank-deficient (rank {rank} < m={A.shape[0]}): A A^T is singular, "
                      f"W uses the pseudo-inverse (minimum-norm optimum)", stacklevel=2)
    return AnalyticW(W, method, objective(W, A), coherence(W, A), rank, seconds, iters)
