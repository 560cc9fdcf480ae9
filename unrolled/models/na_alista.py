"""NA-ALISTA: neurally augmented ALISTA (Behrens, Sauder & Jung, ICLR 2021), SPEC §6.

The ALISTA step with per-sample ``(theta, gamma)`` predicted by an LSTM cell:

    r = ||A x - y||_1,  u = ||W^T (A x - y)||_1                       (per sample)
    c, h = LSTMCell([r, u] / s, (h, c))                                (c_0, h_0 learned)
    theta, gamma = softsign(U c)                                       (head "paper", U: 2 x H)
    x <- ss(x + gamma W^T (y - A x), theta)                            (count form by default)

``W`` is ALISTA's analytic matrix (SPEC §4, a fixed buffer). Head ``"reference"`` is the
reference code's ``Linear(H, H) -> ReLU -> Linear(H, 2) -> softplus`` on the cell state.
Output column 0 is ``theta``, column 1 ``gamma``; both have shape ``(batch, 1)``. Softsign
admits ``theta < 0`` (as in the paper); the shrinkage then adds ``|theta|`` to every entry,
which training quickly rules out.

Input normalisation (saved with the model, unlike the reference code, which recomputes it
from the first batch after loading): ``s_j`` is the mean of feature ``j`` at ``x = 0``
(``r = ||y||_1``, ``u = ||W^T y||_1``) over a calibration batch of 1024 samples drawn at
construction by ``problem.sample(1024, torch.Generator().manual_seed(12345), float64)``,
so the inputs of layer 1 are about 1. ``inputs`` selects ``"r"``, ``"u"`` or ``"both"``.

The LSTM and head weights are drawn from ``torch.Generator().manual_seed(init_seed)`` with
PyTorch's default distributions (uniform ``±1/sqrt(fan_in)``, ``±1/sqrt(H)`` for the cell);
``c_0 = h_0 = 0``. The output layer's range is scaled by ``head_scale`` (0.1): with
PyTorch's default range the first steps ``gamma`` reach ±1, which diverges for n/m >= 4
(as ALISTA does with ``gamma = 1``). All of them are shared across layers (trained with layer 1):
``self.layers`` is empty. :meth:`NA_ALISTA.thresholds` is the only learned part of the
step; overriding it with constants gives ALISTA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import functional as F
from .. import kernels
from ..errors import check, choice
from .alista import AnalyticNet
from .base import Config, register

INPUTS = ("both", "r", "u")
HEADS = ("paper", "reference")
CALIBRATION_SIZE = 1024
CALIBRATION_SEED = 12345


@dataclass
class NaAlistaConfig(Config):
    ss: str = "count"
    weights: str = "closed-form"  # closed-form | pgd  (analytic W, SPEC §4)
    H: int = 128
    inputs: str = "both"  # both | r | u
    head: str = "paper"  # paper (softsign(U c)) | reference (MLP + softplus)
    init_seed: int = 0
    head_scale: float = 0.1  # the head's output weights start at this fraction of PyTorch's default range

    def __post_init__(self) -> None:
        super().__post_init__()
        choice(self.weights, ("closed-form", "pgd"), "weights method")
        check(isinstance(self.H, int) and self.H >= 1, f"H={self.H} must be an integer >= 1 (LSTM hidden size)")
        choice(self.inputs, INPUTS, "NA-ALISTA inputs")
        choice(self.head, HEADS, "NA-ALISTA head")


@register("na-alista")
class NA_ALISTA(AnalyticNet):
    """ALISTA step with per-sample ``(theta, gamma)`` from an LSTM cell (shared parameters only)."""

    Config = NaAlistaConfig

    def __init__(self, problem, config: NaAlistaConfig) -> None:
        super().__init__(problem, config)
        H, n_in = config.H, 2 if config.inputs == "both" else 1
        f64 = torch.float64
        with torch.random.fork_rng(devices=[]):  # the default init would consume the global RNG
            self.cell = nn.LSTMCell(n_in, H, dtype=f64)
            if config.head == "paper":
                self.head = nn.Linear(H, 2, bias=False, dtype=f64)
            else:
                self.head = nn.Sequential(nn.Linear(H, H, dtype=f64), nn.ReLU(), nn.Linear(H, 2, dtype=f64),
                                          nn.Softplus())
        self.c0 = nn.Parameter(torch.zeros(H, dtype=f64))
        two_g = torch.ones(4 * H, 1, dtype=f64)
        two_g[2 * H:3 * H] = 2  # tanh(u) = 2 sigmoid(2 u) - 1 (see lstm)
        self.register_buffer("two_g", two_g, persistent=False)
        self.h0 = nn.Parameter(torch.zeros(H, dtype=f64))
        g = torch.Generator().manual_seed(config.init_seed)
        with torch.no_grad():
            for p in self.cell.parameters():
                p.uniform_(-1 / math.sqrt(H), 1 / math.sqrt(H), generator=g)
            linears = [mod for mod in self.head.modules() if isinstance(mod, nn.Linear)]
            for mod in linears:
                bound = 1 / math.sqrt(mod.in_features) * (config.head_scale if mod is linears[-1] else 1.0)
                for p in mod.parameters():
                    p.uniform_(-bound, bound, generator=g)
        self.register_buffer("feature_scale", self.calibrate(problem))

    @torch.no_grad()
    def calibrate(self, problem) -> Tensor:
        """Mean of each input feature at ``x = 0`` over the fixed calibration batch, shape ``(n_in,)``."""
        _, y = problem.sample(CALIBRATION_SIZE, torch.Generator().manual_seed(CALIBRATION_SEED), torch.float64)
        r, d = y, y @ self.W.to(torch.float64)
        return self.features(r, d).mean(0)

    def features(self, r: Tensor, d: Tensor) -> Tensor:
        """``[||r||_1, ||d||_1]`` (or one of them) per sample, ``(batch, n_in)``."""
        return _row_norms(r if self.config.inputs != "u" else None, d if self.config.inputs != "r" else None)

    def begin(self, y: Tensor, ctx: dict) -> Tensor:
        b = y.shape[0]
        ctx["state"] = (self.h0.expand(b, -1), self.c0.expand(b, -1))
        ctx["lstm"] = self.lstm_weights()  # once per forward pass, not per layer
        return super().begin(y, ctx)

    def lstm_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(W_hh, W_ih, b_ih + b_hh)`` of the cell with the g rows doubled (exact; see :meth:`lstm`)."""
        cell, two_g = self.cell, self.two_g
        return cell.weight_hh * two_g, cell.weight_ih * two_g, (cell.bias_ih + cell.bias_hh) * two_g[:, 0]

    def lstm(self, inp: Tensor, state: tuple[Tensor, Tensor],
             weights: tuple[Tensor, Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``self.cell(inp, state)`` (``nn.LSTMCell``; gates in its order i, f, g, o) in fewer passes.

        ``tanh(u) = 2 sigmoid(2 u) - 1``: torch's CPU ``tanh`` is about five to ten times slower
        than ``sigmoid`` (docs/forward-throughput.md), so the g rows of the weights and biases are
        doubled (exactly) and one ``sigmoid`` covers all four gates. One product is accumulated
        into the other and the biases are added once, where ``nn.LSTMCell`` copies each bias into
        its own (batch, 4H) product and then adds the two. The backward is written out
        (:class:`_LstmCell`). Equal to ``nn.LSTMCell`` up to rounding, gradients included (tested
        in float64).
        """
        return _LstmCell.apply(inp, *state, *(self.lstm_weights() if weights is None else weights))

    def thresholds(self, t: int, features: Tensor, ctx: dict) -> tuple[Tensor, Tensor]:
        """``(gamma, theta)``, each ``(batch, 1)``, from the :meth:`features` of the residual ``r = y - A x``
        and ``d = W^T r``, divided by ``feature_scale``."""
        h, c = self.lstm(features, ctx["state"], ctx["lstm"])
        ctx["state"] = (h, c)
        if self.config.head == "paper":
            return _SoftsignHead.apply(c, self.head.weight)
        out = self.head(c)
        return out[:, 1:], out[:, :1]

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        # F.gradient_step(x, y, A, W, gamma) in two parts: its direction d feeds the features too.
        d, features = _Residual.apply(x, y, self.A, self.W, self.config.inputs, self.feature_scale)
        gamma, theta = self.thresholds(t, features, ctx)
        return F.step_shrink(x, gamma, d, theta, self.keep[t - 1], self.with_theta)


class _LstmCell(torch.autograd.Function):
    """``(h, c)`` of :meth:`NA_ALISTA.lstm` from ``(inp, h, c, W_hh, W_ih, bias)``, g rows doubled.

    One autograd node instead of about twenty (the slices of the gates alone cost a
    zero-filled ``(batch, 4H)`` tensor each backward). On the CPU everything after ``h W_hh^T``
    in the forward is one pass (:func:`unrolled.kernels.lstm_forward`: inputs, biases, the
    sigmoids, the cell update), and so is the element-wise part of the backward
    (:func:`unrolled.kernels.lstm_backward`).
    """

    @staticmethod
    def forward(ctx, inp: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, w_ih: Tensor, bias: Tensor):
        H = c.shape[1]
        gates = h @ w_hh.T
        if kernels.usable(gates) and inp.shape[1] <= 2 and all(t.dtype == gates.dtype for t in (inp, w_ih, bias, c)):
            h_new, c_new, s, tau = kernels.lstm_forward(gates, inp, w_ih, bias, c)
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
        if kernels.usable(s) and all(t.dtype == s.dtype for t in (c, tau, dh, dc)):
            dgates, dc_prev = kernels.lstm_backward(s, c, tau, dh, dc)
        else:
            i, f, g2, o = s.chunk(4, dim=1)
            dct = dc + dh * o * (1 - tau * tau)
            dgates = torch.cat([dct * (g2 * 2 - 1) * i * (1 - i), dct * c * f * (1 - f),
                                dct * i * 2 * g2 * (1 - g2), dh * tau * o * (1 - o)], dim=1)
            dc_prev = dct * f
        need = ctx.needs_input_grad
        # The products with the few input columns are taken with those columns as rows: a
        # (batch x 4H) @ (4H x 2) product took 4x, and its transposed form 7x, as long here.
        return ((w_ih.T.contiguous() @ dgates.T).T if need[0] else None, dgates @ w_hh if need[1] else None,
                dc_prev if need[2] else None, dgates.T @ h if need[3] else None,
                (inp.T @ dgates).T if need[4] else None, dgates.sum(0) if need[5] else None)


def _row_norms(r: Tensor | None, d: Tensor | None) -> Tensor:
    """The row l1 norms of those of ``r`` and ``d`` given, ``(batch, count)`` (``abs().sum(-1)``:
    ``vector_norm`` is six times slower here)."""
    return torch.stack([v.abs().sum(-1) for v in (r, d) if v is not None], dim=1)


class _Residual(torch.autograd.Function):
    """``(d, features)`` from ``(x, y, A, W, inputs, scale)``: ``r = y - x A^T``, ``d = r W`` and the
    :meth:`NA_ALISTA.features` of ``(r, d)`` divided by ``scale`` (a buffer).

    One node whose backward takes the gradients of ``d`` and of the features together: with
    ``w`` the features' gradients, ``g_d = grad_d + w_u sign(d)``, ``g_r = g_d W^T + w_r sign(r)``,
    ``dx = -g_r A``, ``dy = g_r``; each ``g + w sign(v)`` is one pass
    (:func:`unrolled.kernels.add_scaled_sign`, which also takes the minus sign), where autograd
    took about eight passes over ``(batch, n)`` between these products and the features' nodes.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, A: Tensor, W: Tensor, inputs: str, scale: Tensor) -> tuple[Tensor, Tensor]:
        check(not (A.requires_grad or W.requires_grad), "A and W are fixed buffers in NA-ALISTA")
        r = torch.addmm(y, x, A.T, alpha=-1)
        d = r @ W
        ctx.use_r, ctx.use_d = inputs != "u", inputs != "r"
        ctx.save_for_backward(A, W, r, d, scale)
        return d, _row_norms(r if ctx.use_r else None, d if ctx.use_d else None) / scale

    @staticmethod
    def backward(ctx, gd: Tensor, gf: Tensor):
        A, W, r, d, scale = ctx.saved_tensors
        gf = gf / scale
        if ctx.use_d:  # -g_d first: dx = (-g_r) A is then one product
            neg_g_r = _add_scaled_sign(gd, d, gf[:, -1], -1.0) @ W.T
            if ctx.use_r:
                neg_g_r = _add_scaled_sign(neg_g_r, r, gf[:, 0].neg(), 1.0)
        else:
            neg_g_r = _add_scaled_sign(gd @ W.T, r, gf[:, 0], -1.0)
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


def _add_scaled_sign(g: Tensor, v: Tensor, w: Tensor, scale: float) -> Tensor:
    """``scale (g + w sign(v))`` with ``w`` per sample ``(batch,)``: the gradient of ``|v|.sum(-1)`` added."""
    if kernels.usable(v) and g.dtype == v.dtype == w.dtype:
        return kernels.add_scaled_sign(g, v, w, scale)
    return torch.sign(v).mul_(w[:, None]).add_(g).mul_(scale)
