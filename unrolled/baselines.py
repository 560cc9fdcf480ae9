"""Standard sparse-recovery baselines beside the Lasso solvers: OMP, IHT, CoSaMP and a converged Lasso.

OMP and the converged Lasso come from scikit-learn (``unrolled[baselines]``): OMP is
:func:`sklearn.linear_model.orthogonal_mp_gram` with its whole path (iteration k holds k
atoms), the Lasso is :class:`sklearn.linear_model.Lasso` (coordinate descent, warm-started
along the lambda grid, run to a duality gap of ``tol``). IHT and CoSaMP are written here:
scikit-learn, scipy and PyTorch have neither, and the packages that do (pyCSalgos, sparselab
ports) are unmaintained NumPy loops over one signal; these are batched over signals in torch
and tested in float64 against known supports (tests/test_baselines.py).

IHT, CoSaMP and OMP are iterate generators like :mod:`unrolled.solvers` (``x_0 = 0, ..., x_K``),
so their per-iteration rows sit in the same tables. IHT and CoSaMP need the sparsity ``s``;
:func:`tune_sparsity` picks it on the validation set, as :func:`~unrolled.solvers.tune_lambda`
picks lambda. Our Lasso is ``1/2 ||y - A x||^2 + lam ||x||_1``; scikit-learn's ``alpha`` is
``lam / m``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from .errors import check, require
from .ops import lipschitz
from .solvers import final, nmse_curve

NAMES = ("omp", "iht", "cosamp", "lasso-cd")
ITERATIVE = ("omp", "iht", "cosamp")  # per-iteration rows; lasso-cd is one converged row
__all__ = ["ITERATIVE", "NAMES", "cosamp", "hard_threshold", "iht", "lasso_cd", "omp", "prepare", "tune_lasso",
           "tune_sparsity"]


def hard_threshold(z: Tensor, s: int) -> Tensor:
    """Keep the ``s`` entries of largest magnitude in each row of ``z``, zero the rest."""
    idx = z.abs().topk(s, dim=1).indices
    return torch.zeros_like(z).scatter_(1, idx, z.gather(1, idx))


def iht(A: Tensor, y: Tensor, s: int, iters: int, L: float | None = None) -> Iterator[Tensor]:
    """Iterative hard thresholding, ``x <- H_s(x + A^T (y - A x) / L)`` (Blumensath & Davies 2009,
    with A scaled by ``1/sqrt(L)`` so that ``||A|| = 1``, their condition for convergence)."""
    check(1 <= s <= A.shape[1], f"IHT sparsity s={s} must lie in 1..n={A.shape[1]}")
    L = lipschitz(A) if L is None else L
    x = y.new_zeros(y.shape[0], A.shape[1])
    yield x
    for _ in range(iters):
        x = hard_threshold(x + (y - x @ A.T) @ A / L, s)
        yield x


def _masked_lstsq(G: Tensor, Aty: Tensor, mask: Tensor, size: int) -> Tensor:
    """Per row b of ``mask``: least squares of ``y_b`` on the columns ``mask_b`` of A (at most ``size``
    of them; ``G = A^T A``, ``Aty = y A``), as a ``(batch, n)`` estimate that is zero off the mask. The
    normal equations by Cholesky (padded columns get an identity block); a row whose sub-Gram matrix is
    singular falls back to the min-norm solution (SVD)."""
    idx = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :size]  # the mask's columns first
    valid = mask.gather(1, idx)
    v = valid.to(G.dtype)
    n, (batch, k) = G.shape[0], idx.shape
    GT = G.reshape(-1)[(idx[:, :, None] * n + idx[:, None, :]).reshape(-1)].view(batch, k, k)  # G[idx, idx]
    GT = GT * (v[:, :, None] * v[:, None, :]) + torch.diag_embed(1 - v)
    rhs = (Aty.gather(1, idx) * v)[..., None]
    chol, info = torch.linalg.cholesky_ex(GT)
    coef = torch.cholesky_solve(rhs, chol)
    bad = info != 0
    if bool(bad.any()):
        coef[bad] = torch.linalg.lstsq(GT[bad], rhs[bad], driver="gelsd").solution
    coef = coef[..., 0] * v
    return torch.zeros_like(Aty).scatter_(1, idx, coef)


def cosamp(A: Tensor, y: Tensor, s: int, iters: int) -> Iterator[Tensor]:
    """CoSaMP (Needell & Tropp 2009): merge the ``2s`` largest entries of the proxy ``A^T r`` with the
    current support, least squares on the merged set, keep its ``s`` largest, ``r = y - A x``."""
    m, n = A.shape
    check(1 <= s and 3 * s <= min(m, n), f"CoSaMP sparsity s={s} needs 3s <= min(m, n) = {min(m, n)}")
    G, Aty = A.T @ A, y @ A
    x = y.new_zeros(y.shape[0], n)
    yield x
    for _ in range(iters):
        proxy = Aty - x @ G  # A^T (y - A x)
        mask = torch.zeros_like(x, dtype=torch.bool).scatter_(1, proxy.abs().topk(2 * s, dim=1).indices, True)
        x = hard_threshold(_masked_lstsq(G, Aty, mask | (x != 0), 3 * s), s)
        yield x


def omp(A: Tensor, y: Tensor, iters: int) -> Iterator[Tensor]:
    """Orthogonal matching pursuit (scikit-learn, Cholesky on the Gram matrix): iterate k is the least-squares
    fit on k greedily chosen atoms. A signal whose residual vanishes (or whose next atom is linearly dependent)
    stops early and keeps its last iterate."""
    linear_model = require("sklearn.linear_model", extra="baselines", feature="OMP")
    check(1 <= iters <= min(A.shape), f"OMP runs at most min(m, n) = {min(A.shape)} iterations, got {iters}")
    An = A.double().cpu().numpy()
    G, Xy = An.T @ An, An.T @ y.double().cpu().numpy().T
    path = np.zeros((iters + 1, y.shape[0], A.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "ended prematurely": handled below
        for b in range(y.shape[0]):
            coef = linear_model.orthogonal_mp_gram(G, Xy[:, b], n_nonzero_coefs=iters, return_path=True)
            coef = coef.reshape(A.shape[1], -1)
            path[1:coef.shape[1] + 1, b] = coef.T
            path[coef.shape[1] + 1:, b] = coef[:, -1]
    for xk in path:
        yield torch.from_numpy(xk).to(y.dtype)


def lasso_cd(A: Tensor, y: Tensor, lam: float | list[float], tol: float = 1e-10,
             max_iter: int = 100_000, strict: bool = True) -> Tensor | list[Tensor | None]:
    """The converged Lasso ``argmin 1/2 ||y - A x||^2 + lam ||x||_1`` of every row of ``y`` (scikit-learn's
    coordinate descent on the Gram matrix, duality gap below ``tol``). A list of ``lam`` gives the solutions
    along it, warm-started from the largest; a solve that stops on ``max_iter`` is refused (``strict``) or
    gives ``None`` for that lambda and the smaller ones."""
    linear_model = require("sklearn.linear_model", extra="baselines", feature="the converged Lasso (lasso-cd)")
    from sklearn.exceptions import ConvergenceWarning

    lams = [lam] if isinstance(lam, (int, float)) else list(lam)
    An, Y = A.double().cpu().numpy(), np.ascontiguousarray(y.double().cpu().numpy().T)
    m = An.shape[0]
    est = linear_model.Lasso(alpha=1.0, fit_intercept=False, precompute=np.ascontiguousarray(An.T @ An), tol=tol,
                             max_iter=max_iter, warm_start=True, selection="cyclic")
    out: dict[float, Tensor | None] = dict.fromkeys(lams)
    for la in sorted(lams, reverse=True):
        check(math.isfinite(la) and la > 0, f"Lasso lambda must be positive and finite, got {la}")
        est.set_params(alpha=la / m)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            try:
                est.fit(An, Y)
            except ConvergenceWarning:
                check(not strict, f"the Lasso at lambda={la:.3g} did not converge in {max_iter:,} sweeps; "
                                  f"give a larger lambda")
                break
        out[la] = torch.from_numpy(est.coef_.reshape(y.shape[0], -1).copy()).to(y.dtype)
    sols = [out[la] for la in lams]
    return sols[0] if isinstance(lam, (int, float)) else sols


def tune_lasso(A: Tensor, x_val: Tensor, y_val: Tensor,
               grid: list[float] | None = None) -> tuple[float, list[tuple[float, float]]]:
    """The lambda whose converged Lasso has the lowest validation NMSE: a coarse grid (1e-4 .. 1), refined
    once around its optimum (factor 10^(1/8)). Returns ``(lam, [(lam_i, nmse_db_i), ...])``."""
    def scores(lams):  # a lambda too small to converge is left out of the choice
        sols = lasso_cd(A, y_val, lams, strict=False)
        return [(la, nmse_curve(iter([xh]), x_val)[0]) for la, xh in zip(lams, sols) if xh is not None]

    table = scores(grid or [10 ** (e / 2) for e in range(-8, 1)])
    check(bool(table), "the Lasso converged at no lambda of the grid; give larger values")
    best = min(table, key=lambda t: t[1])[0]
    if grid is None:
        table += scores([best * 10 ** (e / 8) for e in (-3, -2, -1, 1, 2, 3)])
    table.sort()
    return min(table, key=lambda t: t[1])[0], table


def sparsity_grid(algo: str, A: Tensor, expected: float) -> list[int]:
    """Candidate ``s`` around the expected number of non-zeros (x0.5 .. x1.5), within the algorithm's limits."""
    top = min(A.shape) // 3 if algo == "cosamp" else A.shape[1]
    return sorted({min(max(1, round(f * expected)), top) for f in (0.5, 0.75, 1.0, 1.25, 1.5)})


def tune_sparsity(algo: str, A: Tensor, x_val: Tensor, y_val: Tensor, iters: int,
                  expected: float) -> tuple[int, list[tuple[int, float]]]:
    """The ``s`` of IHT or CoSaMP with the lowest validation NMSE after ``iters`` iterations."""
    solver = {"iht": iht, "cosamp": cosamp}[algo]
    table = [(s, nmse_curve(iter([final(solver(A, y_val, s, iters))]), x_val)[0])
             for s in sparsity_grid(algo, A, expected)]
    return min(table, key=lambda t: t[1])[0], table


def prepare(name: str, A: Tensor, x_val: Tensor, y_val: Tensor, iters: int,
            expected: float) -> tuple[Callable[[Tensor], Iterable[Tensor]], dict]:
    """``(run, meta)`` for a table: ``run(y)`` yields the iterates (for ``lasso-cd`` its one converged
    estimate), its parameter tuned on ``(x_val, y_val)`` at depth ``iters`` (``s`` around ``expected``
    non-zeros, or lambda) and recorded in ``meta``."""
    A = A.double()
    if name == "omp":
        return (lambda y: omp(A, y, iters)), {}
    if name in ("iht", "cosamp"):
        s = tune_sparsity(name, A, x_val, y_val, iters, expected)[0]
        solver = iht if name == "iht" else cosamp
        return (lambda y: solver(A, y, s, iters)), {"s": s}
    check(name == "lasso-cd", f"unknown baseline {name!r}; valid: {', '.join(NAMES)}")
    lam = tune_lasso(A, x_val, y_val)[0]
    return (lambda y: [lasso_cd(A, y, lam)]), {"lam": lam}
