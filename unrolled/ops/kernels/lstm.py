"""NA-ALISTA's LSTM cell (g rows doubled: one sigmoid for all gates) and the gradient of its row l1 features."""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from .common import _FMA, _JIT, _SUM, _empty, _exp, _np, _scalar_type


@numba.njit(**_FMA)
def _sigmoid_row(u, scale, one, out):
    """``out = 1 / (1 + exp(-scale u))`` for one row."""
    for j in range(u.shape[0]):
        out[j] = one / (one + _exp(u[j] * -scale))


@numba.njit(**_FMA)
def _lstm_forward(hw, inp, w_ih_t, bias, c, one, two, s, c_new, tau, h):
    B, H = c.shape
    w0, w1 = w_ih_t[0], w_ih_t[1]
    pre = np.empty(4 * H, hw.dtype)  # a separate row: in place, the sigmoid's loop is not vectorised (10x)
    for b in range(B):
        u0, u1 = inp[b, 0], inp[b, 1]
        for k in range(4 * H):
            pre[k] = hw[b, k] + u0 * w0[k] + u1 * w1[k] + bias[k]
        sb = s[b]
        _sigmoid_row(pre, one, one, sb)
        for k in range(H):
            c_new[b, k] = sb[H + k] * c[b, k] + sb[k] * (sb[2 * H + k] * two - one)
        _sigmoid_row(c_new[b], two, one, tau[b])
        for k in range(H):
            tau[b, k] = tau[b, k] * two - one  # tanh(c_new) = 2 sigmoid(2 c_new) - 1
            h[b, k] = sb[3 * H + k] * tau[b, k]


def lstm_forward(hw: Tensor, inp: Tensor, w_ih: Tensor, bias: Tensor, c: Tensor) -> tuple[Tensor, ...]:
    """``(h, c_new, s, tau)`` of an LSTM cell whose g rows are doubled (see ``NA_ALISTA.lstm``) from
    ``hw = h @ W_hh^T`` ``(batch, 4H)``, one or two input columns ``inp``, ``W_ih`` ``(4H, inputs)``,
    the summed biases and the cell state ``c``: ``s = sigmoid(hw + inp W_ih^T + bias)``."""
    if inp.shape[1] == 1:  # a second input with weight 0 adds exactly 0
        inp, w_ih = torch.cat([inp, torch.zeros_like(inp)], 1), torch.cat([w_ih, torch.zeros_like(w_ih)], 1)
    s, c_new, tau, h = _empty(hw), _empty(c), _empty(c), _empty(c)
    t = _scalar_type(hw)
    _lstm_forward(_np(hw), _np(inp), _np(w_ih.T), _np(bias), _np(c), t(1), t(2), _np(s), _np(c_new), _np(tau),
                  _np(h))
    return h, c_new, s, tau


@numba.njit(**_SUM)
def _lstm_backward(s, c_prev, tau, dh, dc, one, two, dgates, dc_prev):
    # One short loop per output block: with every array in one loop, LLVM's aliasing checks
    # exceed its limit and the loop is not vectorised (docs/performance.md).
    B, H = c_prev.shape
    dct = np.empty(H, s.dtype)
    for b in range(B):
        si, sf, sg, so = s[b, :H], s[b, H:2 * H], s[b, 2 * H:3 * H], s[b, 3 * H:]
        for k in range(H):
            t = tau[b, k]
            dct[k] = dc[b, k] + dh[b, k] * so[k] * (one - t * t)  # through h = o tanh(c)
        for k in range(H):
            dc_prev[b, k] = dct[k] * sf[k]
        for k in range(H):
            dgates[b, k] = dct[k] * (sg[k] * two - one) * si[k] * (one - si[k])
        for k in range(H):
            dgates[b, H + k] = dct[k] * c_prev[b, k] * sf[k] * (one - sf[k])
        for k in range(H):
            dgates[b, 2 * H + k] = dct[k] * si[k] * two * sg[k] * (one - sg[k])
        for k in range(H):
            dgates[b, 3 * H + k] = dh[b, k] * tau[b, k] * so[k] * (one - so[k])


def lstm_backward(s: Tensor, c_prev: Tensor, tau: Tensor, dh: Tensor, dc: Tensor) -> tuple[Tensor, Tensor]:
    """``(d gates, d c_prev)`` of an LSTM cell whose g rows are doubled (see ``NA_ALISTA.lstm``).

    ``s = sigmoid(gates)`` ``(batch, 4H)`` in the order i, f, g, o; ``tau = tanh(c)`` of the
    new cell state; ``dh``, ``dc`` the gradients of the new ``h`` and ``c``."""
    dgates, dc_prev = _empty(s), _empty(c_prev)
    t = _scalar_type(s)
    _lstm_backward(_np(s), _np(c_prev), _np(tau), _np(dh), _np(dc), t(1), t(2), _np(dgates), _np(dc_prev))
    return dgates, dc_prev


@numba.njit(**_JIT)
def _add_scaled_sign(g, v, w, scale, one, zero, out):
    B, n = v.shape
    for b in range(B):
        wb = w[b]
        for j in range(n):
            vj = v[b, j]
            out[b, j] = scale * (g[b, j] + wb * (one if vj > 0 else (-one if vj < 0 else vj * zero)))  # sign(nan) = nan


def add_scaled_sign(g: Tensor, v: Tensor, w: Tensor, scale: float) -> Tensor:
    """``scale (g + w sign(v))`` for ``g, v: (batch, n)`` and a per-sample ``w: (batch,)``: the
    gradient of ``|v|.sum(-1)`` added to ``g`` (``scale``: 1 or -1, exact)."""
    out = _empty(v)
    t = _scalar_type(v)
    _add_scaled_sign(_np(g), _np(v), _np(w), t(scale), t(1), t(0), _np(out))
    return out
