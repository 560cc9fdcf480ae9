"""Fused CPU kernels (Numba, optional) for the element-wise work of a training step, by operation.

In training, PyTorch runs each element-wise operation of a layer as its own pass over a
``(batch, n)`` tensor, and at batch 512 a layer's tensors come from memory rather than the
cache (20 to 45 passes a layer for the ALISTA family; docs/performance.md). These kernels do
the forward and the backward of one operation in one pass each, and keep masks as ``int8``
codes instead of float factors:

* :mod:`.shrinkage`: the soft threshold with support selection (and ALISTA-AT's thresholds);
* :mod:`.selection`: the short cuts of the selection (counts and entries above a threshold);
* :mod:`.gates`: AGLISTA's gain gate and overshoot;
* :mod:`.lstm`: NA-ALISTA's LSTM cell and the gradient of its l1 features.

They run on the calling thread: a second thread would compete with PyTorch's OpenMP workers.
Each computes the same operations in the same order as the torch form in
:mod:`unrolled.ops.fast`: the shrinkage bit for bit (its parameter gradient aside);
elsewhere multiply-adds are fused and sums accumulate in float64, so values agree to
rounding. ``exp`` is a float32 polynomial within one unit in the last place
(:func:`.common._exp`). The submodules import Numba; this one does not, so the package
works without it (:func:`usable` is then false).
"""

from __future__ import annotations

import importlib

import torch
from torch import Tensor

from ..dispatch import active

_SUBMODULES = ("common", "gates", "lstm", "selection", "shrinkage")


def __getattr__(name: str):
    if name in _SUBMODULES:  # imported on first use: only the numba backend gets here
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def usable(z: Tensor, *params: Tensor) -> bool:
    """Whether the ``numba`` backend is active and ``z`` and ``params`` :func:`fit` a kernel."""
    return active() == "numba" and fits(z, *params)


def fits(z: Tensor, *params: Tensor) -> bool:
    """Whether ``z`` and ``params`` fit a kernel: CPU tensors of one floating dtype, ``z`` 2-D and
    contiguous, each parameter a scalar, per sample ``(batch, 1)`` or per entry ``(batch, n)`` (contiguous).
    A backward pass asks this of its tensors, having decided in the forward pass to take the kernels."""
    if z.device.type != "cpu" or z.dim() != 2 or z.dtype not in (torch.float32, torch.float64):
        return False
    if not z.is_contiguous():
        return False
    for p in params:
        if p.dtype != z.dtype or p.device.type != "cpu":
            return False
        per_sample = p.dim() == 2 and p.shape == (z.shape[0], 1)
        if not (p.dim() == 0 or per_sample or (p.shape == z.shape and p.is_contiguous())):
            return False
    return True


def usable_scalars(*tensors: Tensor, scalars: tuple[Tensor, ...]) -> bool:
    """Whether the 2-D ``tensors`` (of one shape) and the 0-d ``scalars`` can go to a kernel."""
    return (all(s.dim() == 0 for s in scalars) and all(t.shape == tensors[0].shape for t in tensors)
            and all(usable(t, *scalars) for t in tensors))
