"""Convolutional ISTA/FISTA, LISTA-CP, TiLISTA and ALISTA (Liu et al., ICLR 2019, the ``denoise`` task).

The same update rules as their dense families, written against an operator: on a
:class:`~unrolled.images.conv.ConvDenoiseProblem` ``D`` is the convolutional synthesis of
:mod:`unrolled.images.conv` (filters ``F: (M, h, w)`` in the ``A`` buffer), the iterate is the
feature maps ``z`` and each layer's output is the reconstruction ``D z`` (the denoised image,
so the network maps ``y: (batch, H * W)`` to ``x: (batch, H * W)``); on any other problem ``D`` is
the matrix ``A`` and the output is ``z`` itself, so these models pass the registry-wide
contract tests and there equal ISTA / LISTA-CP / ALISTA with the same initialisation.

* ``conv-ista``, ``conv-fista``: ``z <- soft(z + D^T (y - D z) / L, lam / L)`` (at FISTA's momentum point).
* ``conv-lista-cp``: ``z <- soft(z + W_t^T (y - D z), theta_t)``, kernels ``W_t`` (shape of ``F``) per
  layer, ``W_t = F / L``, ``theta_t = lam / L`` at initialisation: conv ISTA.
* ``conv-tilista``: one shared ``W`` and per layer ``alpha_t``, ``theta_t``; at initialisation conv ISTA.
* ``conv-alista``: the analytic convolutional ``W`` (:func:`unrolled.images.conv.closed_form`; the dense
  analytic W on a matrix problem), per layer ``gamma_t``, ``theta_t``; initial ``gamma = gamma0``
  (default ``1 / L``; the reference's ``conv_alpha`` 0.1) and ``theta = lam * gamma``.

``L`` is ``1.001 ||D||^2``. No support selection (the reference's conv models use plain soft thresholds).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import ops, solvers
from ..analytic import analytic_weights
from ..errors import check
from ..images import conv as C
from .base import Config, Product, UnrolledNet, layer, register


@dataclass
class ConvConfig(Config):
    lam: float = 0.1  # the reference's --lam 0.1; initial theta = lam / L

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.ss.mode == "none", "the convolutional models use plain soft thresholds: ss must be 'none'")


class ConvNet(UnrolledNet):
    """Base: the operator (convolution or matrix), iterates on codes, outputs ``D z`` on a conv problem."""

    Config = ConvConfig
    reduces_to = "ISTA with step 1/(1.001 L) on the operator (conv ISTA on a convolutional problem)"

    def __init__(self, problem, config: ConvConfig) -> None:
        super().__init__(problem, config)
        self.shape = getattr(problem, "shape", None) if isinstance(problem, C.ConvDenoiseProblem) else None

    @property
    def is_conv(self) -> bool:
        return self.shape is not None

    def synth(self, z: Tensor) -> Tensor:
        return C.synth(z, self.A, self.shape) if self.is_conv else z @ self.A.T

    def adjoint(self, r: Tensor, kernels: Tensor) -> Tensor:
        return C.adjoint(r, kernels, self.shape) if self.is_conv else r @ kernels

    def code_size(self) -> int:
        if not self.is_conv:
            return self.n
        M, hh, ww = C.code_shape(self.A, self.shape.height, self.shape.width)
        return M * hh * ww

    def output(self, z: Tensor) -> Tensor:
        return self.synth(z) if self.is_conv else z

    def grad_step(self, z: Tensor, y: Tensor, kernels: Tensor, gamma: Tensor | float) -> Tensor:
        return z + gamma * self.adjoint(y - self.synth(z), kernels)

    def forward(self, y: Tensor, all_layers: bool = False, depth: int | None = None) -> Tensor | list[Tensor]:
        """``y: (batch, m)`` -> ``x_K: (batch, n)``, or ``[x_0, ..., x_depth]`` with ``all_layers`` (in one block:
        the codes of a convolutional problem are larger than its images)."""
        check(y.dim() == 2 and y.shape[1] == self.m, f"y must have shape (batch, {self.m}), got {tuple(y.shape)}")
        depth = self.K if depth is None else depth
        check(1 <= depth <= self.K, f"depth={depth} must be in 1..{self.K}")
        outs = list(self._run(y, depth))
        return outs if all_layers else outs[-1]

    def iterates(self, y: Tensor, depth: int | None = None):
        """``x_0, ..., x_depth`` one at a time."""
        yield from self.forward(y, True, depth)

    def _run(self, y: Tensor, depth: int):
        ctx: dict = {}
        z = y.new_zeros(y.shape[0], self.code_size())
        ctx["z_prev"] = z
        yield self.output(z)
        for t in range(1, depth + 1):
            z = self.step(t, z, y, ctx)
            yield self.output(z)

    def denoise(self, images: Tensor) -> Tensor:
        """Run the network on images ``(batch, H, W)`` of any size (a conv problem's model only)."""
        check(self.is_conv, "denoise needs a model built on a convolutional problem")
        keep = self.shape
        try:
            self.shape = C.ConvShape(images.shape[1], images.shape[2])
            with torch.no_grad():
                *_, out = self._run(images.reshape(images.shape[0], -1), self.K)
                return out.reshape(images.shape)
        finally:
            self.shape = keep

    def products(self) -> list[Product]:
        if not self.is_conv:
            return [Product(2 * self.K, self.m, self.n)]
        M, h, w = self.A.shape
        return [Product(2 * self.K, h * w, M * self.m)]  # each convolution: M filters of h*w taps per pixel

    def _twin(self, y: Tensor, kernels: Tensor, gamma: float, theta: float, momentum: bool = False) -> list[Tensor]:
        """The plain reference iteration (SciPy convolutions, one image at a time) on a conv problem."""
        F, K = self.A.double().numpy(), kernels.detach().double().numpy()
        H, W = self.shape.height, self.shape.width
        runs = [C.proximal_gradient_ref(F, K, yi.double().numpy().reshape(H, W), gamma, theta, self.K, momentum)
                for yi in y]
        return [torch.stack([torch.from_numpy(r[t].reshape(-1)) for r in runs]).to(y.dtype) for t in range(self.K + 1)]

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        lam = self.config.lam
        if self.is_conv:
            return self._twin(y, self.A, 1 / self.scale, lam / self.scale)
        return list(solvers.ista(self.A, y, lam, self.K, L=self.scale))


@register("conv-ista")
class ConvISTA(ConvNet):
    """K conv ISTA iterations with fixed ``lam``; no trainable parameter."""

    def step(self, t: int, z: Tensor, y: Tensor, ctx: dict) -> Tensor:
        return ops.shrink(self.grad_step(z, y, self.A, 1 / self.scale), self.config.lam / self.scale)


@register("conv-fista")
class ConvFISTA(ConvNet):
    """K conv FISTA iterations with fixed ``lam``; no trainable parameter."""

    reduces_to = "FISTA with step 1/(1.001 L) on the operator (conv FISTA on a convolutional problem)"

    def step(self, t: int, z: Tensor, y: Tensor, ctx: dict) -> Tensor:
        ctx["t"], beta = ops.fista_momentum(ctx.get("t", 1.0))
        v = z + beta * (z - ctx["z_prev"])
        ctx["z_prev"] = z
        return ops.shrink(self.grad_step(v, y, self.A, 1 / self.scale), self.config.lam / self.scale)

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        lam = self.config.lam
        if self.is_conv:
            return self._twin(y, self.A, 1 / self.scale, lam / self.scale, momentum=True)
        return list(solvers.fista(self.A, y, lam, self.K, L=self.scale))


@register("conv-lista-cp")
class ConvLISTA_CP(ConvNet):
    """``z <- soft(z + W_t^T (y - D z), theta_t)``; learned kernels ``W_t`` and ``theta_t`` per layer."""

    def __init__(self, problem, config: ConvConfig) -> None:
        super().__init__(problem, config)
        self.layers = nn.ModuleList(layer(W=self.A / self.scale, theta=config.lam / self.scale)
                                    for _ in range(self.K))

    def step(self, t: int, z: Tensor, y: Tensor, ctx: dict) -> Tensor:
        p = self.layers[t - 1]
        return ops.shrink(self.grad_step(z, y, p.W, 1.0), p.theta)


@register("conv-tilista")
class ConvTiLISTA(ConvNet):
    """``z <- soft(z + alpha_t W^T (y - D z), theta_t)``; one learned ``W`` (shared), ``alpha_t``, ``theta_t``."""

    def __init__(self, problem, config: ConvConfig) -> None:
        super().__init__(problem, config)
        self.W = nn.Parameter(self.A / self.scale)
        self.layers = nn.ModuleList(layer(alpha=1.0, theta=config.lam / self.scale) for _ in range(self.K))

    def step(self, t: int, z: Tensor, y: Tensor, ctx: dict) -> Tensor:
        p = self.layers[t - 1]
        return ops.shrink(self.grad_step(z, y, self.W, p.alpha), p.theta)


@dataclass
class ConvAlistaConfig(ConvConfig):
    gamma0: float | None = None  # None: 1 / (1.001 L)

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.gamma0 is None or self.gamma0 > 0, f"gamma0={self.gamma0} must be positive")


@register("conv-alista")
class ConvALISTA(ConvNet):
    """``z <- soft(z + gamma_t W^T (y - D z), theta_t)`` with the analytic W; 2K learned scalars."""

    Config = ConvAlistaConfig
    reduces_to = "the proximal-gradient iteration with the analytic W, gamma = gamma0, theta = lam * gamma0"

    def __init__(self, problem, config: ConvAlistaConfig) -> None:
        super().__init__(problem, config)
        if self.is_conv:
            W = torch.from_numpy(C.closed_form(self.A.numpy())).to(self.A.dtype)
        else:
            W = analytic_weights(self.A).W
        self.register_buffer("W", W.clone())
        self.gamma0 = 1 / self.scale if config.gamma0 is None else config.gamma0
        self.layers = nn.ModuleList(layer(gamma=self.gamma0, theta=config.lam * self.gamma0) for _ in range(self.K))

    def step(self, t: int, z: Tensor, y: Tensor, ctx: dict) -> Tensor:
        p = self.layers[t - 1]
        return ops.shrink(self.grad_step(z, y, self.W, p.gamma), p.theta)

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        g, th = self.gamma0, self.config.lam * self.gamma0
        if self.is_conv:
            return self._twin(y, self.W, g, th)
        return list(solvers.proximal_gradient(self.A, y, self.W, g, th, self.K))
