"""Short cuts of the support selection: per-row counts of the entries above a threshold, and those entries alone."""

from __future__ import annotations

import numba
import numpy as np
from torch import Tensor

from .common import _JIT, _np, _rows, _scalar_type


@numba.njit(**_JIT)
def _count_over(a, theta, out):
    per_row = theta.shape[0] > 1
    for b in range(a.shape[0]):
        th = theta[b if per_row else 0, 0]
        count = 0
        for j in range(a.shape[1]):
            count += a[b, j] > th
        out[b] = count


@numba.njit(**_JIT)
def _compact_over(a, theta, rows, pad, out):
    per_row = theta.shape[0] > 1
    buf = np.empty(a.shape[1], a.dtype)
    for i in range(rows.shape[0]):
        b = rows[i]
        th = theta[b if per_row else 0, 0]
        m = 0
        for j in range(a.shape[1]):  # store every entry, advance past those above th: no branch
            v = a[b, j]
            buf[m] = v
            m += v > th
        for k in range(out.shape[1]):
            out[i, k] = buf[k] if k < m else pad


def _theta_rows(a: Tensor, theta: Tensor | float) -> np.ndarray:
    return _rows(theta) if isinstance(theta, Tensor) else np.full((1, 1), theta, _scalar_type(a))


def count_over(a: Tensor, theta: Tensor | float) -> np.ndarray:
    """How many entries of each row of ``a`` exceed ``theta`` (a scalar or per row)."""
    out = np.empty(a.shape[0], np.int64)
    _count_over(_np(a), _theta_rows(a, theta), out)
    return out


def compact_over(a: Tensor, theta: Tensor | float, rows: np.ndarray, width: int, pad: float) -> np.ndarray:
    """``(len(rows), width)``: row ``rows[i]``'s entries above ``theta`` in order, then ``pad``
    (``width`` must be at least each row's count)."""
    out = np.empty((len(rows), width), _scalar_type(a))
    _compact_over(_np(a), _theta_rows(a, theta), rows, _scalar_type(a)(pad), out)
    return out
