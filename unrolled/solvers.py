"""Classical Lasso solvers, batched over signals (docs/spec.md §3, §6).

Each solver is a generator yielding the iterates ``x_0 = 0, x_1, ..., x_K`` (each
``(batch, n)``), so per-iteration metrics never need all iterates in memory. ISTA and
FISTA call the same :func:`~unrolled.ops.pgd_step` as their unrolled networks, and
:func:`proximal_gradient` is the classical iteration every ALISTA-type network starts as.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from . import ops
from .errors import check, choice
from .ops import Cut, lipschitz

Solver = Callable[..., Iterator[Tensor]]
__all__ = ["SOLVERS", "fista", "get_solver", "ista", "ista_backtracking", "lipschitz", "oista", "proximal_gradient",
           "tune_lambda"]


def proximal_gradient(A: Tensor, y: Tensor, W: Tensor, gamma: float | Callable[[Tensor], Tensor], theta: float,
                      iters: int, cuts: list[Cut | None] | None = None, eps: float | None = None) -> Iterator[Tensor]:
    """``x <- shrink(x + gamma W^T (y - A x), theta)`` with fixed ``gamma`` and ``theta``; ``cuts[t - 1]``
    is iteration t's support selection and ``eps`` ALISTA-AT's adaptive threshold (both optional).
    A callable ``gamma`` gives the step of each iterate (ALISTA's guarded step, ``gamma(x)``)."""
    x = y.new_zeros(y.shape[0], A.shape[1])
    yield x
    for t in range(iters):
        x = ops.pgd_step(x, y, A, W, gamma(x) if callable(gamma) else gamma, theta, cuts[t] if cuts else None, eps)
        yield x


def ista(A: Tensor, y: Tensor, lam: float, iters: int, L: float | None = None,
         cuts: list[Cut | None] | None = None) -> Iterator[Tensor]:
    """``x <- eta_{lam/L}(x + A^T (y - A x) / L)``."""
    L = lipschitz(A) if L is None else L
    return proximal_gradient(A, y, A, 1 / L, lam / L, iters, cuts)


def fista(A: Tensor, y: Tensor, lam: float, iters: int, L: float | None = None,
          cuts: list[Cut | None] | None = None) -> Iterator[Tensor]:
    """ISTA step at the momentum point ``z = x_k + (t_k - 1)/t_{k+1} (x_k - x_{k-1})``."""
    L = lipschitz(A) if L is None else L
    x = y.new_zeros(y.shape[0], A.shape[1])
    x_prev, t = x, 1.0
    yield x
    for k in range(iters):
        t, beta = ops.fista_momentum(t)
        z = x + beta * (x - x_prev)
        x_prev, x = x, ops.pgd_step(z, y, A, A, 1 / L, lam / L, cuts[k] if cuts else None)
        yield x


def _support_norm2(A: Tensor, mask: Tensor, v: Tensor, steps: int) -> tuple[Tensor, Tensor]:
    """Warm-started power iteration for ``||A_S||_2^2`` per sample; returns ``(L_S, v)``."""
    mf = mask.to(A.dtype)
    v = v * mf
    for _ in range(steps):
        v = ((v @ A.T) @ A) * mf
        v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-30)
    Av = v @ A.T
    return (Av * Av).sum(1, keepdim=True), v


def oista(A: Tensor, y: Tensor, lam: float, iters: int, L: float | None = None,
          power_steps: int = 10) -> Iterator[Tensor]:
    """ISTA with the oracle step ``1/L_S``, ``L_S = ||A_S||^2`` on the current support S.

    The long step is kept for a sample only if its new support stays inside S; otherwise
    (and while S is empty) that sample takes the safe step ``1/L``. ``L_S`` comes from a
    warm-started power iteration, inflated by 0.1 % against under-estimation.
    """
    L = lipschitz(A) if L is None else L
    x = y.new_zeros(y.shape[0], A.shape[1])
    v = torch.ones_like(x)
    col2 = (A * A).sum(0)
    yield x
    for _ in range(iters):
        S = x != 0
        LS, v = _support_norm2(A, S, torch.where(S, v.abs() + 1e-3, 0.0), power_steps)
        floor = (S * col2).amax(1, keepdim=True)  # ||A_S||^2 >= max_{i in S} ||a_i||^2
        LS = torch.where(S.any(1, keepdim=True), torch.maximum(1.001 * LS, floor), torch.full_like(LS, L))
        LS = LS.clamp(max=L)
        z = ops.gradient_step(x, y, A, A, 1 / LS)
        x_fast = ops.soft_threshold(z, lam / LS)
        ok = ((x_fast != 0) & ~S).sum(1, keepdim=True) == 0
        x = torch.where(ok, x_fast, ops.pgd_step(x, y, A, A, 1 / L, lam / L))
        yield x


def ista_backtracking(A: Tensor, y: Tensor, lam: float, iters: int, L: float | None = None,
                      eta: float = 2.0, max_tries: int = 50) -> Iterator[Tensor]:
    """ISTA with Beck–Teboulle backtracking, one step size per sample.

    ``L_k`` starts from ``L_{k-1}`` (initially ``L/10``; ``L`` is only this start) and is multiplied
    by ``eta`` until ``f(p) <= f(x) + <grad f(x), p - x> + L_k/2 ||p - x||^2`` with
    ``f = 1/2 ||y - A x||^2`` and ``p = eta_{lam/L_k}(x - grad f(x)/L_k)``.
    """
    check(eta > 1, f"backtracking factor eta={eta} must be > 1")
    L0 = (lipschitz(A) if L is None else L) / 10
    x = y.new_zeros(y.shape[0], A.shape[1])
    Lk = torch.full((y.shape[0], 1), L0, dtype=y.dtype, device=y.device)
    yield x
    for _ in range(iters):
        r = y - x @ A.T
        fx = 0.5 * (r * r).sum(1, keepdim=True)
        grad = -(r @ A)
        for _ in range(max_tries):
            p = ops.soft_threshold(x - grad / Lk, lam / Lk)
            d = p - x
            rp = y - p @ A.T
            ok = 0.5 * (rp * rp).sum(1, keepdim=True) <= fx + (grad * d).sum(1, keepdim=True) \
                + 0.5 * Lk * (d * d).sum(1, keepdim=True) + 1e-12 * fx.abs()
            if bool(ok.all()):
                break
            Lk = torch.where(ok, Lk, Lk * eta)
        x = p
        yield x


SOLVERS: dict[str, Solver] = {"ista": ista, "fista": fista, "oista": oista, "ista-bt": ista_backtracking}


def get_solver(name: str) -> Solver:
    return SOLVERS[choice(name, SOLVERS, "algorithm")]


def final(iterates: Iterator[Tensor]) -> Tensor:
    """The last iterate of a solver run."""
    last = None
    for last in iterates:  # noqa: B007
        pass
    return last


def nmse_curve(iterates: Iterator[Tensor], x_true: Tensor) -> list[float]:
    """Aggregate NMSE (dB) of every iterate against ``x_true``."""
    energy = float((x_true.double() ** 2).sum())
    return [10 * math.log10(max(float(((x - x_true).double() ** 2).sum()), 1e-300) / energy) for x in iterates]


def tune_lambda(algo: str, A: Tensor, x_val: Tensor, y_val: Tensor, iters: int,
                grid: list[float] | None = None) -> tuple[float, list[tuple[float, float]]]:
    """Pick ``lam`` minimising the validation NMSE after ``iters`` iterations.

    Only the validation set is seen. Returns ``(lam, [(lam_i, nmse_db_i), ...])``; the
    grid is refined once around the coarse optimum (factor 10^(1/8) spacing).
    """
    solver = get_solver(algo)
    L = lipschitz(A)

    def score(lam: float) -> float:
        return nmse_curve(iter([final(solver(A, y_val, lam, iters, L))]), x_val)[0]

    coarse = grid or [10 ** (e / 2) for e in range(-10, 2)]  # 1e-5 ... 3.16
    table = [(lam, score(lam)) for lam in coarse]
    best = min(table, key=lambda t: t[1])[0]
    if grid is None:
        table += [(best * 10 ** (e / 8), score(best * 10 ** (e / 8))) for e in (-3, -2, -1, 1, 2, 3)]
    table.sort()
    return min(table, key=lambda t: t[1])[0], table
