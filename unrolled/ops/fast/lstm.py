"""Fast NA-ALISTA pieces: the LSTM cell, the residual with its l1 features, the softsign head.

The same values as :mod:`unrolled.ops.reference` (``nn.LSTMCell``'s computation; tests/test_ops.py),
each as one autograd node with a written-out backward (the slices of the gates alone cost a
zero-filled ``(batch, 4H)`` tensor each backward under autograd).

``tanh(u) = 2 sigmoid(2 u) - 1``: torch's CPU ``tanh`` is slower than ``sigmoid``
(docs/performance.md), so :func:`lstm_weights` doubles the g rows of the weights
and biases (exactly) once per forward pass and one ``sigmoid`` covers all four gates. One
product is accumulated into the other and the biases are added once.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import kernels, reference


class _LstmCell(torch.autograd.Function):
    """``(h, c)`` of :func:`lstm_cell` from ``(inp, h, c, W_hh, W_ih, bias)``, g rows doubled.

    One autograd node instead of about twenty (the slices of the gates alone cost a
    zero-filled ``(batch, 4H)`` tensor each backward). On the CPU everything after ``h W_hh^T``
    in the forward is one pass (:func:`unrolled.ops.kernels.lstm.lstm_forward`: inputs, biases, the
    sigmoids, the cell update), and so is the element-wise part of the backward
    (:func:`unrolled.ops.kernels.lstm.lstm_backward`).
    """

    @staticmethod
    def forward(ctx, inp: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, w_ih: Tensor, bias: Tensor):
        H = c.shape[1]
        gates = h @ w_hh.T
        ctx.kernel = kernels.usable(gates)  # decided here: the backward takes the same path
        if ctx.kernel and inp.shape[1] <= 2 and all(t.dtype == gates.dtype for t in (inp, w_ih, bias, c)):
            h_new, c_new, s, tau = kernels.lstm.lstm_forward(gates, inp, w_ih, bias, c)
        else:
            s = gates.addmm_(inp, w_ih.T).add_(bias).sigmoid_()
            i, f, o = s[:, :H], s[:, H:2 * H], s[:, 3 * H:]
            c_new = torch.addcmul(f * c, i, s[:, 2 * H:3 * H] * 2 - 1)
            tau = torch.sigmoid(c_new * 2) * 2 - 1  # tanh(c_new)
            h_new = o * tau
        ctx.save_for_backward(inp, h, c, w_hh, w_ih, s, tau)
        return h_new, c_new

    @staticmethod
    def backward(ctx, dh: Tensor, dc: Tensor):
        inp, h, c, w_hh, w_ih, s, tau = ctx.saved_tensors
        if ctx.kernel and kernels.fits(s) and all(t.dtype == s.dtype for t in (c, tau, dh, dc)):
            dgates, dc_prev = kernels.lstm.lstm_backward(s, c, tau, dh, dc)
        else:
            i, f, g2, o = s.chunk(4, dim=1)
            dct = dc + dh * o * (1 - tau * tau)
            dgates = torch.cat([dct * (g2 * 2 - 1) * i * (1 - i), dct * c * f * (1 - f),
                                dct * i * 2 * g2 * (1 - g2), dh * tau * o * (1 - o)], dim=1)
            dc_prev = dct * f
        need = ctx.needs_input_grad
        # The products with the few input columns are taken with those columns as rows, the
        # fastest layout of a (batch x 4H) @ (4H x 2) product (docs/performance.md).
        return ((w_ih.T.contiguous() @ dgates.T).T if need[0] else None, dgates @ w_hh if need[1] else None,
                dc_prev if need[2] else None, dgates.T @ h if need[3] else None,
                (inp.T @ dgates).T if need[4] else None, dgates.sum(0) if need[5] else None)


def _row_norms(r: Tensor | None, d: Tensor | None) -> Tensor:
    """The row l1 norms of those of ``r`` and ``d`` given, ``(batch, count)`` (``abs().sum(-1)``, faster
    here than ``vector_norm``)."""
    return torch.stack([v.abs().sum(-1) for v in (r, d) if v is not None], dim=1)


class _Residual(torch.autograd.Function):
    """``(d, features)`` from ``(x, y, A, W, inputs, scale)``: ``r = y - x A^T``, ``d = r W`` and the
    features of ``(r, d)`` divided by ``scale`` (a buffer).

    One node whose backward takes the gradients of ``d`` and of the features together: with
    ``w`` the features' gradients, ``g_d = grad_d + w_u sign(d)``, ``g_r = g_d W^T + w_r sign(r)``,
    ``dx = -g_r A``, ``dy = g_r``; each ``g + w sign(v)`` is one pass
    (:func:`unrolled.ops.kernels.lstm.add_scaled_sign`, which also takes the minus sign), where autograd
    took about eight passes over ``(batch, n)`` between these products and the features' nodes.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, A: Tensor, W: Tensor, inputs: str, scale: Tensor) -> tuple[Tensor, Tensor]:
        r = torch.addmm(y, x, A.T, alpha=-1)
        d = r @ W
        ctx.use_r, ctx.use_d = inputs != "u", inputs != "r"
        ctx.kernel = kernels.usable(d)
        ctx.save_for_backward(A, W, r, d, scale)
        return d, _row_norms(r if ctx.use_r else None, d if ctx.use_d else None) / scale

    @staticmethod
    def backward(ctx, gd: Tensor, gf: Tensor):
        A, W, r, d, scale = ctx.saved_tensors
        gf = gf / scale
        k = ctx.kernel
        if ctx.use_d:  # -g_d first: dx = (-g_r) A is then one product
            neg_g_r = _add_scaled_sign(gd, d, gf[:, -1], -1.0, k) @ W.T
            if ctx.use_r:
                neg_g_r = _add_scaled_sign(neg_g_r, r, gf[:, 0].neg(), 1.0, k)
        else:
            neg_g_r = _add_scaled_sign(gd @ W.T, r, gf[:, 0], -1.0, k)
        need_x, need_y = ctx.needs_input_grad[:2]
        return neg_g_r @ A if need_x else None, neg_g_r.neg() if need_y else None, None, None, None, None


class _SoftsignHead(torch.autograd.Function):
    """``(gamma, theta)``: columns 1 and 0 of ``softsign(c U^T)`` (head "paper"), each ``(batch, 1)``.

    One node instead of six (product, softsign's three operations, two slices); ``softsign(u) =
    u / (|u| + 1)`` as PyTorch computes it, ``softsign'(u) = 1 / (|u| + 1)^2``.
    """

    @staticmethod
    def forward(ctx, c: Tensor, U: Tensor) -> tuple[Tensor, Tensor]:
        u = c @ U.T
        den = u.abs().add_(1)
        out = u.div_(den)
        ctx.save_for_backward(c, U, den)
        return out[:, 1:].contiguous(), out[:, :1].contiguous()

    @staticmethod
    def backward(ctx, g_gamma: Tensor, g_theta: Tensor):
        c, U, den = ctx.saved_tensors
        gu = torch.cat([g_theta, g_gamma], 1).div_(den).div_(den)
        return gu @ U if ctx.needs_input_grad[0] else None, gu.T @ c if ctx.needs_input_grad[1] else None


def _add_scaled_sign(g: Tensor, v: Tensor, w: Tensor, scale: float, kernel: bool) -> Tensor:
    """``scale (g + w sign(v))`` with ``w`` per sample ``(batch,)``: the gradient of ``|v|.sum(-1)`` added
    (with the kernel if ``kernel``, as decided in the forward pass, and the inputs fit it)."""
    if kernel and kernels.fits(v) and g.dtype == v.dtype == w.dtype:
        return kernels.lstm.add_scaled_sign(g, v, w, scale)
    return torch.sign(v).mul_(w[:, None]).add_(g).mul_(scale)


def lstm_weights(w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(W_hh, W_ih, b_ih + b_hh)`` with the g rows (the third quarter) doubled, for :func:`lstm_cell`."""
    H = w_hh.shape[1]
    two_g = torch.ones(4 * H, 1, dtype=w_hh.dtype, device=w_hh.device)
    two_g[2 * H:3 * H] = 2
    return w_hh * two_g, w_ih * two_g, (b_ih + b_hh) * two_g[:, 0]


def lstm_cell(inp: Tensor, h: Tensor, c: Tensor, weights: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """:func:`unrolled.ops.reference.lstm_cell` from the :func:`lstm_weights` of the cell."""
    return _LstmCell.apply(inp, h, c, *weights)


def residual_features(x: Tensor, y: Tensor, A: Tensor, W: Tensor, inputs: str, scale: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`unrolled.ops.reference.residual_features` as one node where ``A`` and ``W`` are fixed (NA-ALISTA's
    buffers); with a learned ``A`` or ``W`` the reference composition, whose autograd reaches them."""
    if A.requires_grad or W.requires_grad or scale.requires_grad:
        return reference.residual_features(x, y, A, W, inputs, scale)
    return _Residual.apply(x, y, A, W, inputs, scale)


def softsign_head(c: Tensor, U: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`unrolled.ops.reference.softsign_head` as one node."""
    return _SoftsignHead.apply(c, U)
