"""What every kernel shares: Numba's options, the shrinkage codes, array views of tensors, a float32 ``exp``.

Importing this module imports Numba (the optional extra ``unrolled[fast]``); nothing else
in the package imports it unless the ``numba`` backend runs.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload
from torch import Tensor

_JIT = dict(cache=True, nogil=True, error_model="numpy")  # IEEE operations exactly as written
_FMA = dict(_JIT, fastmath={"contract"})  # a * b + c as one fused multiply-add, as PyTorch's addcmul on x86
_SUM = dict(_JIT, fastmath={"contract", "reassoc"})  # and vectorised (float64) sums

ZERO, BYPASS, ZERO_SIGN = 0, 2, 3  # shrink codes; a shrunk entry's code is sign(z) (-1 or 1), 1 if theta < 0


def _np(t: Tensor) -> np.ndarray:
    """``t``'s memory as an array (no copy for a contiguous ``t``)."""
    if t.requires_grad:  # the checks cost less than the calls (a kernel call converts about ten tensors)
        t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    return t.numpy()


def _empty(t: Tensor) -> Tensor:
    """A new contiguous tensor of ``t``'s shape and dtype (kernels write outputs in place)."""
    return torch.empty_like(t, memory_format=torch.contiguous_format)


def _rows(p: Tensor) -> np.ndarray:
    """A parameter as a contiguous 2-D array: ``(1, 1)`` for a scalar, else itself."""
    return _np(p.reshape(1, 1) if p.dim() == 0 else p)


def _scalar_type(t: Tensor):
    """NumPy's scalar type of ``t``'s dtype: kernel constants of the data's precision."""
    return np.float32 if t.dtype == torch.float32 else np.float64


def _reduce(total: np.ndarray, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """A float64 gradient accumulator ``(rows, cols)`` as a tensor of the parameter's shape and dtype."""
    return torch.from_numpy(total).to(dtype).reshape(shape)


@numba.njit(inline="always")
def _shrink_entry(zj, th, hi, lo):
    a = abs(zj)
    if a <= hi:  # shrunk or zeroed
        out = zj - min(max(zj, -th), th)
        # d out / d theta = -code: -sign(z), or -1 for every entry when theta < 0 (then out = z - theta)
        code = ZERO if a <= lo else (1 if zj > 0 or th < 0 else (-1 if zj < 0 else ZERO_SIGN))
    else:  # bypasses the shrinkage
        out = zj
        code = BYPASS if a > lo else ZERO
    return out, np.int8(code)


@numba.njit(inline="always")
def _shrink_grad(gj, c, zero, one):
    """``(g [code != 0], -(that) sign)``: one entry's gradients of the shrinkage's input and threshold
    (``grad * passing`` and ``-(grad_z * signs)``, as in PyTorch)."""
    gz = gj * (one if c != ZERO else zero)
    return gz, -(gz * (one if c == 1 else (-one if c == -1 else zero)))


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose bit pattern is ``bits`` (an LLVM bitcast: free, and it vectorises)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.trunc(args[0], ir.IntType(32)), ir.FloatType())
    return types.float32(types.int64), codegen


_F = np.float32
_LOG2E, _LN2_HI, _LN2_LO = _F(1.44269504088896341), _F(0.693359375), _F(-2.12194440e-4)
_P0, _P1, _P2, _P3, _P4, _P5 = (_F(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                                4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_ROUND, _LO, _HI, _ONE, _BIAS = _F(12582912.0), _F(-87.3), _F(88.3), _F(1.0), _F(127.0)


def _exp(u):
    """``exp(u)`` inside kernels (see the overload below)."""
    return math.exp(u)


@overload(_exp, jit_options=dict(error_model="numpy", fastmath={"contract"}))
def _exp_typed(u):
    """float32: ``2^k p(r)`` with ``u = k ln 2 + r`` (Cody-Waite), ``p`` the Cephes ``expf`` polynomial;
    within one unit in the last place of the true value (tests/test_kernels.py), and unlike the
    scalar ``libm`` call Numba makes the loop vectorises (docs/performance.md). ``u`` is clamped
    to [-87.3, 88.3], where ``2^k`` is a normal float (below, the true value is under 1.3e-38).
    float64 (the exactness tests): ``libm``."""
    if u != types.float32:
        return lambda u: math.exp(u)

    def exp32(u):
        u = min(max(u, _LO), _HI)
        k = (u * _LOG2E + _ROUND) - _ROUND  # round to nearest, no conversion to an integer
        r = (u - k * _LN2_HI) - k * _LN2_LO
        p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
        p = p * (r * r) + r + _ONE
        return p * _float32_from_bits(np.int32(k + _BIAS) << 23)

    return exp32


@numba.njit(**_FMA)
def _exp_neg_abs(x, v, out):
    """``out = exp(-v |x|)`` for one row (no reassociation: it would undo the rounding in ``_exp``)."""
    for j in range(x.shape[0]):
        out[j] = _exp(abs(x[j]) * -v)

