"""Metrics (docs/spec.md §3): NMSE in dB, support recovery, and the support-oracle floor.

``nmse_db`` is one aggregate ratio over the whole set, ``10 log10(sum ||x_hat - x||^2 /
sum ||x||^2)`` (VITA, NA-ALISTA). ``nmse_db_per_sample`` averages per-sample dB
(Open-L2O); never mix the two in one table. Every NMSE in the package is computed here.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def db(ratio: float) -> float:
    """``10 log10(ratio)``, with ``ratio`` floored at 1e-300 (an exact recovery is -3000 dB, not -inf)."""
    return 10 * math.log10(max(ratio, 1e-300))


def samples_db(err: Tensor, energy: Tensor) -> Tensor:
    """Per-sample ``10 log10(err / energy)`` (floored like :func:`db`) of the rows with ``energy > 0``."""
    keep = energy > 0
    return 10 * torch.log10((err[keep] / energy[keep]).clamp_min(1e-300))


def nmse_db(x_hat: Tensor, x: Tensor) -> float:
    """Aggregate NMSE (dB) over the set: ``10 log10(sum ||x_hat - x||^2 / sum ||x||^2)``."""
    x_hat, x = x_hat.double(), x.double()
    return db(float(((x_hat - x) ** 2).sum() / (x * x).sum()))


def nmse_db_per_sample(x_hat: Tensor, x: Tensor) -> float:
    """Mean over samples of per-sample NMSE in dB (samples with ``x = 0`` are skipped)."""
    x_hat, x = x_hat.double(), x.double()
    return float(samples_db(((x_hat - x) ** 2).sum(1), (x * x).sum(1)).mean())


def support_stats(x_hat: Tensor, x: Tensor, tol: float = 0.0) -> dict[str, float]:
    """Per-sample false positives / negatives (means) and mean support F1.

    An estimated entry is in the support when ``|x_hat_i| > tol``.
    """
    est, true = x_hat.abs() > tol, x != 0
    tp = (est & true).sum(1).double()
    fp = (est & ~true).sum(1).double()
    fn = (~est & true).sum(1).double()
    f1 = torch.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn).clamp_min(1), torch.ones_like(tp))
    return {"fp": float(fp.mean()), "fn": float(fn.mean()), "f1": float(f1.mean())}


ORACLE_COND_MAX = 1e8  # about 1/sqrt(float64 eps): beyond it the support's least squares is not determined


def support_gram_condition(A: Tensor, x: Tensor, chunk: int = 500) -> float:
    """The largest condition number of ``A_S^T A_S`` over the true supports ``S`` of ``x: (batch, n)``
    (``inf`` where a support has more entries than ``A: (m, n)`` has rows, or is degenerate)."""
    A, x = A.double(), x.double()
    worst = 1.0
    for lo in range(0, x.shape[0], chunk):
        mask = x[lo:lo + chunk] != 0
        k = int(mask.sum(1).max()) if mask.any() else 0
        if k == 0:
            continue
        if k > A.shape[0]:
            return math.inf
        idx = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :k]
        valid = torch.gather(mask, 1, idx)
        AS = A.T[idx] * valid[..., None]
        ev = torch.linalg.eigvalsh(AS @ AS.transpose(1, 2) + torch.diag_embed((~valid).double()))
        lo_ev, hi_ev = ev[:, 0], ev[:, -1]
        if bool((lo_ev <= 0).any()):
            return math.inf
        worst = max(worst, float((hi_ev / lo_ev).max()))
    return worst


def oracle_estimates(A: Tensor, x: Tensor, y: Tensor, snr: float, chunk: int = 500) -> dict[str, Tensor]:
    """Support-oracle estimates: least squares and MMSE on the true support of each sample.

    MMSE under the ``N(0, 1)`` prior is ``(A_S^T A_S + sigma^2 I)^{-1} A_S^T y`` with the
    sample's noise level ``sigma = std(A x) 10^(-snr/20)`` (docs/spec.md §2). Supports are padded
    to the largest one in a chunk; padded coordinates solve to exactly zero.
    """
    A, x, y = A.double(), x.double(), y.double()
    out_ls, out_mmse = torch.zeros_like(x), torch.zeros_like(x)
    for lo in range(0, x.shape[0], chunk):
        xs, ys = x[lo:lo + chunk], y[lo:lo + chunk]
        mask = xs != 0
        k = int(mask.sum(1).max()) if mask.any() else 0
        if k == 0:
            continue
        # Indices of the support first (stable order), then padding.
        idx = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :k]
        valid = torch.gather(mask, 1, idx)
        AS = A.T[idx] * valid[..., None]  # (b, k, m): rows are support columns of A
        G = AS @ AS.transpose(1, 2)
        rhs = (AS @ ys[..., None]).squeeze(-1)
        pad = torch.diag_embed((~valid).double())
        clean = xs @ A.T
        sigma2 = 0.0 if math.isinf(snr) else (clean.std(1, correction=0) * 10 ** (-snr / 20)) ** 2
        sig = torch.as_tensor(sigma2, dtype=torch.float64).reshape(-1, 1, 1) * torch.eye(k, dtype=torch.float64)
        z_ls = torch.linalg.solve(G + pad, rhs)
        z_mmse = torch.linalg.solve(G + pad + sig * valid[:, None, :], rhs)
        out_ls[lo:lo + chunk].scatter_(1, idx, z_ls * valid)
        out_mmse[lo:lo + chunk].scatter_(1, idx, z_mmse * valid)
    return {"oracle-ls": out_ls, "oracle-mmse": out_mmse}


def nmse_interval(x_hat: Tensor, x: Tensor, confidence: float = 0.95, resamples: int = 2000,
                  seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval (dB) of the aggregate NMSE ``10 log10(sum_i ||x_hat_i - x_i||^2 / sum_i ||x_i||^2)``.

    The statistic is a ratio of means, not a mean, so the pairs ``(error_i, energy_i)`` of each test
    vector are resampled together and the ratio recomputed (:func:`scipy.stats.bootstrap`, ``paired``,
    percentile interval, seeded; BCa's jackknife costs minutes at 10,000 vectors): how far another
    test set's number may lie from ours by chance alone."""
    from scipy.stats import bootstrap

    err = ((x_hat.double() - x.double()) ** 2).sum(1).cpu().numpy()
    energy = (x.double() ** 2).sum(1).cpu().numpy()

    def stat(e, p, axis=-1):
        return 10 * np.log10(np.maximum(e.sum(axis), 1e-300) / p.sum(axis))

    res = bootstrap((err, energy), stat, paired=True, vectorized=True, confidence_level=confidence,
                    n_resamples=resamples, method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)
