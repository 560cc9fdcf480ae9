"""Soft threshold with support selection, forward and backward in one pass each (``int8`` codes per entry).

The codes (:data:`~unrolled.ops.kernels.common.ZERO` and friends) record each entry's state:
zeroed, shrunk with its sign, or bypassing. ALISTA-AT's per-entry thresholds are made inside
the pass from the current iterate.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from .common import _JIT, _SUM, _empty, _np, _reduce, _rows, _scalar_type, _shrink_entry, _shrink_grad


@numba.njit(**_JIT)
def _shrink_forward(z, theta, cut, with_theta, out, code):
    B, n = z.shape
    per_row, per_entry = theta.shape[0] > 1, theta.shape[1] > 1
    for b in range(B):
        tb = theta[b if per_row else 0]
        c = cut[b]
        if per_entry:
            for j in range(n):
                th = tb[j]
                hi = max(c, th) if with_theta else c
                out[b, j], code[b, j] = _shrink_entry(z[b, j], th, hi, min(hi, th))
        else:
            th = tb[0]
            hi = max(c, th) if with_theta else c
            lo = min(hi, th)
            for j in range(n):
                out[b, j], code[b, j] = _shrink_entry(z[b, j], th, hi, lo)


def shrink_forward(z: Tensor, theta: Tensor, cut: Tensor | None, with_theta: bool) -> tuple[Tensor, Tensor]:
    """``(out, code)`` of the selection shrinkage (see ``functional._Shrink``); ``cut`` is ``(batch, 1)``
    or None (no selection: every entry is shrunk)."""
    out = _empty(z)
    code = torch.empty(z.shape, dtype=torch.int8)
    c = np.full(z.shape[0], np.inf, _scalar_type(z)) if cut is None else _np(cut.reshape(-1))
    _shrink_forward(_np(z), _rows(theta), c, with_theta and cut is not None, _np(out), _np(code))
    return out, code


@numba.njit(**_SUM)
def _shrink_backward(g, code, step, d, gamma, per_row_gamma, per_row, per_entry, zero, one, gz, gd, gtheta, ggamma):
    """``gz = g [code != 0]``; ``gtheta`` gets ``-gz sign`` summed to its shape (float64 unless per
    entry). With ``step`` (the input was ``x + gamma d``) also ``gd = gz gamma``, and ``ggamma``
    gets ``gz d`` summed to its shape, in the same pass. ``zero``, ``one``: constants of ``g``'s dtype."""
    B, n = g.shape
    for b in range(B):
        gb = gamma[b if per_row_gamma else 0, 0]
        acc = 0.0
        acc_gamma = 0.0
        for j in range(n):
            gz[b, j], s = _shrink_grad(g[b, j], code[b, j], zero, one)
            if per_entry:
                gtheta[b, j] = s
            else:
                acc += s
        if not per_entry:
            gtheta[b if per_row else 0, 0] += acc
        if step:  # a second loop over the row just written (in L1): a branch inside the first one costs 15x
            for j in range(n):
                gd[b, j] = gz[b, j] * gb
                acc_gamma += gz[b, j] * d[b, j]
            ggamma[b if per_row_gamma else 0, 0] += acc_gamma


def shrink_backward(g: Tensor, code: Tensor, theta_shape: torch.Size,
                    need_theta: bool) -> tuple[Tensor, Tensor | None]:
    """``(grad_z, grad_theta)`` for :func:`shrink_forward` from the output gradient ``g``."""
    gz, _, _, gtheta = _shrink_grads(g, code, None, None, theta_shape, need_theta)
    return gz, gtheta


def step_shrink_backward(g: Tensor, code: Tensor, d: Tensor, gamma: Tensor, theta_shape: torch.Size,
                         need_theta: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """``(grad_x, grad_d, grad_gamma, grad_theta)`` of ``shrink(x + gamma d, theta)`` (its codes from
    :func:`shrink_forward`); ``gamma`` a scalar or per sample."""
    return _shrink_grads(g, code, d, gamma, theta_shape, need_theta)


def _shrink_grads(g: Tensor, code: Tensor, d: Tensor | None, gamma: Tensor | None, theta_shape: torch.Size,
                  need_theta: bool) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    step = d is not None
    gz = _empty(g)
    gd = _empty(g) if step else gz  # not written without a step
    per_entry = len(theta_shape) == 2 and theta_shape[1] > 1
    per_row = len(theta_shape) == 2 and theta_shape[0] != 1  # per sample, an empty batch included
    gt = np.zeros((g.shape[0] if per_row else 1, g.shape[1] if per_entry else 1),
                  np.float64 if not per_entry else _scalar_type(g))
    per_row_gamma = step and gamma.dim() > 0
    gg = np.zeros((g.shape[0] if per_row_gamma else 1, 1), np.float64)
    t = _scalar_type(g)
    _shrink_backward(_np(g), _np(code), step, _np(d if step else g), _rows(gamma) if step else np.ones((1, 1), t),
                     per_row_gamma, per_row, per_entry, t(0), t(1), _np(gz), _np(gd), gt, gg)
    gtheta = _reduce(gt, theta_shape, g.dtype) if need_theta else None
    return gz, (gd if step else None), (_reduce(gg, gamma.shape, g.dtype) if step else None), gtheta


@numba.njit(**_JIT)
def _adaptive_shrink_forward(z, x, th, eps, one, cut, with_theta, out, code):
    """:func:`_shrink_forward` with ALISTA-AT's per-entry threshold ``th eps / (|x| + eps)`` made on the fly."""
    B, n = z.shape
    the = th * eps
    for b in range(B):
        c = cut[b]
        for j in range(n):
            t = (one / (abs(x[b, j]) + eps)) * the  # as functional.adaptive_threshold computes it
            hi = max(c, t) if with_theta else c
            out[b, j], code[b, j] = _shrink_entry(z[b, j], t, hi, min(hi, t))


@numba.njit(**_SUM)
def _adaptive_shrink_backward(g, code, x, th, eps, zero, one, gz, gx):
    """``gz = g [code != 0]``; ``gx = gz + s dt/dx`` with ``s = -gz sign`` the threshold's gradient and
    ``dt/dx = -th eps sign(x) / (|x| + eps)^2``; returns ``sum s / (|x| + eps)`` (times ``eps``: d/dth)."""
    B, n = g.shape
    acc = 0.0
    k = th * -eps
    for b in range(B):
        for j in range(n):
            xj = x[b, j]
            gj, s = _shrink_grad(g[b, j], code[b, j], zero, one)
            r = one / (abs(xj) + eps)
            acc += s * r
            gz[b, j] = gj
            gx[b, j] = gj + s * r * r * (one if xj > 0 else (-one if xj < 0 else zero)) * k
    return acc


def adaptive_shrink_forward(z: Tensor, x: Tensor, theta: float, eps: float, cut: Tensor | None,
                            with_theta: bool) -> tuple[Tensor, Tensor]:
    """:func:`shrink_forward` with the threshold ``theta eps / (|x| + eps)`` of each entry (ALISTA-AT)."""
    out = _empty(z)
    code = torch.empty(z.shape, dtype=torch.int8)
    t = _scalar_type(z)
    c = np.full(z.shape[0], np.inf, t) if cut is None else _np(cut.reshape(-1))
    _adaptive_shrink_forward(_np(z), _np(x), t(theta), t(eps), t(1), c, with_theta and cut is not None, _np(out),
                             _np(code))
    return out, code


def adaptive_shrink_backward(g: Tensor, code: Tensor, x: Tensor, theta: float,
                             eps: float) -> tuple[Tensor, Tensor, float]:
    """``(grad_z, grad_z + the threshold's part of grad_x, grad_theta)`` of :func:`adaptive_shrink_forward`."""
    gz, gx = _empty(g), _empty(g)
    t = _scalar_type(g)
    acc = _adaptive_shrink_backward(_np(g), _np(code), _np(x), t(theta), t(eps), t(0), t(1), _np(gz), _np(gx))
    return gz, gx, acc * eps
