"""AGLISTA's layer: the gain gate, and the shrinkage with the overshoot, each way in one pass."""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from .common import _FMA, _JIT, _SUM, BYPASS, _empty, _exp_neg_abs, _np, _scalar_type, _shrink_entry, _shrink_grad


@numba.njit(**_JIT)
def _gate_forward(x, c, v, gx):
    B, n = x.shape
    e = np.empty(n, x.dtype)
    for b in range(B):
        _exp_neg_abs(x[b], v, e)
        for j in range(n):
            xj = x[b, j]
            gx[b, j] = xj + xj * (e[j] * c)


@numba.njit(**_FMA)
def _shrink_overshoot_forward(z, x, th, cut, with_theta, a, eps, out, code):
    B, n = z.shape
    for b in range(B):
        hi = max(cut[b], th) if with_theta else cut[b]
        lo = min(hi, th)
        for j in range(n):
            s, code[b, j] = _shrink_entry(z[b, j], th, hi, lo)
            d = s - x[b, j]
            out[b, j] = s + a * (d / (abs(d) + eps))


@numba.njit(**_SUM)
def _shrink_overshoot_backward(g, z, x, code, th, a, eps, zero, one, gz, gsum):
    """``gz``: the gradient of the shrinkage's input; ``gsum = gz - s``, the overshoot's part of ``x``'s
    gradient added. Returns ``(sum g q, sum of theta's gradient)`` in float64."""
    B, n = g.shape
    ga = 0.0
    gth = 0.0
    ae = a * eps
    for b in range(B):
        for j in range(n):
            zj, c = z[b, j], code[b, j]
            s = zj if c == BYPASS else zj - min(max(zj, -th), th)  # the shrinkage's output again
            d = s - x[b, j]
            inv = one / (abs(d) + eps)
            gj = g[b, j]
            o = gj * ae * inv * inv  # g a dq/dd
            ga += gj * (d * inv)
            gzj, s_th = _shrink_grad(gj + o, c, zero, one)
            gth += s_th
            gz[b, j] = gzj
            gsum[b, j] = gzj - o
    return ga, gth


@numba.njit(**_SUM)
def _gate_backward(gg, x, c, v, one, gsum, gx):
    """``gx = gsum + gg (1 + (1 - v |x|) c e)``; returns ``(sum gg x e, -sum gg x |x| c e)`` in float64."""
    B, n = gg.shape
    e = np.empty(n, x.dtype)
    gc = 0.0
    gv = 0.0
    for b in range(B):
        _exp_neg_abs(x[b], v, e)
        for j in range(n):
            gj, xj, ej = gg[b, j], x[b, j], e[j]
            a = abs(xj)
            ce = ej * c
            gx[b, j] = gsum[b, j] + (gj + gj * ((a * -v + one) * ce))
            gxj = gj * xj
            gc += gxj * ej
            gv -= gxj * a * ce
    return gc, gv


def gate_forward(x: Tensor, c: float, v: float) -> Tensor:
    """AGLISTA's gain gate ``x + x c e``, ``e = exp(-v |x|)`` (scalar ``c``, ``v``)."""
    gx = _empty(x)
    t = _scalar_type(x)
    _gate_forward(_np(x), t(c), t(v), _np(gx))
    return gx


def gate_backward(gg: Tensor, x: Tensor, c: float, v: float, gsum: Tensor) -> tuple[Tensor, float, float]:
    """``(grad_x, grad_c, grad_v)`` of :func:`gate_forward` from the gradient ``gg`` of its output,
    with ``gsum`` (the rest of ``x``'s gradient) added to ``grad_x``."""
    gx = _empty(x)
    t = _scalar_type(x)
    gc, gv = _gate_backward(_np(gg), _np(x), t(c), t(v), t(1), _np(gsum), _np(gx))
    return gx, gc, gv


def shrink_overshoot_forward(z: Tensor, x: Tensor, theta: float, cut: Tensor | None, with_theta: bool,
                             a: float, eps: float) -> tuple[Tensor, Tensor]:
    """``(out, code)``: ``s = shrink(z)`` (as :func:`shrink_forward`, scalar ``theta``) and AGLISTA's
    overshoot ``out = s + a q``, ``q = d / (|d| + eps)``, ``d = s - x``."""
    out = _empty(z)
    code = torch.empty(z.shape, dtype=torch.int8)
    t = _scalar_type(z)
    c = np.full(z.shape[0], np.inf, t) if cut is None else _np(cut.reshape(-1))
    _shrink_overshoot_forward(_np(z), _np(x), t(theta), c, with_theta and cut is not None, t(a), t(eps),
                              _np(out), _np(code))
    return out, code


def shrink_overshoot_backward(g: Tensor, z: Tensor, x: Tensor, code: Tensor, theta: float, a: float,
                              eps: float) -> tuple[Tensor, Tensor, float, float]:
    """``(grad_z, grad_z - s, grad_a, grad_theta)`` of :func:`shrink_overshoot_forward`, where ``-s``
    is the overshoot's gradient of ``x``."""
    gz, gsum = _empty(g), _empty(g)
    t = _scalar_type(g)
    ga, gth = _shrink_overshoot_backward(_np(g), _np(z), _np(x), _np(code), t(theta), t(a), t(eps), t(0), t(1),
                                         _np(gz), _np(gsum))
    return gz, gsum, ga, gth
