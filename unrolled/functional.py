"""Pure maths shared by the classical solvers and their unrolled twins (SPEC §5, §6).

Shapes: ``x: (batch, n)``, ``y: (batch, m)``, ``A, W: (m, n)``. Thresholds and step sizes
broadcast against ``(batch, n)``: a scalar, a per-coordinate ``(n,)``, a per-sample
``(batch, 1)`` or a per-entry ``(batch, n)`` tensor.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from . import kernels

SUPPORT_MODES = ("none", "percentage", "count")


def _scalar(v: Tensor | float) -> float | None:
    """``v`` as a Python float if it is one number held on the CPU, else ``None``."""
    if isinstance(v, Tensor):
        return float(v.detach()) if v.dim() == 0 and v.device.type == "cpu" else None
    return float(v)


def _fits(out: Tensor, other: Tensor | float) -> bool:
    """Whether ``out op= other`` gives the same tensor as ``out op other`` (shape and dtype kept)."""
    if not isinstance(other, Tensor):
        return True
    return (torch.broadcast_shapes(out.shape, other.shape) == out.shape
            and torch.result_type(out, other) == out.dtype)


def soft_threshold(z: Tensor, theta: Tensor | float) -> Tensor:
    """``eta_theta(z) = sign(z) max(|z| - theta, 0)``, computed as ``z - clamp(z, -theta, theta)``.

    Without autograd a scalar ``theta >= 0`` takes the fused ``softshrink`` kernel and a
    tensor ``theta`` reuses its buffer; both give the same bits as the formula.
    """
    if not torch.is_grad_enabled():
        th = _scalar(theta)
        if th is not None and th >= 0:
            return torch.nn.functional.softshrink(z, th)
        clipped = _clamp(z, theta)
        return torch.sub(z, clipped, out=clipped) if _fits(clipped, z) else z - clipped
    if isinstance(theta, Tensor):
        return _Shrink.apply(z, theta, None)
    return z - z.clamp(-theta, theta)


def _clamp(z: Tensor, theta: Tensor | float) -> Tensor:
    """``clamp(z, -theta, theta) = min(max(z, -theta), theta)`` (for any sign of ``theta``).

    A scalar held on the CPU takes the number-bounds kernel; broadcast tensor bounds
    (per sample, per coordinate) go through ``maximum`` and ``minimum``, about 3x faster on
    the CPU than ``clamp`` broadcasting three operands in one kernel; all give the same bits.
    """
    th = _scalar(theta)
    if th is not None:
        return z.clamp(-th, th)
    if theta.shape == z.shape:  # per entry: one pass beats three
        return torch.clamp(z, -theta, theta)
    out = torch.maximum(z, -theta)
    return torch.minimum(out, theta, out=out) if _fits(out, theta) else torch.minimum(out, theta)


def _sum_product(a: Tensor, b: Tensor, shape: torch.Size) -> Tensor:
    """``a * b`` summed down to ``shape`` (the gradient of a broadcast parameter); a scalar in one dot product."""
    if len(shape) == 0:
        return torch.dot(a.reshape(-1), b.reshape(-1))
    return (a * b).sum_to_size(shape)


class _Shrink(torch.autograd.Function):
    """``z - clamp(z, -theta, theta) * [|z| <= hi]`` and its gradient.

    ``hi`` is the support-selection level: ``cut`` (a per-sample ``(batch, 1)`` tensor without
    gradient, or None for the plain soft threshold, which shrinks every entry), raised to
    ``max(cut, theta)`` in the percentage form (``with_theta``). Entries with ``|z| > hi`` pass
    unchanged. One function instead of autograd through ``clamp`` with tensor bounds and a mask,
    which cost a quarter of an ALISTA training step. An entry passes (``d/dz = 1``) where
    ``|z| > min(hi, theta)``, else ``d/dz = 0``; ``d/dtheta = -sign(z)`` where it passes and
    ``|z| <= hi`` (shrunk), else 0: the conventions of ``clamp`` at ``|z| = theta``.

    On the CPU both directions run as one fused kernel each (:mod:`unrolled.kernels`), which
    keeps the entries' states as ``int8`` codes. Otherwise: comparisons write float 0/1
    factors directly (boolean tensors and their conversion are several times slower on the
    CPU).
    """

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, cut: Tensor | None, with_theta: bool = False) -> Tensor:
        ctx.theta_shape = theta.shape
        ctx.kernel = kernels.usable(z, theta)
        if ctx.kernel:
            out, code = kernels.shrink_forward(z, theta, cut, with_theta)
            ctx.save_for_backward(code)
            return out
        hi = cut if cut is None or not with_theta else torch.maximum(cut, theta)
        a = z.abs()
        lo = theta if hi is None or with_theta else torch.minimum(hi, theta)  # min(hi, theta)
        passing = torch.gt(a, lo, out=torch.empty_like(z))
        clipped = _clamp(z, theta)
        signs = torch.sign(z)
        if hi is not None:
            inside = torch.le(a, hi, out=a)
            clipped.mul_(inside)
            signs.mul_(inside)
        ctx.save_for_backward(passing, signs)
        return torch.sub(z, clipped, out=clipped)

    @staticmethod
    def backward(ctx, grad: Tensor):
        need_z, need_theta = ctx.needs_input_grad[:2]
        if ctx.kernel:
            grad_z, grad_theta = kernels.shrink_backward(grad, *ctx.saved_tensors, ctx.theta_shape, need_theta)
            return (grad_z if need_z else None), grad_theta, None, None
        passing, signs = ctx.saved_tensors
        grad_z = grad * passing
        grad_theta = _sum_product(grad_z, signs, ctx.theta_shape).neg_() if need_theta else None
        return (grad_z if need_z else None), grad_theta, None, None


def step_shrink(x: Tensor, gamma: Tensor, d: Tensor, theta: Tensor, keep: int = 0, with_theta: bool = True) -> Tensor:
    """``shrink(x + gamma d, theta, keep, with_theta)``: the last half of a gradient step whose
    direction ``d`` is computed outside (NA-ALISTA's features read it).

    In training on the CPU (``gamma`` a scalar or per sample) one node (:class:`_StepShrink`)
    whose backward is one pass (:func:`unrolled.kernels.step_shrink_backward`) where autograd
    took five; the forward is the same operations either way.
    """
    if not (torch.is_grad_enabled() and kernels.usable(x, gamma, theta) and kernels.usable(d, gamma)
            and gamma.shape[-1:] != x.shape[-1:] and d.shape == x.shape):
        return shrink(torch.addcmul(x, gamma, d), theta, keep, with_theta)
    return _StepShrink.apply(x, gamma, d, theta, keep, with_theta)


class _StepShrink(torch.autograd.Function):
    """:func:`step_shrink`: ``z = x + gamma d``, then the shrinkage of :class:`_Shrink` (kernel form)."""

    @staticmethod
    def forward(ctx, x: Tensor, gamma: Tensor, d: Tensor, theta: Tensor, keep: int, with_theta: bool) -> Tensor:
        z = torch.addcmul(x, gamma, d)
        cut = selection_cut(z.abs(), keep, _row_level(theta, with_theta), overwrite=True) if keep > 0 else None
        out, code = kernels.shrink_forward(z, theta, cut, with_theta)
        ctx.theta_shape = theta.shape
        ctx.save_for_backward(code, d, gamma)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        code, d, gamma = ctx.saved_tensors
        gz, gd, ggamma, gtheta = kernels.step_shrink_backward(g, code, d, gamma, ctx.theta_shape,
                                                              ctx.needs_input_grad[3])
        return gz, ggamma, gd, gtheta, None, None


def percentage_keep(t: int, n: int, p: float = 1.2, p_max: float = 13.0) -> int:
    """Entries strictly above the (100 - q_t)-th percentile of ``n`` values, ``q_t = min(p t, p_max)``.

    The percentile uses the 'nearest' rule of the reference code (TensorFlow's default):
    the order statistic at ascending index ``round((1 - q/100)(n - 1))``. Entries strictly
    above it are the ``n - 1 - index`` largest (ties aside).
    """
    q = min(p * t, p_max)
    index = round((1 - q / 100) * (n - 1))
    return max(0, n - 1 - index)


def count_schedule(s: float, K: int, ramp: float = 1.0) -> list[int]:
    """NA-ALISTA's ``p_k = linspace(floor(1.2 s / K), 1.2 s, K)`` as integers.

    With ``ramp < 1`` the linspace covers only the first ``ceil(ramp K)`` layers and the
    rest keep ``1.2 s`` (the support is settled earlier, later layers refine it).
    """
    lo, hi = math.floor(1.2 * s / K), 1.2 * s
    R = max(1, min(K, math.ceil(ramp * K)))
    if R == 1:
        return [int(hi)] * K
    return [int(lo + (hi - lo) * min(k, R - 1) / (R - 1)) for k in range(K)]


_POOLS: dict[int, ThreadPoolExecutor] = {}  # row-parallel selection, one pool per thread count
PARALLEL_ROWS = 4096  # selection on fewer rows runs in one call


def _partition_column(a, index: int, overwrite: bool = False):
    """Column ``index`` of ``np.partition(a, index, axis=-1)`` (2-D ``a``), shape ``(rows, 1)``.

    ``overwrite`` partitions ``a`` itself instead of a copy. Large inputs are split by rows
    over ``torch.get_num_threads()`` threads (NumPy releases the GIL while it partitions);
    every row's result is the same as in one call.
    """

    def column(b):
        if overwrite:
            b.partition(index, axis=-1)
        else:
            b = np.partition(b, index, axis=-1)
        return b[:, index:index + 1]

    rows, threads = a.shape[0], torch.get_num_threads()
    if threads < 2 or rows < PARALLEL_ROWS:
        return column(a)
    if threads not in _POOLS:
        _POOLS[threads] = ThreadPoolExecutor(threads)
    bounds = np.linspace(0, rows, threads + 1).astype(int)
    return np.concatenate(list(_POOLS[threads].map(lambda lo, hi: column(a[lo:hi]), bounds[:-1], bounds[1:])))


def kth_largest(a: Tensor, k: int, overwrite: bool = False) -> Tensor:
    """The ``k``-th largest value of each row, shape ``(..., 1)``, without gradient.

    On the CPU, NumPy's introselect (``np.partition``, linear time) is about 7x faster than
    ``torch.topk`` for 10,000 x 500 and k = 61 (benchmarks/bench_forward.py); elsewhere topk.
    ``overwrite`` lets it reorder each row of a contiguous ``a`` in place (saves a copy).
    """
    n = a.shape[-1]
    if a.device.type == "cpu" and a.dtype in (torch.float32, torch.float64) and not a.requires_grad:
        col = _partition_column(a.reshape(-1, n).numpy(), n - k, overwrite and a.is_contiguous())
        return torch.from_numpy(np.ascontiguousarray(col)).reshape(*a.shape[:-1], 1)
    return a.topk(k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)


def selection_cut(a: Tensor, keep: int, theta: Tensor | float | None = None, overwrite: bool = False) -> Tensor:
    """The per-sample level above which ``|z|`` bypasses the shrinkage, from ``a = |z|`` (no gradient).

    Entries strictly above the ``(keep + 1)``-th largest ``|z|`` (the percentile or ``p_k``-th
    value), and with ``theta`` (percentage form) also above ``theta``: the level is then
    ``max(cut, theta)``. ``keep >= n`` lets every entry through (every entry above ``theta``
    with it). ``overwrite``: ``a`` may be reordered (see :func:`kth_largest`).

    With a ``theta`` shared by a row (a scalar or per sample) a row in which at most ``keep``
    entries exceed ``theta`` has ``cut <= theta``, so its level is ``theta`` without a selection;
    in the other rows the cut is among the entries above ``theta``, so when those are at most
    half a row the selection runs on them alone (:func:`unrolled.kernels.count_over`,
    :func:`unrolled.kernels.compact_over`). Most rows take one of the two short cuts once the
    support has settled (docs/results.md). The levels are the same.
    """
    with torch.no_grad():
        if keep >= a.shape[-1]:
            cut = a.new_full((*a.shape[:-1], 1), -1.0)
        elif _row_theta(a, theta):
            counts = kernels.count_over(a, theta)
            rows = np.flatnonzero(counts > keep)
            cut = a.new_full((*a.shape[:-1], 1), -1.0)
            width = int(counts[rows].max()) if len(rows) else 0
            if len(rows) and width <= a.shape[-1] // 2:  # the level is among the entries above theta
                shortlist = kernels.compact_over(a, theta, rows, width, pad=-1.0)  # |z| >= 0 > pad
                cut[rows] = torch.from_numpy(_partition_column(shortlist, width - keep - 1, overwrite=True))
            elif len(rows) == a.shape[0]:
                cut = kth_largest(a, keep + 1, overwrite)
            elif len(rows):
                rows = torch.from_numpy(rows)
                cut[rows] = kth_largest(a[rows], keep + 1, overwrite=True)  # a[rows] is a copy
        else:
            cut = kth_largest(a, keep + 1, overwrite)
        if theta is None:
            return cut
        return torch.maximum(cut, theta) if isinstance(theta, Tensor) else cut.clamp_(min=theta)


def _row_level(theta: Tensor, with_theta: bool) -> Tensor | None:
    """``theta`` for :func:`selection_cut` in the training paths: in the percentage form and one per
    row (the cut stays one per row, and the shrinkage raises it to ``theta`` again: the same level)."""
    return theta.detach() if with_theta and (theta.dim() == 0 or theta.shape[-1] == 1) else None


def _row_theta(a: Tensor, theta: Tensor | float | None) -> bool:
    """Whether ``theta`` is one threshold per row of the 2-D CPU ``a``, as :func:`kernels.count_over` takes it."""
    if theta is None or not kernels.usable(a):
        return False
    if not isinstance(theta, Tensor):
        return True
    return kernels.usable(a, theta) and theta.shape[-1:] != a.shape[-1:]


def support_mask(z: Tensor, keep: int, theta: Tensor | float | None = None) -> Tensor:
    """Entries that bypass the shrinkage: ``|z|`` among the ``keep`` largest per sample.

    With ``theta`` (percentage form) an entry must also satisfy ``|z| > theta``. The
    mask is computed without gradient. ``keep = 0`` selects nothing.
    """
    with torch.no_grad():
        if keep <= 0:
            return torch.zeros_like(z, dtype=torch.bool)
        a = z.abs()
        return a > selection_cut(a, keep, theta)


def shrink(z: Tensor, theta: Tensor | float, keep: int = 0, with_theta: bool = True) -> Tensor:
    """Soft threshold with support selection: the selected entries pass unchanged.

    ``keep = 0`` is the plain soft threshold. ``with_theta`` selects the percentage form
    (``|z| > theta`` required) or the count form (no ``theta`` condition). The result is
    ``z - clamp(z, -theta, theta) * [|z| <= cut]`` with the cut of :func:`selection_cut`.
    """
    if keep <= 0:
        return soft_threshold(z, theta)
    if torch.is_grad_enabled() and isinstance(theta, Tensor):
        with torch.no_grad():
            cut = selection_cut(z.abs(), keep, _row_level(theta, with_theta), overwrite=True)
        return _Shrink.apply(z, theta, cut, with_theta)
    with torch.no_grad():
        a = z.abs()
        cut = selection_cut(a, keep, theta if with_theta else None)
    with torch.no_grad():
        inside = torch.le(a, cut, out=a)
    clipped = _clamp(z, theta)
    if not torch.is_grad_enabled() and _fits(clipped, z):
        return torch.sub(z, clipped.mul_(inside), out=clipped)  # the same bits as below
    return z - clipped * inside


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
             keep: int = 0, with_theta: bool = True, eps: float | None = None) -> Tensor:
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
    if isinstance(gamma, Tensor) and isinstance(theta, Tensor) and _fixed_operators(x, y, A, W, gamma, theta):
        if not torch.is_grad_enabled():
            return _pgd_forward(x, y, A, W, gamma, theta, keep, with_theta, eps, save=False)[0]
        return _PgdStep.apply(x, y, A, W, gamma, theta, keep, with_theta, eps)
    if eps is not None:
        theta = adaptive_threshold(x, theta, eps)
    return shrink(gradient_step(x, y, A, W, gamma), theta, keep, with_theta)


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
    level = th if with_theta and eps is None else None  # one per row: rows may skip the selection
    cut = selection_cut(z.abs(), keep, level, overwrite=True) if keep > 0 else None
    if eps is None:
        out, code = kernels.shrink_forward(z, theta, cut, with_theta)
    else:
        out, code = kernels.adaptive_shrink_forward(z, x, th, eps, cut, with_theta)
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
            gz, gtheta = kernels.shrink_backward(g, code, torch.Size(), True)
            gx = gz
        else:
            gz, gx, gtheta = kernels.adaptive_shrink_backward(g, code, x, theta, eps)
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
               a: Tensor, keep: int = 0, with_theta: bool = True, eps: float = 0.01) -> Tensor:
    """AGLISTA's layer: ``x~ = shrink(x + gamma W^T (y - A (g x)), theta)``, ``g x = gain_gate(x, c, v)``,
    then ``overshoot(x~, x, a)``.

    On the CPU with scalar parameters, inference and training both take one node with fused
    kernels (:class:`_GatedStep`): the same bits in both, and about a third fewer passes over
    ``(batch, n)`` in training. Otherwise the composition of :func:`gain_gate`,
    :func:`gradient_step`, :func:`shrink` and :func:`overshoot`.
    """
    if _fixed_operators(x, y, A, W, c, v, gamma, theta, a):
        return _GatedStep.apply(x, y, A, W, c, v, gamma, theta, a, keep, with_theta, eps)
    z = gradient_step(gain_gate(x, c, v), y, A, W, gamma, base=x)
    return overshoot(shrink(z, theta, keep, with_theta), x, a, eps)


class _GatedStep(torch.autograd.Function):
    """:func:`gated_step` as one node: four kernels (:mod:`unrolled.kernels`) and four products.

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
        gx = kernels.gate_forward(x, s[0], s[1])
        r = gx @ A.T
        r = torch.sub(y, r, out=r)
        z = r @ W
        z = torch.add(x, z, alpha=s[2], out=z)
        cut = selection_cut(z.abs(), keep, s[3] if with_theta else None, overwrite=True) if keep > 0 else None
        out, code = kernels.shrink_overshoot_forward(z, x, s[3], cut, with_theta, s[4], eps)
        ctx.save_for_backward(x, A, W, r, z, code)
        ctx.dtype = c.dtype
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        x, A, W, r, z, code = ctx.saved_tensors
        c, v, gamma, theta, a, eps = ctx.scalars
        gz, gsum, ga, gth = kernels.shrink_overshoot_backward(g, z, x, code, theta, a, eps)
        g_r = gz @ W.T
        ggamma = torch.dot(g_r.reshape(-1), r.reshape(-1)).item()
        g_r.mul_(-gamma)
        dx, gc, gv = kernels.gate_backward(g_r @ A, x, c, v, gsum)
        dy = g_r.neg() if ctx.needs_input_grad[1] else None
        grads = (torch.tensor(t, dtype=ctx.dtype) for t in (gc, gv, ggamma, gth, ga))
        return dx, dy, None, None, *grads, None, None, None


def bg_denoise(r: Tensor, tau2: Tensor, eps: Tensor | float, var: Tensor | float) -> tuple[Tensor, Tensor]:
    """MMSE estimate of ``x`` from ``r = x + N(0, tau2)`` under ``x ~ (1 - eps) delta_0 + eps N(0, var)``,
    and the per-sample mean of its derivative in ``r`` (the Onsager term of AMP).

    ``E[x | r] = pi(r) c r`` with ``c = var / (var + tau2)`` and ``pi = sigmoid(llr)`` the
    posterior probability that the entry is non-zero; ``d/dr = c pi (1 + (1 - pi) c r^2 / tau2)``.
    """
    c = var / (var + tau2)
    q = (c / tau2) * r * r  # shared by the log-likelihood ratio and the derivative
    llr = torch.log(eps / (1 - eps)) if isinstance(eps, Tensor) else math.log(eps / (1 - eps))
    pi = torch.sigmoid(llr + 0.5 * torch.log(1 - c) + 0.5 * q)
    x = pi * c * r
    dx = (c * pi * (1 + (1 - pi) * q)).mean(-1, keepdim=True)
    return x, dx


def soft_denoise(r: Tensor, tau2: Tensor, alpha: Tensor | float) -> tuple[Tensor, Tensor]:
    """``eta_{alpha tau}(r)`` (AMP's soft threshold at ``alpha`` noise deviations) and the mean of its derivative."""
    theta = alpha * tau2.sqrt()
    return soft_threshold(r, theta), (r.abs() > theta).to(r.dtype).mean(-1, keepdim=True)


def amp_step(x: Tensor, v: Tensor, onsager: Tensor | float, y: Tensor, A: Tensor, B: Tensor,
             denoise, gain: Tensor | float = 1.0) -> tuple[Tensor, Tensor, Tensor]:
    """One (learned) AMP iteration; returns ``(x, v, onsager)`` for the next one.

    ``v = y - A x + onsager v_prev`` (the residual with its Onsager correction),
    ``tau2 = gain ||v||^2 / m`` (the effective noise variance), ``r = x + B^T v`` and
    ``x <- denoise(r, tau2)``; the next correction is ``(n / m) mean(denoise')``. AMP is
    ``B = A`` and ``gain = 1`` (Donoho, Maleki & Montanari 2009); LAMP learns them
    (Borgerding, Schniter & Rangan 2017).
    """
    m, n = A.shape
    v = y - x @ A.T + onsager * v
    tau2 = ((gain / m) * (v * v).sum(-1, keepdim=True)).clamp_min(torch.finfo(v.dtype).eps ** 2)
    x, dx = denoise(x + v @ B, tau2)
    return x, v, (n / m) * dx


def fista_momentum(t: float) -> tuple[float, float]:
    """``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2`` and the extrapolation weight ``(t_k - 1) / t_{k+1}``."""
    t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
    return t_next, (t - 1) / t_next


def lasso_objective(x: Tensor, y: Tensor, A: Tensor, lam: float) -> Tensor:
    """``F(x) = 1/2 ||y - A x||^2 + lam ||x||_1`` per sample, shape ``(batch,)``."""
    r = y - x @ A.T
    return 0.5 * (r * r).sum(-1) + lam * x.abs().sum(-1)


def kkt_residual(x: Tensor, y: Tensor, A: Tensor, lam: float) -> Tensor:
    """Distance of ``0`` from the Lasso subdifferential at ``x``, per sample (sup norm).

    ``g = A^T (A x - y)``; optimality needs ``g_i = -lam sign(x_i)`` on the support and
    ``|g_i| <= lam`` off it.
    """
    g = (x @ A.T - y) @ A
    on = x != 0
    res = torch.where(on, (g + lam * torch.sign(x)).abs(), (g.abs() - lam).clamp(min=0))
    return res.amax(-1)
