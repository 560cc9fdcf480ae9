"""Convolutional sparse coding: the operator, its reference, the analytic convolutional W and the
denoising problem (the ALISTA repository's ``denoise`` task).

Filters ``F: (M, h, w)``. An image ``(H, W)`` is synthesised from feature maps
``z: (M, H + h - 1, W + w - 1)`` (the reference's sizes) by ``D z = sum_m valid_corr(z_m, F_m)``;
its adjoint is ``D^T r = (full_conv(r, F_m))_m``, and ``W^T r`` is the same with kernels ``W``.
Unlike the reference, which pads the residual by reflection before ``W^T``, ``W^T`` here is the
exact adjoint (zero padding), so conv ISTA is the proximal-gradient method of the convolutional
Lasso and conv LISTA-CP equals it at initialisation.

Analytic W (ALISTA, Liu et al. 2019, Appendix E.2 and ``matlabs/CalculateW_conv.m``):
``min_W sum_{j, m} ||corr(W_j, F_m)||^2`` over all shifts, subject to ``<W_j, F_j> = 1`` (the
convolutional ``diag(W^T D) = 1``: every interior column pair has inner product 1). The
objective separates per filter: ``sum_m ||corr(w, F_m)||^2 = w^T Q w`` with the
``(h w) x (h w)`` Gram ``Q[p, q] = R(q - p)``, ``R`` the summed autocorrelation of the filters,
which is the inverse FFT of ``S(omega) = sum_m |F_m^(omega)|^2`` on the ``(2h - 1) x (2w - 1)``
grid (no aliasing: Theorem 3 of the paper). Closed form: ``W_j = Q^-1 F_j / (F_j^T Q^-1 F_j)``.
:func:`pgd` is the reference's projected gradient in the Fourier domain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.signal
import torch
import torch.nn.functional as TF

from ..errors import check
from ..problem import Problem, ProblemSpec


def code_shape(filters: np.ndarray | torch.Tensor, height: int, width: int) -> tuple[int, int, int]:
    M, h, w = filters.shape
    return M, height + h - 1, width + w - 1


# -- the plain reference (NumPy/SciPy): the definition the torch operator is tested against -------


def synth_ref(z: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """``D z`` for one set of maps ``z: (M, H + h - 1, W + w - 1)`` -> ``(H, W)``."""
    return sum(scipy.signal.correlate2d(z[m], filters[m], mode="valid") for m in range(len(filters)))


def adjoint_ref(r: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """``K^T r`` for one image ``r: (H, W)`` -> ``(M, H + h - 1, W + w - 1)``."""
    return np.stack([scipy.signal.convolve2d(r, k, mode="full") for k in kernels])


def proximal_gradient_ref(filters: np.ndarray, kernels: np.ndarray, y: np.ndarray, gamma: float, theta: float,
                          iters: int, momentum: bool = False) -> list[np.ndarray]:
    """``z <- soft(z + gamma K^T (y - D z), theta)`` (FISTA's momentum point with ``momentum``) from
    ``z = 0`` on one image ``y: (H, W)``; the reconstructions ``[D z_0, ..., D z_iters]``."""
    z = np.zeros(code_shape(filters, *y.shape))
    z_prev, t, outs = z, 1.0, [synth_ref(z, filters)]
    for _ in range(iters):
        v = z
        if momentum:
            t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
            v, t = z + (t - 1) / t_next * (z - z_prev), t_next
        g = v + gamma * adjoint_ref(y - synth_ref(v, filters), kernels)
        z_prev, z = z, np.sign(g) * np.maximum(np.abs(g) - theta, 0)
        outs.append(synth_ref(z, filters))
    return outs


# -- the torch operator -------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvShape:
    """Image size the operator acts on."""

    height: int
    width: int


def synth(z: torch.Tensor, filters: torch.Tensor, shape: ConvShape) -> torch.Tensor:
    """``D z``: ``(batch, M * (H + h - 1) * (W + w - 1))`` -> ``(batch, H * W)``."""
    M, hh, ww = code_shape(filters, shape.height, shape.width)
    out = TF.conv2d(z.reshape(-1, M, hh, ww), filters.unsqueeze(0))
    return out.reshape(z.shape[0], shape.height * shape.width)


def adjoint(r: torch.Tensor, kernels: torch.Tensor, shape: ConvShape) -> torch.Tensor:
    """``K^T r``: ``(batch, H * W)`` -> ``(batch, M * (H + h - 1) * (W + w - 1))``."""
    out = TF.conv_transpose2d(r.reshape(-1, 1, shape.height, shape.width), kernels.unsqueeze(0))
    return out.reshape(r.shape[0], -1)


def lipschitz(filters: np.ndarray | torch.Tensor, grid: int = 128) -> float:
    """``||D||_2^2 <= max_omega sum_m |F_m^(omega)|^2``, the maximum taken on a ``grid x grid`` frequency grid
    (the bound is the supremum; for small filters the grid maximum is within rounding of it)."""
    F = np.asarray(filters, dtype=np.float64)
    return float((np.abs(np.fft.fft2(F, s=(grid, grid))) ** 2).sum(0).max())


# -- analytic convolutional W -------------------------------------------------------------------


def gram(filters: np.ndarray) -> np.ndarray:
    """``Q`` with ``w^T Q w = sum_m ||corr(w, F_m)||^2`` (all shifts), from ``S(omega)`` by one inverse FFT."""
    F = np.asarray(filters, dtype=np.float64)
    _, h, w = F.shape
    S = (np.abs(np.fft.fft2(F, s=(2 * h - 1, 2 * w - 1))) ** 2).sum(0)
    R = np.real(np.fft.ifft2(S))  # summed autocorrelation, R[d] at index d mod (2h-1, 2w-1)
    p = np.array([(a, b) for a in range(h) for b in range(w)])
    d = p[None, :, :] - p[:, None, :]  # q - p
    return R[d[..., 0] % (2 * h - 1), d[..., 1] % (2 * w - 1)]


def closed_form(filters: np.ndarray) -> np.ndarray:
    """The analytic kernels ``W: (M, h, w)``: ``W_j = Q^-1 F_j / (F_j^T Q^-1 F_j)``."""
    F = np.asarray(filters, dtype=np.float64)
    M, h, w = F.shape
    Q = gram(F)
    V = np.linalg.solve(Q, F.reshape(M, -1).T).T  # Q^-1 F_j per row
    d = (V * F.reshape(M, -1)).sum(1)
    check(bool((d > 0).all()), "the filters' Gram matrix is singular; no analytic convolutional W")
    return (V / d[:, None]).reshape(M, h, w)


def project(W: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Onto ``<W_j, F_j> = 1``: ``W_j + (1 - <W_j, F_j>) F_j / ||F_j||^2``."""
    ip = (W * filters).sum((1, 2), keepdims=True)
    return W + (1 - ip) * filters / (filters ** 2).sum((1, 2), keepdims=True)


def pgd(filters: np.ndarray, step: float | None = None, iters: int = 500, tol: float = 1e-12):
    """The reference's projected gradient (``CalculateW_conv.m``): from ``W = F``, gradient step
    ``W_j <- crop(ifft(S * fft(W_j)))`` in the Fourier domain on the ``(2h-1) x (2w-1)`` grid, then
    :func:`project`; ``step`` default ``1 / max S`` (stable: the gradient's Lipschitz constant is
    ``lambda_max(Q) <= max S``). Returns ``(W, iterations, last relative change)``."""
    F = np.asarray(filters, dtype=np.float64)
    _, h, w = F.shape
    N = (2 * h - 1, 2 * w - 1)
    S = (np.abs(np.fft.fft2(F, s=N)) ** 2).sum(0)
    step = 1.0 / S.max() if step is None else step
    check(0 < step * S.max() < 2, f"PGD step={step:g} diverges: it needs 0 < step < {2 / S.max():.4g}")
    W, change, it = project(F.copy(), F), math.inf, 0
    while it < iters and not change < tol:
        it += 1
        grad = np.real(np.fft.ifft2(S * np.fft.fft2(W, s=N)))[:, :h, :w]
        W_new = project(W - step * grad, F)
        change = float(np.linalg.norm(W_new - W) / np.linalg.norm(W))
        W = W_new
    return W, it, change


def correlations(W: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """All full cross-correlations ``c[j, m] = corr(W_j, F_m)``, ``(M, M, 2h - 1, 2w - 1)``, zero shift at
    ``[0, 0]``."""
    _, h, w = filters.shape
    N = (2 * h - 1, 2 * w - 1)
    return np.real(np.fft.ifft2(np.fft.fft2(W, s=N)[:, None] * np.conj(np.fft.fft2(filters, s=N))[None]))


def objective(W: np.ndarray, filters: np.ndarray) -> float:
    """``sum_{(j, m, s) != (j, j, 0)} corr(W_j, F_m)(s)^2``: the Frobenius coherence of ``W^T D`` off its diagonal."""
    c = correlations(W, filters)
    diag = np.einsum("jj->j", c[:, :, 0, 0])
    return float((c ** 2).sum() - (diag ** 2).sum())


def coherence(W: np.ndarray, filters: np.ndarray) -> float:
    """``max_{(j, m, s) != (j, j, 0)} |corr(W_j, F_m)(s)|``."""
    c = np.abs(correlations(W, filters))
    idx = np.arange(len(filters))
    c[idx, idx, 0, 0] = 0
    return float(c.max())


def constraint(W: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """``<W_j, F_j>`` per filter (1 for an analytic W)."""
    return (W * filters).sum((1, 2))


# -- the denoising problem ----------------------------------------------------------------------


class ConvDenoiseProblem(Problem):
    """Denoising ``crop x crop`` random crops of training images: ``y`` the noisy crop, ``x`` the clean one,
    both flattened ``(batch, crop * crop)`` on the 0-1 scale with the *noisy* crop's mean removed from
    both (it is added back after denoising, :func:`unrolled.images.denoise.denoise_image`).

    Noise ``N(0, (sigma / 255)^2)``. ``A`` holds the filters ``(M, h, w)``, not a matrix: only the
    convolutional models (``conv-*``) serve this problem.
    """

    def __init__(self, filters: np.ndarray, images: list[np.ndarray], crop: int = 48, sigma: float = 20.0,
                 seed: int = 0, val_size: int = 64) -> None:
        check(crop >= filters.shape[1] and crop >= filters.shape[2], f"crop={crop} is smaller than the filters")
        check(sigma > 0, f"sigma={sigma} must be positive")
        for im in images:
            check(min(im.shape) >= crop, f"a training image of {im.shape[0]}x{im.shape[1]} pixels is smaller than "
                                         f"the {crop}x{crop} crop")
        self.spec = ProblemSpec(m=crop * crop, n=crop * crop, p=0.1, seed=seed, matrix="file",
                                a_file=f"conv-denoise:{filters.shape[0]}x{filters.shape[1]}x{filters.shape[2]}"
                                       f":sigma={sigma:g}", val_size=val_size, test_size=val_size)
        self.filters = np.asarray(filters, dtype=np.float64)
        self.A = torch.from_numpy(self.filters)
        self.shape = ConvShape(crop, crop)
        self.crop, self.sigma = crop, sigma
        self.images = [torch.from_numpy(np.asarray(im, dtype=np.float64) / 255.0) for im in images]
        self._weights = torch.tensor([float((im.shape[0] - crop + 1) * (im.shape[1] - crop + 1)) for im in images])
        self._sets: dict = {}
        self._L: float | None = None

    @property
    def L(self) -> float:
        if self._L is None:
            self._L = lipschitz(self.filters)
        return self._L

    def sample(self, batch: int, generator: torch.Generator, dtype: torch.dtype = torch.float32,
               snr: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check(batch >= 1, f"batch size must be positive, got {batch}")
        c = self.crop
        which = torch.multinomial(self._weights, batch, replacement=True, generator=generator)
        clean = torch.empty(batch, c * c, dtype=torch.float64)
        for k, i in enumerate(which.tolist()):
            im = self.images[i]
            r = int(torch.randint(0, im.shape[0] - c + 1, (1,), generator=generator))
            q = int(torch.randint(0, im.shape[1] - c + 1, (1,), generator=generator))
            clean[k] = im[r:r + c, q:q + c].reshape(-1)
        noisy = clean + (self.sigma / 255.0) * torch.randn(clean.shape, generator=generator, dtype=torch.float64)
        mean = noisy.mean(1, keepdim=True)
        return (clean - mean).to(dtype), (noisy - mean).to(dtype)

    def _fixed(self, which: str, size: int, dtype: torch.dtype, snr: float | None = None):
        key = (which, size, dtype)
        if key not in self._sets:
            purpose = 1 if which == "val" else 2
            g = torch.Generator().manual_seed((self.spec.seed * 1_000_003 + purpose * 7919) % 2**63)
            self._sets[key] = self.sample(size, g, dtype)
        return self._sets[key]

    def test_matrix(self) -> torch.Tensor:
        return self.A

    def __repr__(self) -> str:
        M, h, w = self.filters.shape
        return f"ConvDenoiseProblem({M} filters {h}x{w}, crop {self.crop}, sigma {self.sigma:g})"
