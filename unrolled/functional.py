"""Pure maths shared by the classical solvers and their unrolled twins (SPEC §5, §6).

Shapes: ``x: (batch, n)``, ``y: (batch, m)``, ``A, W: (m, n)``. Thresholds and step sizes
broadcast against ``(batch, n)``: a scalar, a per-coordinate ``(n,)``, a per-sample
``(batch, 1)`` or a per-entry ``(batch, n)`` tensor.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

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
        clipped = torch.clamp(z, -theta, theta) if isinstance(theta, Tensor) else z.clamp(-theta, theta)
        return torch.sub(z, clipped, out=clipped) if _fits(clipped, z) else z - clipped
    if isinstance(theta, Tensor):
        return _Shrink.apply(z, theta, None)
    return z - z.clamp(-theta, theta)


class _Shrink(torch.autograd.Function):
    """``z - clamp(z, -theta, theta)`` with the ``mask`` entries passed unchanged, and its gradient.

    One function instead of autograd through ``clamp`` with tensor bounds (which costs a
    quarter of an ALISTA training step in ``where``/``masked_fill``): ``d/dz = 1`` where the
    entry passes (``|z| > theta`` or masked), else 0; ``d/dtheta = -sign(z)`` where it is
    shrunk and non-zero, else 0 (the same conventions as ``clamp`` at ``|z| = theta``).
    """

    @staticmethod
    def forward(ctx, z: Tensor, theta: Tensor, mask: Tensor | None) -> Tensor:
        active = z.abs() > theta
        clipped = torch.clamp(z, -theta, theta)
        if mask is not None:
            clipped = clipped.masked_fill_(mask, 0.0)
            shrunk, passing = active & ~mask, active | mask
        else:
            shrunk, passing = active, active
        ctx.theta_shape = theta.shape
        # Float factors (no bool->float conversion in backward); the sign already negated.
        ctx.save_for_backward(passing.to(z.dtype), torch.sign(z).neg_().mul_(shrunk))
        return z - clipped

    @staticmethod
    def backward(ctx, grad: Tensor):
        passing, neg_signs = ctx.saved_tensors
        grad_z = grad * passing if ctx.needs_input_grad[0] else None
        grad_theta = None
        if ctx.needs_input_grad[1]:
            if len(ctx.theta_shape) == 0:  # a scalar threshold: one fused dot product
                grad_theta = torch.dot(grad.reshape(-1), neg_signs.reshape(-1))
            else:
                grad_theta = (grad * neg_signs).sum_to_size(ctx.theta_shape)
        return grad_z, grad_theta, None


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


def kth_largest(a: Tensor, k: int) -> Tensor:
    """The ``k``-th largest value of each row, shape ``(..., 1)``, without gradient.

    On the CPU, NumPy's introselect (``np.partition``, linear time) is about 7x faster than
    ``torch.topk`` for 10,000 x 500 and k = 61 (benchmarks/bench_forward.py); elsewhere topk.
    """
    n = a.shape[-1]
    if a.device.type == "cpu" and a.dtype in (torch.float32, torch.float64) and not a.requires_grad:
        part = np.partition(a.numpy(), n - k, axis=-1)
        return torch.from_numpy(np.ascontiguousarray(part[..., n - k:n - k + 1]))
    return a.topk(k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)


def support_mask(z: Tensor, keep: int, theta: Tensor | float | None = None) -> Tensor:
    """Entries that bypass the shrinkage: ``|z|`` among the ``keep`` largest per sample.

    With ``theta`` (percentage form) an entry must also satisfy ``|z| > theta``. The
    mask is computed without gradient. ``keep = 0`` selects nothing.
    """
    with torch.no_grad():
        a = z.abs()
        if keep <= 0:
            return torch.zeros_like(z, dtype=torch.bool)
        # The (keep+1)-th largest is the percentile / p_k-th value; 'strictly above' it.
        if keep >= z.shape[-1]:
            return a > theta if theta is not None else torch.ones_like(a, dtype=torch.bool)
        cut = kth_largest(a, keep + 1)
        if theta is not None:  # (a > cut) & (a > theta) in one pass
            cut = torch.maximum(cut, theta) if isinstance(theta, Tensor) else cut.clamp_(min=theta)
        return a > cut


def shrink(z: Tensor, theta: Tensor | float, keep: int = 0, with_theta: bool = True) -> Tensor:
    """Soft threshold with support selection: the masked entries pass unchanged.

    ``keep = 0`` is the plain soft threshold. ``with_theta`` selects the percentage form
    (``|z| > theta`` required) or the count form (no ``theta`` condition).
    """
    if keep <= 0:
        return soft_threshold(z, theta)
    mask = support_mask(z, keep, theta if with_theta else None)
    if torch.is_grad_enabled() and isinstance(theta, Tensor):
        return _Shrink.apply(z, theta, mask)
    clipped = torch.clamp(z, -theta, theta) if isinstance(theta, Tensor) else z.clamp(-theta, theta)
    if not torch.is_grad_enabled() and _fits(clipped, z):
        # Same bits as below (z - 0 = z on the mask); multiplying is faster than masked_fill or where.
        return torch.sub(z, clipped.mul_(~mask), out=clipped)
    return z - clipped.masked_fill(mask, 0.0)


def gradient_step(x: Tensor, y: Tensor, A: Tensor, W: Tensor, gamma: Tensor | float) -> Tensor:
    """``x + gamma W^T (y - A x)`` in row form: ``x + gamma (y - x A^T) W``.

    Without autograd the intermediate buffers are reused (same operations, same bits).
    """
    if torch.is_grad_enabled():
        return x + gamma * ((y - x @ A.T) @ W)
    r = x @ A.T
    r = torch.sub(y, r, out=r) if _fits(r, y) else y - r
    d = r @ W
    if _fits(d, gamma) and _fits(d, x):
        return d.mul_(gamma).add_(x)
    return x + gamma * d


def pgd_step(x: Tensor, y: Tensor, A: Tensor, W: Tensor, gamma: Tensor | float, theta: Tensor | float,
             keep: int = 0, with_theta: bool = True) -> Tensor:
    """One proximal-gradient step ``shrink(x + gamma W^T (y - A x), theta)``.

    ISTA is ``W = A, gamma = 1/L, theta = lam/L``; ALISTA takes the analytic W and learned
    ``(gamma_t, theta_t)``; LISTA-CP a learned ``W_t`` with ``gamma = 1``; TiLISTA a learned
    W with ``gamma = alpha_t``; SLISTA ``W = A``, ``gamma = s_t``, ``theta = lam s_t``;
    NA-ALISTA per-sample ``(batch, 1)`` values.
    """
    return shrink(gradient_step(x, y, A, W, gamma), theta, keep, with_theta)


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
