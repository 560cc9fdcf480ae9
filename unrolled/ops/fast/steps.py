"""Fast layer steps: the gradient step, ALISTA's and AGLISTA's layers as autograd nodes.

The same values as :mod:`unrolled.ops.reference` (tests/test_ops.py). Each node runs the
forward operations of the composition and a written-out backward with about half its passes
over ``(batch, n)``; without autograd intermediate buffers are reused. With scalar parameters,
``A`` and ``W`` fixed and the ``numba`` backend, a whole layer is one node whose element-wise
work is one kernel pass each way (:mod:`unrolled.ops.kernels`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import kernels
from ..selection import Cut
from .shrinkage import _fits, _shrink, _sum_product, level, selection_cut


def gradient_step(x: Tensor, y: Tensor, A: Tensor, W: Tensor, gamma: Tensor | float,
                  base: Tensor | None = None) -> Tensor:
    """``x + gamma W^T (y - A x)`` in row form: ``x + gamma (y - x A^T) W``.

    ``base`` replaces the leading ``x`` (AGLISTA steps from ``x`` along the residual of a
    gated ``g * x``). Without autograd the intermediate buffers are reused; with it one
    autograd node (:class:`_GradientStep`) replaces five. Both run the same forward operations.
    """
    if torch.is_grad_enabled():
        return _GradientStep.apply(x, y, A, W, gamma, base)
    z, _, _ = _gradient_step(x, y, A, W, gamma, base, save=False)
    return z


def _gradient_step(x: Tensor, y: Tensor, A: Tensor, W: Tensor, gamma: Tensor | float, base: Tensor | None,
                   save: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``(z, r, d)``: the step, the residual ``y - x A^T`` and the direction ``r W``.

    With ``save = False`` (no backward pass to feed) ``r`` and ``d`` come back as None and
    ``z`` may reuse ``d``'s buffer."""
    base = x if base is None else base
    r = x @ A.T
    r = torch.sub(y, r, out=r) if _fits(r, y) else y - r
    d = r @ W
    out = d if not save and _fits(d, gamma) and _fits(d, base) else None  # reuse d's buffer for z
    if isinstance(gamma, Tensor):  # base + gamma d in one (fused multiply-add) pass
        z = torch.addcmul(base, d, gamma) if out is None else torch.addcmul(base, d, gamma, out=out)
    else:
        z = torch.add(base, d, alpha=gamma) if out is None else torch.add(base, d, alpha=gamma, out=out)
    return (z, r, d) if save else (z, None, None)


class _GradientStep(torch.autograd.Function):
    """:func:`gradient_step` with a hand-written backward (one node per layer in training).

    With ``g`` the gradient of ``z`` and ``g_r = gamma g W^T``: ``dx = g - g_r A`` (``-g_r A``
    and ``dbase = g`` with a separate ``base``), ``dy = g_r``, ``dgamma = sum(g * d)``,
    ``dW = r^T (gamma g)``, ``dA = -g_r^T x``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, A: Tensor, W: Tensor, gamma: Tensor | float,
                base: Tensor | None = None) -> Tensor:
        z, r, d = _gradient_step(x, y, A, W, gamma, base, save=True)
        ctx.gamma_shape = gamma.shape if isinstance(gamma, Tensor) else None
        ctx.save_for_backward(x, A, W, r, d, gamma if isinstance(gamma, Tensor) else None)
        ctx.gamma = gamma if not isinstance(gamma, Tensor) else None
        ctx.own_base = base is not None
        return z

    @staticmethod
    def backward(ctx, g: Tensor):
        x, A, W, r, d, gamma_t = ctx.saved_tensors
        gamma = ctx.gamma if gamma_t is None else gamma_t
        need_x, need_y, need_A, need_W, need_gamma, need_base = ctx.needs_input_grad
        dx = dy = dA = dW = dgamma = None
        if need_x or need_y or need_A:
            per_entry = isinstance(gamma, Tensor) and gamma.dim() > 0 and gamma.shape[-1] != 1
            scale = -gamma if ctx.own_base else gamma  # with a base: -g_r, so that dx is one product
            g_r = (g * scale) @ W.T if per_entry else (g @ W.T) * scale  # scale the smaller one
            if ctx.own_base:
                dx, dy, dA = g_r @ A if need_x else None, -g_r if need_y else None, g_r.T @ x if need_A else None
            else:
                dx = torch.addmm(g, g_r, A, alpha=-1) if need_x else None
                dy = g_r if need_y else None
                dA = -(g_r.T @ x) if need_A else None
        if need_W:
            dW = r.T @ (g * gamma)
        if need_gamma:
            dgamma = _sum_product(g, d, ctx.gamma_shape)
        return dx, dy, dA, dW, dgamma, (g if need_base else None)


def pgd_step(x: Tensor, y: Tensor, A: Tensor, W: Tensor, gamma: Tensor | float, theta: Tensor | float,
             cut: Cut | None = None, eps: float | None = None) -> Tensor:
    """One proximal-gradient step ``shrink(x + gamma W^T (y - A x), theta)``.

    ISTA is ``W = A, gamma = 1/L, theta = lam/L``; ALISTA takes the analytic W and learned
    ``(gamma_t, theta_t)``; LISTA-CP a learned ``W_t`` with ``gamma = 1``; TiLISTA a learned
    W with ``gamma = alpha_t``; SLISTA ``W = A``, ``gamma = s_t``, ``theta = lam s_t``;
    NA-ALISTA per-sample ``(batch, 1)`` values. ``eps``: ALISTA-AT's per-entry threshold
    :func:`adaptive_threshold` ``theta / (|x| / eps + 1)`` of the current iterate.

    With scalar tensors ``gamma`` and ``theta``, fixed ``A`` and ``W`` on the CPU (ALISTA and
    ALISTA-AT), inference and training both take one node (:class:`_PgdStep`): the same
    forward operations and bits as the composition, a backward with about half its passes.
    """
    keep, with_theta = level(cut)
    if isinstance(gamma, Tensor) and isinstance(theta, Tensor) and _fixed_operators(x, y, A, W, gamma, theta):
        if not torch.is_grad_enabled():
            return _pgd_forward(x, y, A, W, gamma, theta, keep, with_theta, eps, save=False)[0]
        return _PgdStep.apply(x, y, A, W, gamma, theta, keep, with_theta, eps)
    if eps is not None:
        theta = adaptive_threshold(x, theta, eps)
    return _shrink(gradient_step(x, y, A, W, gamma), theta, keep, with_theta)


def _fixed_operators(x: Tensor, y: Tensor, A: Tensor, W: Tensor, *scalars: Tensor) -> bool:
    """Whether a layer's node with kernels applies: CPU tensors of one dtype (see
    :func:`kernels.usable`), scalar parameters, ``A`` and ``W`` without gradient."""
    return (kernels.usable_scalars(x, scalars=scalars) and kernels.usable(y) and x.dtype == y.dtype
            and not (A.requires_grad or W.requires_grad))


def _pgd_forward(x: Tensor, y: Tensor, A: Tensor, W: Tensor, gamma: Tensor, theta: Tensor, keep: int,
                 with_theta: bool, eps: float | None, save: bool) -> tuple[Tensor, Tensor | None, Tensor]:
    """``(out, r, code)`` of :class:`_PgdStep`'s forward; ``save = False`` (inference) reuses buffers."""
    z, r, _ = _gradient_step(x, y, A, W, gamma, None, save)
    th = theta.item()
    row_level = th if with_theta and eps is None else None  # one per row: rows may skip the selection
    cut = selection_cut(z.abs(), keep, row_level, overwrite=True) if keep > 0 else None
    if eps is None:
        out, code = kernels.shrinkage.shrink_forward(z, theta, cut, with_theta)
    else:
        out, code = kernels.shrinkage.adaptive_shrink_forward(z, x, th, eps, cut, with_theta)
    return out, r, code


class _PgdStep(torch.autograd.Function):
    """:func:`pgd_step` with scalar ``gamma`` and ``theta`` as one node: the products of
    :func:`gradient_step`, the selection, and one kernel each way for the shrinkage
    (with ALISTA-AT's thresholds made inside it, from ``x``).

    Backward from ``g``: ``gz`` (and the thresholds' part of ``x``'s gradient, added), ``g_r =
    gz W^T``, ``dgamma = <g_r, r>`` (the same sum as ``<gz, r W>``, over half the entries),
    ``dx = gz - gamma g_r A`` as one ``addmm``. It keeps ``x``, ``r`` and the ``int8`` codes.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, A: Tensor, W: Tensor, gamma: Tensor, theta: Tensor, keep: int,
                with_theta: bool, eps: float | None) -> Tensor:
        out, r, code = _pgd_forward(x, y, A, W, gamma, theta, keep, with_theta, eps, save=True)
        ctx.scalars = (gamma.item(), theta.item(), eps)
        ctx.save_for_backward(x, A, W, r, code)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        x, A, W, r, code = ctx.saved_tensors
        gamma, theta, eps = ctx.scalars
        if eps is None:
            gz, gtheta = kernels.shrinkage.shrink_backward(g, code, torch.Size(), True)
            gx = gz
        else:
            gz, gx, gtheta = kernels.shrinkage.adaptive_shrink_backward(g, code, x, theta, eps)
            gtheta = torch.tensor(gtheta, dtype=g.dtype)
        g_r = gz @ W.T
        ggamma = torch.dot(g_r.reshape(-1), r.reshape(-1))
        dx = torch.addmm(gx, g_r, A, alpha=-gamma)
        dy = g_r * gamma if ctx.needs_input_grad[1] else None
        return dx, dy, None, None, ggamma, gtheta, None, None, None


def adaptive_threshold(x: Tensor, theta: Tensor, eps: float) -> Tensor:
    """ALISTA-AT's per-entry threshold ``theta / (|x| / eps + 1)``, computed as ``theta eps / (|x| + eps)``.

    One autograd node (:class:`_AdaptiveThreshold`, six passes backward where autograd
    through ``abs``, ``div`` and ``add`` took about nine); without autograd the same operations
    in one buffer (the same bits).
    """
    if not torch.is_grad_enabled():
        r = x.abs().add_(eps).reciprocal_()
        return r.mul_(theta * eps) if _fits(r, theta) else r * (theta * eps)
    if not isinstance(theta, Tensor):  # a fixed threshold: only x's gradient, through autograd
        return (x.abs() + eps).reciprocal() * (theta * eps)
    return _AdaptiveThreshold.apply(x, theta, eps)


class _AdaptiveThreshold(torch.autograd.Function):
    """``out = theta eps r`` with ``r = 1 / (|x| + eps)``; ``d/dtheta = sum eps r``,
    ``d/dx = -theta eps r^2 sign(x)`` (``sign(0) = 0`` as in autograd's ``abs``)."""

    @staticmethod
    def forward(ctx, x: Tensor, theta: Tensor, eps: float) -> Tensor:
        r = x.abs().add_(eps).reciprocal_()
        ctx.eps = eps
        ctx.save_for_backward(x, r, theta)
        return r * (theta * eps)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, r, theta = ctx.saved_tensors
        need_x, need_theta, _ = ctx.needs_input_grad
        gt = _sum_product(g, r, theta.shape).mul_(ctx.eps) if need_theta else None
        gx = (g * r).mul_(r).mul_(torch.sign(x)).mul_(theta * -ctx.eps) if need_x else None
        return gx, gt, None


def gain_gate(x: Tensor, c: Tensor, v: Tensor) -> Tensor:
    """AGLISTA's gain gate applied to ``x``: ``x (1 + c exp(-v |x|))``, with ``c = theta_{t-1} nu_t``.

    One autograd node (:class:`_GainGate`) instead of six element-wise ones; without
    autograd the same operations in one buffer (the same bits).
    """
    if not torch.is_grad_enabled():
        ce = x.abs().mul_(-v).exp_().mul_(c)
        return torch.addcmul(x, x, ce, out=ce) if _fits(ce, x) else torch.addcmul(x, x, ce)
    return _GainGate.apply(x, c, v)


class _GainGate(torch.autograd.Function):
    """``out = x + x ce`` with ``e = exp(-v |x|)``, ``ce = c e``; ``d/dx = 1 + ce (1 - v |x|)``,
    ``d/dc = sum x e``, ``d/dv = -sum x |x| ce`` (``sign(0) = 0`` as in autograd's ``abs``)."""

    @staticmethod
    def forward(ctx, x: Tensor, c: Tensor, v: Tensor) -> Tensor:
        a = x.abs()
        e = torch.exp(a.mul_(-v))
        ce = e * c
        ctx.save_for_backward(x, x.abs(), e, ce, c, v)
        return torch.addcmul(x, x, ce)

    @staticmethod
    def backward(ctx, g: Tensor):
        need_x, need_c, need_v = ctx.needs_input_grad
        x, a, e, ce, c, v = ctx.saved_tensors
        gx = gc = gv = None
        if need_c or need_v:
            g_x = g * x
            gc = _sum_product(g_x, e, c.shape) if need_c else None
            gv = _sum_product(g_x.mul_(a), ce, v.shape).neg_() if need_v else None
        if need_x:
            gx = torch.addcmul(g, g, (a * -v).add_(1).mul_(ce))
        return gx, gc, gv


def overshoot(x_new: Tensor, x: Tensor, a: Tensor, eps: float = 0.01) -> Tensor:
    """AGLISTA's overshoot gate: ``x_new + a (x_new - x) / (|x_new - x| + eps)``.

    The same as ``o x_new + (1 - o) x`` with ``o = 1 + a / (|x_new - x| + eps)``, in one
    autograd node (:class:`_Overshoot`); without autograd in two buffers (the same bits).
    """
    if not torch.is_grad_enabled():
        d = x_new - x
        q = d.div_(d.abs().add_(eps))
        return torch.addcmul(x_new, a, q, out=q) if _fits(q, x_new) else torch.addcmul(x_new, a, q)
    return _Overshoot.apply(x_new, x, a, eps)


class _Overshoot(torch.autograd.Function):
    """``out = x_new + a q``, ``q = d / (|d| + eps)``, ``d = x_new - x``; ``dq/dd = eps / (|d| + eps)^2``."""

    @staticmethod
    def forward(ctx, x_new: Tensor, x: Tensor, a: Tensor, eps: float) -> Tensor:
        ctx.eps = eps
        d = x_new - x
        den = d.abs().add_(eps)
        q = d.div_(den)
        ctx.save_for_backward(q, den, a)
        return torch.addcmul(x_new, a, q)

    @staticmethod
    def backward(ctx, g: Tensor):
        need_new, need_x, need_a, _ = ctx.needs_input_grad
        q, den, a = ctx.saved_tensors
        ga = _sum_product(g, q, a.shape) if need_a else None
        s = (g * (a * ctx.eps)).div_(den).div_(den)  # g a dq/dd
        return (g + s) if need_new else None, s.neg_() if need_x else None, ga, None


def gated_step(x: Tensor, y: Tensor, A: Tensor, W: Tensor, c: Tensor, v: Tensor, gamma: Tensor, theta: Tensor,
               a: Tensor, cut: Cut | None = None, eps: float = 0.01) -> Tensor:
    """AGLISTA's layer: ``x~ = shrink(x + gamma W^T (y - A (g x)), theta)``, ``g x = gain_gate(x, c, v)``,
    then ``overshoot(x~, x, a)``.

    On the CPU with scalar parameters, inference and training both take one node with fused
    kernels (:class:`_GatedStep`): the same bits in both, and about a third fewer passes over
    ``(batch, n)`` in training. Otherwise the composition of :func:`gain_gate`,
    :func:`gradient_step`, :func:`shrink` and :func:`overshoot`.
    """
    keep, with_theta = level(cut)
    if _fixed_operators(x, y, A, W, c, v, gamma, theta, a):
        return _GatedStep.apply(x, y, A, W, c, v, gamma, theta, a, keep, with_theta, eps)
    z = gradient_step(gain_gate(x, c, v), y, A, W, gamma, base=x)
    return overshoot(_shrink(z, theta, keep, with_theta), x, a, eps)


class _GatedStep(torch.autograd.Function):
    """:func:`gated_step` as one node: four kernels (:mod:`unrolled.ops.kernels`) and four products.

    Forward: ``gx = gate(x)``, ``r = y - gx A^T``, ``z = x + gamma r W``, ``(out, code) =
    overshoot(shrink(z))``. Backward from ``g``: ``(gz, gsum)`` from the shrinkage and the
    overshoot (``gsum`` adds the overshoot's part of ``x``'s gradient), ``g_r = gz W^T``,
    ``dgamma = <g_r, r>`` (the same sum as ``<gz, r W>``, over half the entries), ``dgx = -gamma
    g_r A`` and ``dx = gsum + gate'(x) dgx``. It keeps ``x``, ``z``, ``r`` and the ``int8`` codes.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, A: Tensor, W: Tensor, c: Tensor, v: Tensor, gamma: Tensor,
                theta: Tensor, a: Tensor, keep: int, with_theta: bool, eps: float) -> Tensor:
        s = ctx.scalars = (c.item(), v.item(), gamma.item(), theta.item(), a.item(), eps)
        gx = kernels.gates.gate_forward(x, s[0], s[1])
        r = gx @ A.T
        r = torch.sub(y, r, out=r)
        z = r @ W
        z = torch.add(x, z, alpha=s[2], out=z)
        cut = selection_cut(z.abs(), keep, s[3] if with_theta else None, overwrite=True) if keep > 0 else None
        out, code = kernels.gates.shrink_overshoot_forward(z, x, s[3], cut, with_theta, s[4], eps)
        ctx.save_for_backward(x, A, W, r, z, code)
        ctx.dtype = c.dtype
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        x, A, W, r, z, code = ctx.saved_tensors
        c, v, gamma, theta, a, eps = ctx.scalars
        gz, gsum, ga, gth = kernels.gates.shrink_overshoot_backward(g, z, x, code, theta, a, eps)
        g_r = gz @ W.T
        ggamma = torch.dot(g_r.reshape(-1), r.reshape(-1)).item()
        g_r.mul_(-gamma)
        dx, gc, gv = kernels.gates.gate_backward(g_r @ A, x, c, v, gsum)
        dy = g_r.neg() if ctx.needs_input_grad[1] else None
        grads = (torch.tensor(t, dtype=ctx.dtype) for t in (gc, gv, ggamma, gth, ga))
        return dx, dy, None, None, *grads, None, None, None

