"""The definition of every update rule, in plain PyTorch autograd (docs/spec.md §5, §6).

Each function is written as the papers write it, with no buffer reuse and no hand-written
gradient; the fast paths (:mod:`unrolled.ops.fast`, :mod:`unrolled.ops.kernels`) are tested
against these in float64 (tests/test_ops.py, tests/test_oracle.py). Graphs of these exports
with ``torch.export`` and ONNX.

Shapes: ``x: (batch, n)``, ``y: (batch, m)``, ``A, W: (m, n)``, rows as samples, so
``A x`` is ``x @ A.T`` and ``W^T r`` is ``r @ W``. Thresholds and step sizes broadcast
against ``(batch, n)``: a scalar, a per-coordinate ``(n,)``, a per-sample ``(batch, 1)`` or a
per-entry ``(batch, n)`` tensor.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .selection import Cut


def soft_threshold(z: Tensor, theta: Tensor | float) -> Tensor:
    """``eta_theta(z) = z - clamp(z, -theta, theta)``, which is ``sign(z) max(|z| - theta, 0)`` for ``theta >= 0``.

    ``clamp`` is ``min(max(z, -theta), theta)``: for a negative ``theta`` (a softsign head may
    predict one) every entry moves by ``-theta``.
    """
    if not isinstance(theta, Tensor):
        theta = torch.tensor(theta, dtype=z.dtype, device=z.device)
    return z - torch.minimum(torch.maximum(z, -theta), theta)


def support_mask(z: Tensor, theta: Tensor | float, cut: Cut) -> Tensor:
    """The entries that bypass the shrinkage (boolean, no gradient).

    ``|z_i|`` strictly above the ``(keep + 1)``-th largest ``|z|`` of its sample, and with
    ``cut.above_theta`` also above its threshold.
    """
    with torch.no_grad():
        a = z.abs()
        if cut.keep >= z.shape[-1]:
            mask = torch.ones_like(a, dtype=torch.bool)
        else:
            level = torch.topk(a, cut.keep + 1, dim=-1).values[..., -1:]
            mask = a > level
        if cut.above_theta:
            mask = mask & (a > theta)
        return mask


def shrink(z: Tensor, theta: Tensor | float, cut: Cut | None = None) -> Tensor:
    """Soft threshold with support selection: the entries of :func:`support_mask` pass unchanged."""
    out = soft_threshold(z, theta)
    if cut is None:
        return out
    return torch.where(support_mask(z, theta, cut), z, out)


def gradient_step(x: Tensor, y: Tensor, A: Tensor, W: Tensor, gamma: Tensor | float,
                  base: Tensor | None = None) -> Tensor:
    """``x + gamma W^T (y - A x)``; ``base`` replaces the leading ``x`` (AGLISTA's gated residual)."""
    return (x if base is None else base) + gamma * ((y - x @ A.T) @ W)


def adaptive_threshold(x: Tensor, theta: Tensor | float, eps: float) -> Tensor:
    """ALISTA-AT's per-entry threshold ``theta / (|x| / eps + 1)`` of the current iterate."""
    return theta / (x.abs() / eps + 1)


def pgd_step(x: Tensor, y: Tensor, A: Tensor, W: Tensor, gamma: Tensor | float, theta: Tensor | float,
             cut: Cut | None = None, eps: float | None = None) -> Tensor:
    """One proximal-gradient step ``shrink(x + gamma W^T (y - A x), theta)``.

    ISTA is ``W = A, gamma = 1/L, theta = lam/L``; ALISTA the analytic W with learned
    ``(gamma_t, theta_t)``; TiLISTA a learned W with ``gamma = alpha_t``; SLISTA ``W = A``,
    ``gamma = s_t``, ``theta = lam s_t``; NA-ALISTA per-sample ``(batch, 1)`` values. With
    ``eps`` the threshold is ALISTA-AT's :func:`adaptive_threshold`.
    """
    if eps is not None:
        theta = adaptive_threshold(x, theta, eps)
    return shrink(gradient_step(x, y, A, W, gamma), theta, cut)


def step_shrink(x: Tensor, gamma: Tensor, d: Tensor, theta: Tensor, cut: Cut | None = None) -> Tensor:
    """``shrink(x + gamma d, theta)``: a gradient step whose direction ``d`` was computed outside."""
    return shrink(x + gamma * d, theta, cut)


def gain_gate(x: Tensor, c: Tensor, v: Tensor) -> Tensor:
    """AGLISTA's gain ``g = 1 + c exp(-v |x|)`` applied to ``x`` (``c = theta_{t-1} nu_t``)."""
    return x * (1 + c * torch.exp(-v * x.abs()))


def overshoot(x_new: Tensor, x: Tensor, a: Tensor, eps: float = 0.01) -> Tensor:
    """AGLISTA's overshoot ``o x_new + (1 - o) x`` with ``o = 1 + a / (|x_new - x| + eps)``."""
    o = 1 + a / ((x_new - x).abs() + eps)
    return o * x_new + (1 - o) * x


def gated_step(x: Tensor, y: Tensor, A: Tensor, W: Tensor, c: Tensor, v: Tensor, gamma: Tensor, theta: Tensor,
               a: Tensor, cut: Cut | None = None, eps: float = 0.01) -> Tensor:
    """AGLISTA's layer: ``x~ = shrink(x + gamma W^T (y - A (g x)), theta)``, then the overshoot of ``x~`` from ``x``."""
    z = gradient_step(gain_gate(x, c, v), y, A, W, gamma, base=x)
    return overshoot(shrink(z, theta, cut), x, a, eps)


def lstm_weights(w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> tuple[Tensor, ...]:
    """The parameters of an ``nn.LSTMCell`` as :func:`lstm_cell` takes them (made once per forward pass)."""
    return w_ih, w_hh, b_ih, b_hh


def lstm_cell(inp: Tensor, h: Tensor, c: Tensor, weights: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """``(h', c')`` of ``nn.LSTMCell`` with ``weights = (W_ih, W_hh, b_ih, b_hh)`` (gates in its order i, f, g, o).

    ``i, f, o = sigmoid(.)``, ``g = tanh(.)`` of ``inp W_ih^T + b_ih + h W_hh^T + b_hh``;
    ``c' = f c + i g``, ``h' = o tanh(c')``.
    """
    w_ih, w_hh, b_ih, b_hh = weights
    gates = inp @ w_ih.T + b_ih + h @ w_hh.T + b_hh
    i, f, g, o = gates.chunk(4, dim=1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_new), c_new


def residual_features(x: Tensor, y: Tensor, A: Tensor, W: Tensor, inputs: str,
                      scale: Tensor) -> tuple[Tensor, Tensor]:
    """NA-ALISTA's ``(d, features)``: ``r = y - A x``, ``d = W^T r`` and ``[||r||_1, ||d||_1] / scale``.

    ``inputs`` keeps both features (``"both"``) or one (``"r"``, ``"u"`` for ``d``); shape ``(batch, count)``.
    """
    r = y - x @ A.T
    d = r @ W
    norms = [v.abs().sum(-1) for v, use in ((r, inputs != "u"), (d, inputs != "r")) if use]
    return d, torch.stack(norms, dim=1) / scale


def softsign_head(c: Tensor, U: Tensor) -> tuple[Tensor, Tensor]:
    """NA-ALISTA's head (paper): ``softsign(U c)``, column 1 is ``gamma``, column 0 ``theta``, each ``(batch, 1)``."""
    out = torch.nn.functional.softsign(c @ U.T)
    return out[:, 1:], out[:, :1]


def bg_denoise(r: Tensor, tau2: Tensor, eps: Tensor | float, var: Tensor | float) -> tuple[Tensor, Tensor]:
    """MMSE estimate of ``x`` from ``r = x + N(0, tau2)`` under ``x ~ (1 - eps) delta_0 + eps N(0, var)``,
    and the per-sample mean of its derivative in ``r`` (the Onsager term of AMP).

    ``E[x | r] = pi(r) c r`` with ``c = var / (var + tau2)`` and ``pi = sigmoid(llr)`` the
    posterior probability that the entry is non-zero,
    ``llr = log(eps / (1 - eps)) + 1/2 log(1 - c) + 1/2 c r^2 / tau2``;
    ``d/dr = c pi (1 + (1 - pi) c r^2 / tau2)``.
    """
    c = var / (var + tau2)
    q = (c / tau2) * r * r  # shared by the log-likelihood ratio and the derivative
    prior = torch.log(eps / (1 - eps)) if isinstance(eps, Tensor) else math.log(eps / (1 - eps))
    # log(1 - c) as -log1p(var / tau2): 1 - c rounds to 0 once tau2 < eps(dtype) var, and log 0 = -inf
    # zeroed every entry of a converged noiseless AMP, which then restarted from x = 0 (issue 15).
    pi = torch.sigmoid(prior - 0.5 * torch.log1p(var / tau2) + 0.5 * q)
    x = pi * c * r
    dx = (c * pi * (1 + (1 - pi) * q)).mean(-1, keepdim=True)
    return x, dx


def soft_denoise(r: Tensor, tau2: Tensor, alpha: Tensor | float) -> tuple[Tensor, Tensor]:
    """``eta_{alpha tau}(r)`` (AMP's soft threshold at ``alpha`` noise deviations) and the mean of its derivative."""
    theta = alpha * tau2.sqrt()
    return soft_threshold(r, theta), (r.abs() > theta).to(r.dtype).mean(-1, keepdim=True)


def amp_floor(y: Tensor, n: int) -> Tensor:
    """The least effective noise variance AMP uses, ``max(n eps^2 ||y||^2 / m, eps^2)`` per sample,
    ``(batch, 1)``, with ``eps = eps(dtype)`` and ``n`` the signal length.

    It is the rounding level of the residual: each entry of ``y - A x`` sums ``n`` products rounded
    at ``eps``, so a smaller ``||v||^2 / m`` measures rounding, not the error of ``x`` (at ``n = 500``
    286 dB below ``||y||^2 / m`` in float64, 111 dB in float32; a noisy problem never gets there).
    The absolute ``eps^2`` keeps ``y = 0`` finite.
    """
    eps2 = torch.finfo(y.dtype).eps ** 2
    return ((n * eps2 / y.shape[-1]) * (y * y).sum(-1, keepdim=True)).clamp_min(eps2)


def amp_variance(v: Tensor, floor: Tensor, gain: Tensor | float = 1.0) -> Tensor:
    """AMP's effective noise variance ``tau2 = max(gain ||v||^2 / m, floor)`` per sample, ``(batch, 1)``
    (``floor`` from :func:`amp_floor`)."""
    return torch.maximum((gain / v.shape[-1]) * (v * v).sum(-1, keepdim=True), floor)


def amp_step(x: Tensor, v: Tensor, onsager: Tensor | float, y: Tensor, A: Tensor, B: Tensor,
             denoise, gain: Tensor | float = 1.0, damping: float = 1.0,
             floor: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """One (learned, damped) AMP iteration; returns ``(x, v, onsager)`` for the next one.

    ``v = y - A x + onsager v_prev`` (the residual with its Onsager correction),
    ``tau2 = gain ||v||^2 / m`` (the effective noise variance, at least ``floor``: :func:`amp_variance`;
    ``None``: :func:`amp_floor` of ``y``, which a caller may compute once per ``y``), ``r = x + B^T v``
    and ``x <- denoise(r, tau2)``; the next correction is ``(n / m) mean(denoise')``. AMP is
    ``B = A`` and ``gain = 1`` (Donoho, Maleki & Montanari 2009); LAMP learns them
    (Borgerding, Schniter & Rangan 2017).

    ``damping = beta < 1`` damps the two messages, the residual and the estimate, as damped GAMP does
    (Rangan, Schniter, Fletcher & Sarkar, "On the convergence of approximate message passing with
    arbitrary matrices", IEEE TIT 2019; Vila, Schniter, Rangan, Krzakala & Zdeborová, ICASSP 2015):
    ``v <- beta v + (1 - beta) v_prev`` before ``tau2`` and ``r`` are formed, and
    ``x <- beta denoise(r) + (1 - beta) x_prev``; the Onsager coefficient is not damped.
    ``beta = 1`` runs the undamped step exactly; AMP damps from its second iteration (the first
    residual, ``y``, has no previous value).
    """
    m, n = A.shape
    v_new = y - x @ A.T + onsager * v
    if damping != 1.0:
        v_new = damping * v_new + (1 - damping) * v
    tau2 = amp_variance(v_new, amp_floor(y, n) if floor is None else floor, gain)
    x_new, dx = denoise(x + v_new @ B, tau2)
    if damping != 1.0:
        x_new = damping * x_new + (1 - damping) * x
    return x_new, v_new, (n / m) * dx


def fista_momentum(t: float) -> tuple[float, float]:
    """``t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2`` and the extrapolation weight ``(t_k - 1) / t_{k+1}``."""
    t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
    return t_next, (t - 1) / t_next


def lipschitz(A: Tensor) -> float:
    """``L = ||A||_2^2``, the Lipschitz constant of the gradient of ``1/2 ||y - A x||^2``."""
    return float(torch.linalg.matrix_norm(A.to(torch.float64), ord=2) ** 2)


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
