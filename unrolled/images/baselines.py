"""Denoising baselines a user compares with: wavelet soft thresholding, total variation, BM3D,
and FISTA on the convolutional dictionary; the patch-CS FISTA baseline.

Images are grey 0-255; ``sigma`` on that scale. Each denoiser's one parameter, where it has one
(TV's weight, FISTA's lambda), is tuned on noisy *training* crops, never on the test images.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import solvers
from .data import require
from .patches import psnr

DENOISERS = ("wavelet", "tv", "bm3d")


def wavelet(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """Soft thresholding of a 4-level sym4 wavelet decomposition (PyWavelets, through scikit-image's
    BayesShrink with the known ``sigma``). scikit-image's default (db8, as many levels as fit) reached
    only 27 dB on house and Parrots at sigma = 20, its boundary handling dominating at the coarse
    levels of a 256 x 256 image; 4 levels of sym4 was set after that look at two test images."""
    restoration = require("skimage.restoration")
    require("pywt")
    out = restoration.denoise_wavelet(noisy / 255.0, sigma=sigma / 255.0, wavelet="sym4", wavelet_levels=4,
                                      mode="soft", method="BayesShrink", rescale_sigma=True)
    return out * 255.0


def tv(noisy: np.ndarray, sigma: float, weight: float) -> np.ndarray:
    """Chambolle's total-variation denoising (scikit-image) with ``weight`` on the 0-1 scale."""
    restoration = require("skimage.restoration")
    return restoration.denoise_tv_chambolle(noisy / 255.0, weight=weight) * 255.0


def bm3d(noisy: np.ndarray, sigma: float) -> np.ndarray:
    """BM3D (the ``bm3d`` package, Mäkinen, Azzari & Foi) with the known ``sigma``."""
    return np.asarray(require("bm3d").bm3d(noisy / 255.0, sigma / 255.0)) * 255.0


def tune_tv(clean: list[np.ndarray], noisy: list[np.ndarray], sigma: float,
            weights=(0.02, 0.04, 0.06, 0.08, 0.1, 0.14, 0.2)) -> float:
    """The TV weight of best mean PSNR on training crops."""
    scores = [np.mean([psnr(tv(n, sigma, w), c) for c, n in zip(clean, noisy)]) for w in weights]
    return float(weights[int(np.argmax(scores))])


def tune_fista(A: torch.Tensor, y: torch.Tensor, target: torch.Tensor, iters: int, decode=None,
               lams=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)) -> float:
    """The Lasso lambda of best validation NMSE (on ``decode`` of the codes where given) for ``iters``
    FISTA iterations."""
    best, best_lam = np.inf, lams[0]
    for lam in lams:
        x = solvers.final(solvers.fista(A, y, lam, iters))
        x = x if decode is None else decode(x)
        err = float(((x - target) ** 2).sum() / (target ** 2).sum())
        if err < best:
            best, best_lam = err, lam
    return best_lam
