"""NA-ALISTA: neurally augmented ALISTA (Behrens, Sauder & Jung, ICLR 2021), docs/spec.md §6.

The ALISTA step with per-sample ``(theta, gamma)`` predicted by an LSTM cell:

    r = ||A x - y||_1,  u = ||W^T (A x - y)||_1                       (per sample)
    c, h = LSTMCell([r, u] / s, (h, c))                                (c_0, h_0 learned)
    theta, gamma = softsign(U c)                                       (head "paper", U: 2 x H)
    x <- ss(x + gamma W^T (y - A x), theta)                            (count form by default)

``W`` is ALISTA's analytic matrix (docs/spec.md §4, a fixed buffer). Head ``"reference"`` is the
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

Bounded steps (``bound=True``, the default; issue 15): the predicted ``gamma`` is clamped to
:func:`~unrolled.models.alista.step_bound`, ``2 / rho_S``, the edge of the stable range on
supports of the expected size (never below ``1.9 / rho(W^T A)``; docs/spec.md §11.7), so that no
atypical input gets a step that blows its estimate up (the unbounded head gave +98.6 dB
aggregate at n = 2000). On the demo's 250x500 problem the bound is 1.216 and the trained
unbounded head's steps stay below it (0.76 at layer 1 to 1.18 at layer 16 on the 10,000 test
vectors), so it costs nothing there; the earlier clamp ``1.9 / rho = 0.886`` cost 1.4 dB.
``bound=False`` is the reference code's unbounded head (the repro harness pins it). ``guard=True``
(the default) also caps the step of a sample whose iterate has more than ``s`` non-zeros
(:class:`~unrolled.models.alista.StepGuard`): the bound alone did not stop the divergence at n = 2000.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import ops
from ..analytic import METHODS
from ..errors import check, choice
from ..ops import Selection
from ..problem import check_memory
from .alista import AnalyticNet, step_bound
from .base import Config, Product, register, selection

INPUTS = ("both", "r", "u")
HEADS = ("paper", "reference")
CALIBRATION_SIZE = 1024
CALIBRATION_SEED = 12345


@dataclass
class NaAlistaConfig(Config):
    ss: Selection = selection("count")
    weights: str = "closed-form"  # closed-form | pgd  (analytic W, docs/spec.md §4)
    H: int = 128
    inputs: str = "both"  # both | r | u
    head: str = "paper"  # paper (softsign(U c)) | reference (MLP + softplus)
    init_seed: int = 0
    head_scale: float = 0.1  # the head's output weights start at this fraction of PyTorch's default range
    bound: bool = True  # predicted steps clamped to step_bound (2 / rho_S); False: the reference code's range
    guard: bool = True  # per-sample steps capped by the sample's support size (alista.StepGuard); False: as the paper

    def __post_init__(self) -> None:
        super().__post_init__()
        choice(self.weights, METHODS, "weights method")
        check(isinstance(self.H, int) and self.H >= 1, f"H={self.H} must be an integer >= 1 (LSTM hidden size)")
        choice(self.inputs, INPUTS, "NA-ALISTA inputs")
        choice(self.head, HEADS, "NA-ALISTA head")


@register("na-alista")
class NA_ALISTA(AnalyticNet):
    """ALISTA step with per-sample ``(theta, gamma)`` from an LSTM cell (shared parameters only)."""

    Config = NaAlistaConfig
    reduces_to = "the ALISTA iteration with per-sample (theta, gamma) from torch's nn.LSTMCell and the head"

    def __init__(self, problem, config: NaAlistaConfig) -> None:
        super().__init__(problem, config)
        H, n_in = config.H, 2 if config.inputs == "both" else 1
        # the LSTM and the head hold about 5 H^2 float64 numbers; training keeps 4 copies (value, gradient, Adam's two)
        check_memory(4 * 8 * (4 * H * (H + n_in + 2) + H * (H + 3)), f"H={H:,}", "the LSTM's weights")
        f64 = torch.float64
        with torch.random.fork_rng(devices=[]):  # the default init would consume the global RNG
            self.cell = nn.LSTMCell(n_in, H, dtype=f64)
            if config.head == "paper":
                self.head = nn.Linear(H, 2, bias=False, dtype=f64)
            else:
                self.head = nn.Sequential(nn.Linear(H, H, dtype=f64), nn.ReLU(), nn.Linear(H, 2, dtype=f64),
                                          nn.Softplus())
        self.c0 = nn.Parameter(torch.zeros(H, dtype=f64))
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
        self.step_max = step_bound(self.W, self.A, problem.spec.sparsity) if config.bound else None

    def bounded(self, gamma: Tensor) -> Tensor:
        """A predicted step inside the stable range (``bound``): one atypical input cannot blow an estimate up."""
        return gamma if self.step_max is None else gamma.clamp(max=self.step_max)

    @torch.no_grad()
    def calibrate(self, problem) -> Tensor:
        """Mean of each input feature at ``x = 0`` over the fixed calibration batch, shape ``(n_in,)``."""
        _, y = problem.sample(CALIBRATION_SIZE, torch.Generator().manual_seed(CALIBRATION_SEED), torch.float64)
        with ops.backend("reference"):
            _, features = ops.residual_features(torch.zeros(len(y), self.n, dtype=y.dtype), y, self.A, self.W,
                                                self.config.inputs, torch.ones((), dtype=y.dtype))
        return features.mean(0)

    def begin(self, y: Tensor, ctx: dict) -> Tensor:
        b, cell = y.shape[0], self.cell
        ctx["state"] = (self.h0.expand(b, -1), self.c0.expand(b, -1))
        ctx["lstm"] = ops.lstm_weights(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)  # once per pass
        return super().begin(y, ctx)

    def thresholds(self, t: int, features: Tensor, ctx: dict) -> tuple[Tensor, Tensor]:
        """``(gamma, theta)``, each ``(batch, 1)``, from the features of the residual ``r = y - A x`` and
        ``d = W^T r`` (:func:`~unrolled.ops.residual_features`, divided by ``feature_scale``)."""
        h, c = ops.lstm_cell(features, *ctx["state"], ctx["lstm"])
        ctx["state"] = (h, c)
        if self.config.head == "paper":
            gamma, theta = ops.softsign_head(c, self.head.weight)
            return self.bounded(gamma), theta
        out = self.head(c)
        return self.bounded(out[:, 1:]), out[:, :1]

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        d, features = ops.residual_features(x, y, self.A, self.W, self.config.inputs, self.feature_scale)
        gamma, theta = self.thresholds(t, features, ctx)
        return ops.step_shrink(x, self.guarded(gamma, x), d, theta, self.cuts[t - 1])

    def products(self) -> list[Product]:
        c, K = self.config, self.K
        n_in = 2 if c.inputs == "both" else 1
        head = [Product(K, c.H, 2, True)] + ([Product(K, c.H, c.H, True)] if c.head == "reference" else [])
        return [Product(2 * K, self.m, self.n), Product(K, n_in + c.H, 4 * c.H, True), *head]

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        b = y.shape[0]
        h, c = self.h0.expand(b, -1), self.c0.expand(b, -1)
        x, outs = y.new_zeros(b, self.n), []
        outs.append(x)
        for t in range(1, self.K + 1):
            r = y - x @ self.A.T
            features = torch.stack([v.abs().sum(-1) for v, use in ((r, self.config.inputs != "u"),
                                                                    (r @ self.W, self.config.inputs != "r")) if use], 1)
            h, c = self.cell(features / self.feature_scale, (h, c))
            out = self.head(c)
            gamma, theta = (nn.functional.softsign(out) if self.config.head == "paper" else out).split(1, dim=1)[::-1]
            gamma = self.guarded(self.bounded(gamma), x)
            x = ops.reference.pgd_step(x, y, self.A, self.W, gamma, theta, self.cuts[t - 1])
            outs.append(x)
        return outs
