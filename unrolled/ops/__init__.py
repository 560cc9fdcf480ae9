"""The maths of every solver and network, behind one dispatch point (docs/spec.md §5, §6, §11).

Models and solvers call the functions here; each runs the implementation of the active
backend (:mod:`unrolled.ops.dispatch`): :mod:`unrolled.ops.reference`, the plain-autograd
definition, or the fast paths of :mod:`unrolled.ops.fast` (with the optional Numba kernels of
:mod:`unrolled.ops.kernels`). Both have the same signatures and agree to rounding
(tests/test_ops.py, and for every registered model tests/test_oracle.py).

    with unrolled.ops.backend("reference"):
        x_hat = model(y)
"""

from __future__ import annotations

from torch import Tensor

from . import fast, reference
from .dispatch import BACKENDS, active, backend, numba_available, selected
from .reference import (
    amp_step,
    bg_denoise,
    fista_momentum,
    kkt_residual,
    lasso_objective,
    lipschitz,
    soft_denoise,
    support_mask,
)
from .selection import Cut, Selection, count_schedule, percentage_keep

__all__ = ["BACKENDS", "Cut", "Selection", "active", "amp_step", "backend", "bg_denoise", "count_schedule",
           "fista_momentum", "gated_step", "gradient_step", "kkt_residual", "lasso_objective", "lipschitz",
           "lstm_cell", "lstm_weights", "numba_available", "percentage_keep", "pgd_step", "residual_features",
           "selected", "shrink", "soft_denoise", "soft_threshold", "softsign_head", "step_shrink", "support_mask"]


def _impl():
    return reference if active() == "reference" else fast


def soft_threshold(z: Tensor, theta: Tensor | float) -> Tensor:
    """:func:`unrolled.ops.reference.soft_threshold` on the active backend."""
    return _impl().soft_threshold(z, theta)


def shrink(z: Tensor, theta: Tensor | float, cut: Cut | None = None) -> Tensor:
    """:func:`unrolled.ops.reference.shrink` on the active backend."""
    return _impl().shrink(z, theta, cut)


def gradient_step(x: Tensor, y: Tensor, A: Tensor, W: Tensor, gamma: Tensor | float,
                  base: Tensor | None = None) -> Tensor:
    """:func:`unrolled.ops.reference.gradient_step` on the active backend."""
    return _impl().gradient_step(x, y, A, W, gamma, base)


def pgd_step(x: Tensor, y: Tensor, A: Tensor, W: Tensor, gamma: Tensor | float, theta: Tensor | float,
             cut: Cut | None = None, eps: float | None = None) -> Tensor:
    """:func:`unrolled.ops.reference.pgd_step` on the active backend."""
    return _impl().pgd_step(x, y, A, W, gamma, theta, cut, eps)


def step_shrink(x: Tensor, gamma: Tensor, d: Tensor, theta: Tensor, cut: Cut | None = None) -> Tensor:
    """:func:`unrolled.ops.reference.step_shrink` on the active backend."""
    return _impl().step_shrink(x, gamma, d, theta, cut)


def gated_step(x: Tensor, y: Tensor, A: Tensor, W: Tensor, c: Tensor, v: Tensor, gamma: Tensor, theta: Tensor,
               a: Tensor, cut: Cut | None = None, eps: float = 0.01) -> Tensor:
    """:func:`unrolled.ops.reference.gated_step` on the active backend."""
    return _impl().gated_step(x, y, A, W, c, v, gamma, theta, a, cut, eps)


def lstm_weights(w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> tuple[Tensor, ...]:
    """:func:`unrolled.ops.reference.lstm_weights` on the active backend (pass the result to :func:`lstm_cell`)."""
    return _impl().lstm_weights(w_ih, w_hh, b_ih, b_hh)


def lstm_cell(inp: Tensor, h: Tensor, c: Tensor, weights: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """:func:`unrolled.ops.reference.lstm_cell` on the active backend."""
    return _impl().lstm_cell(inp, h, c, weights)


def residual_features(x: Tensor, y: Tensor, A: Tensor, W: Tensor, inputs: str,
                      scale: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`unrolled.ops.reference.residual_features` on the active backend."""
    return _impl().residual_features(x, y, A, W, inputs, scale)


def softsign_head(c: Tensor, U: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`unrolled.ops.reference.softsign_head` on the active backend."""
    return _impl().softsign_head(c, U)
