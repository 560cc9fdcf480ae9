"""Fast soft threshold and support selection: autograd nodes with written-out gradients.

The same values as :func:`unrolled.ops.reference.shrink` (tests/test_ops.py), computed as
``z - clamp(z, -theta, theta) * [|z| <= level]`` with the bypass level of
:func:`selection_cut`. One node instead of autograd through ``clamp`` with tensor bounds and
a mask (docs/performance.md); the selection runs NumPy's
introselect (linear time) instead of ``topk``; without autograd buffers are reused. Under the
``numba`` backend both directions are one kernel pass (:mod:`unrolled.ops.kernels.shrinkage`).

The internal functions take ``keep`` (entries that may bypass; 0 for none) and ``with_theta``
(whether a bypassing entry must exceed the threshold); the public ones a
:class:`~unrolled.ops.selection.Cut`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from .. import kernels
from ..selection import Cut


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
    (per sample, per coordinate) go through ``maximum`` and ``minimum``, faster on the CPU than
    ``clamp`` broadcasting three operands in one kernel (docs/performance.md); all give the same bits.
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
    unchanged. One function instead of autograd through ``clamp`` with tensor bounds and a mask.
    An entry passes (``d/dz = 1``) where ``|z| > min(hi, theta)``, else ``d/dz = 0``; ``d/dtheta =
    -sign(z)`` (-1 for a negative ``theta``) where it passes and ``|z| <= hi`` (shrunk), else 0.

    On the CPU both directions run as one fused kernel each (:mod:`unrolled.ops.kernels`), which
    keeps the entries' states as ``int8`` codes. Otherwise: comparisons write float 0/1
    factors directly (boolean tensors and their conversion are slower on the CPU).
    """

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, cut: Tensor | None, with_theta: bool = False) -> Tensor:
        ctx.theta_shape = theta.shape
        ctx.kernel = kernels.usable(z, theta)
        if ctx.kernel:
            out, code = kernels.shrinkage.shrink_forward(z, theta, cut, with_theta)
            ctx.save_for_backward(code)
            return out
        hi = cut if cut is None or not with_theta else torch.maximum(cut, theta)
        a = z.abs()
        lo = theta if hi is None or with_theta else torch.minimum(hi, theta)  # min(hi, theta)
        passing = torch.gt(a, lo, out=torch.empty_like(z))
        clipped = _clamp(z, theta)
        signs = _signs(z, theta)
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
            grad_z, grad_theta = kernels.shrinkage.shrink_backward(grad, *ctx.saved_tensors, ctx.theta_shape,
                                                                   need_theta)
            return (grad_z if need_z else None), grad_theta, None, None
        passing, signs = ctx.saved_tensors
        grad_z = grad * passing
        grad_theta = _sum_product(grad_z, signs, ctx.theta_shape).neg_() if need_theta else None
        return (grad_z if need_z else None), grad_theta, None, None


def _step_shrink(x: Tensor, gamma: Tensor, d: Tensor, theta: Tensor, keep: int, with_theta: bool) -> Tensor:
    """``shrink(x + gamma d, theta, keep, with_theta)``: the last half of a gradient step whose
    direction ``d`` is computed outside (NA-ALISTA's features read it).

    In training on the CPU (``gamma`` a scalar or per sample) one node (:class:`_StepShrink`)
    whose backward is one pass (:func:`unrolled.ops.kernels.shrinkage.step_shrink_backward`) where autograd
    took five; the forward is the same operations either way.
    """
    if not (torch.is_grad_enabled() and kernels.usable(x, gamma, theta) and kernels.usable(d, gamma)
            and gamma.shape[-1:] != x.shape[-1:] and d.shape == x.shape):
        return _shrink(torch.addcmul(x, gamma, d), theta, keep, with_theta)
    return _StepShrink.apply(x, gamma, d, theta, keep, with_theta)


class _StepShrink(torch.autograd.Function):
    """:func:`step_shrink`: ``z = x + gamma d``, then the shrinkage of :class:`_Shrink` (kernel form)."""

    @staticmethod
    def forward(ctx, x: Tensor, gamma: Tensor, d: Tensor, theta: Tensor, keep: int, with_theta: bool) -> Tensor:
        z = torch.addcmul(x, gamma, d)
        cut = selection_cut(z.abs(), keep, _row_level(theta, with_theta), overwrite=True) if keep > 0 else None
        out, code = kernels.shrinkage.shrink_forward(z, theta, cut, with_theta)
        ctx.theta_shape = theta.shape
        ctx.save_for_backward(code, d, gamma)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):
        code, d, gamma = ctx.saved_tensors
        gz, gd, ggamma, gtheta = kernels.shrinkage.step_shrink_backward(g, code, d, gamma, ctx.theta_shape,
                                                              ctx.needs_input_grad[3])
        return gz, ggamma, gd, gtheta, None, None


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

    On the CPU, NumPy's introselect (``np.partition``, linear time) instead of ``torch.topk``
    (docs/performance.md); elsewhere topk.
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
    half a row the selection runs on them alone (:func:`unrolled.ops.kernels.selection.count_over`,
    :func:`unrolled.ops.kernels.selection.compact_over`). Most rows take one of the two short cuts once the
    support has settled (docs/results.md). The levels are the same.
    """
    with torch.no_grad():
        if keep >= a.shape[-1]:
            cut = a.new_full((*a.shape[:-1], 1), -1.0)
        elif _row_theta(a, theta):
            counts = kernels.selection.count_over(a, theta)
            rows = np.flatnonzero(counts > keep)
            cut = a.new_full((*a.shape[:-1], 1), -1.0)
            width = int(counts[rows].max()) if len(rows) else 0
            if len(rows) and width <= a.shape[-1] // 2:  # the level is among the entries above theta
                shortlist = kernels.selection.compact_over(a, theta, rows, width, pad=-1.0)  # |z| >= 0 > pad
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
    """Whether ``theta`` is one threshold per row of the 2-D CPU ``a``, as the count kernel takes it."""
    if theta is None or not kernels.usable(a):
        return False
    if not isinstance(theta, Tensor):
        return True
    return kernels.usable(a, theta) and theta.shape[-1:] != a.shape[-1:]


def _shrink(z: Tensor, theta: Tensor | float, keep: int = 0, with_theta: bool = True) -> Tensor:
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


def _signs(z: Tensor, theta: Tensor) -> Tensor:
    """``-d out / d theta`` of a shrunk entry: ``sign(z)``, or 1 where ``theta < 0`` (then ``out = z - theta``)."""
    signs = torch.sign(z)
    negative = theta < 0
    return torch.where(negative, 1.0, signs).to(z.dtype) if bool(negative.any()) else signs


def level(cut: Cut | None) -> tuple[int, bool]:
    """``(keep, with_theta)`` of a cut: ``(0, True)`` without one."""
    return (0, True) if cut is None else (cut.keep, cut.above_theta)


def shrink(z: Tensor, theta: Tensor | float, cut: Cut | None = None) -> Tensor:
    """:func:`unrolled.ops.reference.shrink`, fast."""
    return _shrink(z, theta, *level(cut))


def step_shrink(x: Tensor, gamma: Tensor, d: Tensor, theta: Tensor, cut: Cut | None = None) -> Tensor:
    """:func:`unrolled.ops.reference.step_shrink`, fast: in training on the CPU (``gamma`` a scalar or per
    sample) one node (:class:`_StepShrink`) whose backward is one pass under the numba backend."""
    return _step_shrink(x, gamma, d, theta, *level(cut))
