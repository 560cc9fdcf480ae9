"""Fused CPU kernels (Numba) for the element-wise work of a training step.

In training, PyTorch runs each element-wise operation of a layer as its own pass over a
``(batch, n)`` tensor, and at batch 512 a layer's tensors come from memory rather than the
cache: about 40 us a pass on the 2-core benchmark machine, 20 to 45 passes a layer for the
ALISTA family (benchmarks/bench_train.py). These kernels do the forward and the backward of
one operation in one pass each, and keep masks as ``int8`` codes instead of float factors.

They run on the calling thread: a second thread would compete with PyTorch's OpenMP workers,
which spin between products (row-parallel selection on a thread pool was slower for that
reason). Each kernel computes the same operations in the same order as the PyTorch form in
:mod:`unrolled.functional`. The shrinkage matches it bit for bit (its parameter gradient
aside); elsewhere multiply-adds are fused, as PyTorch's x86 build fuses them, and sums
accumulate in float64, so values agree to rounding (tests/test_kernels.py). Where a function
has a kernel, training and inference both take it, so the two give the same bits (the model
contract). ``exp`` (AGLISTA's gain gate, the LSTM's sigmoids) is a float32 polynomial here
(:func:`_exp`, within one unit in the last place): Numba's call to the scalar ``libm`` one
does not vectorise and was ten times slower.

Whole layers are nodes built on them in :mod:`unrolled.functional` (``pgd_step`` with scalar
parameters, ``gated_step``, ``step_shrink``) and in the NA-ALISTA model (its LSTM cell).

:func:`usable` says whether a call may take a kernel: CPU tensors of one floating dtype,
contiguous, with parameters as a scalar, per sample ``(batch, 1)`` or per entry ``(batch, n)``;
:func:`usable_scalars` the same with scalar parameters only. ``ENABLED = False`` turns them
off (for A/B measurements and equivalence tests).
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

ENABLED = True
_JIT = dict(cache=True, nogil=True, error_model="numpy")  # IEEE operations exactly as written
_FMA = dict(_JIT, fastmath={"contract"})  # a * b + c as one fused multiply-add, as PyTorch's addcmul on x86
_SUM = dict(_JIT, fastmath={"contract", "reassoc"})  # and vectorised (float64) sums

ZERO, BYPASS, ZERO_SIGN = 0, 2, 3  # shrink codes; a shrunk entry's code is sign(z) (-1 or 1)


def usable(z: Tensor, *params: Tensor) -> bool:
    """Whether ``z`` (2-D) and ``params`` can go to a kernel (see the module docstring)."""
    if not ENABLED or z.device.type != "cpu" or z.dim() != 2 or z.dtype not in (torch.float32, torch.float64):
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


# --- soft threshold with support selection ------------------------------------------------------------


@numba.njit(inline="always")
def _shrink_entry(zj, th, hi, lo):
    a = abs(zj)
    if a <= hi:  # shrunk or zeroed
        out = zj - min(max(zj, -th), th)
        code = ZERO if a <= lo else (1 if zj > 0 else (-1 if zj < 0 else ZERO_SIGN))
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


@numba.njit(**_JIT)
def _shrink_forward(z, theta, cut, with_theta, out, code):
    B, n = z.shape
    per_row, per_entry = theta.shape[0] > 1, theta.shape[1] > 1
    for b in range(B):
        tb = theta[b if per_row else 0]
        c = cut[b]
        if per_entry:
            for j in range(n):
                th = tb[j]
                hi = max(c, th) if with_theta else c
                out[b, j], code[b, j] = _shrink_entry(z[b, j], th, hi, min(hi, th))
        else:
            th = tb[0]
            hi = max(c, th) if with_theta else c
            lo = min(hi, th)
            for j in range(n):
                out[b, j], code[b, j] = _shrink_entry(z[b, j], th, hi, lo)


def shrink_forward(z: Tensor, theta: Tensor, cut: Tensor | None, with_theta: bool) -> tuple[Tensor, Tensor]:
    """``(out, code)`` of the selection shrinkage (see ``functional._Shrink``); ``cut`` is ``(batch, 1)``
    or None (no selection: every entry is shrunk)."""
    out = _empty(z)
    code = torch.empty(z.shape, dtype=torch.int8)
    c = np.full(z.shape[0], np.inf, _scalar_type(z)) if cut is None else _np(cut.reshape(-1))
    _shrink_forward(_np(z), _rows(theta), c, with_theta and cut is not None, _np(out), _np(code))
    return out, code


@numba.njit(**_SUM)
def _shrink_backward(g, code, step, d, gamma, per_row_gamma, per_row, per_entry, zero, one, gz, gd, gtheta, ggamma):
    """``gz = g [code != 0]``; ``gtheta`` gets ``-gz sign`` summed to its shape (float64 unless per
    entry). With ``step`` (the input was ``x + gamma d``) also ``gd = gz gamma``, and ``ggamma``
    gets ``gz d`` summed to its shape, in the same pass. ``zero``, ``one``: constants of ``g``'s dtype."""
    B, n = g.shape
    for b in range(B):
        gb = gamma[b if per_row_gamma else 0, 0]
        acc = 0.0
        acc_gamma = 0.0
        for j in range(n):
            gz[b, j], s = _shrink_grad(g[b, j], code[b, j], zero, one)
            if per_entry:
                gtheta[b, j] = s
            else:
                acc += s
        if not per_entry:
            gtheta[b if per_row else 0, 0] += acc
        if step:  # a second loop over the row just written (in L1): a branch inside the first one costs 15x
            for j in range(n):
                gd[b, j] = gz[b, j] * gb
                acc_gamma += gz[b, j] * d[b, j]
            ggamma[b if per_row_gamma else 0, 0] += acc_gamma


def shrink_backward(g: Tensor, code: Tensor, theta_shape: torch.Size,
                    need_theta: bool) -> tuple[Tensor, Tensor | None]:
    """``(grad_z, grad_theta)`` for :func:`shrink_forward` from the output gradient ``g``."""
    gz, _, _, gtheta = _shrink_grads(g, code, None, None, theta_shape, need_theta)
    return gz, gtheta


def step_shrink_backward(g: Tensor, code: Tensor, d: Tensor, gamma: Tensor, theta_shape: torch.Size,
                         need_theta: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """``(grad_x, grad_d, grad_gamma, grad_theta)`` of ``shrink(x + gamma d, theta)`` (its codes from
    :func:`shrink_forward`); ``gamma`` a scalar or per sample."""
    return _shrink_grads(g, code, d, gamma, theta_shape, need_theta)


def _shrink_grads(g: Tensor, code: Tensor, d: Tensor | None, gamma: Tensor | None, theta_shape: torch.Size,
                  need_theta: bool) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    step = d is not None
    gz = _empty(g)
    gd = _empty(g) if step else gz  # not written without a step
    per_entry = len(theta_shape) == 2 and theta_shape[1] > 1
    per_row = len(theta_shape) == 2 and theta_shape[0] != 1  # per sample, an empty batch included
    gt = np.zeros((g.shape[0] if per_row else 1, g.shape[1] if per_entry else 1),
                  np.float64 if not per_entry else _scalar_type(g))
    per_row_gamma = step and gamma.dim() > 0
    gg = np.zeros((g.shape[0] if per_row_gamma else 1, 1), np.float64)
    t = _scalar_type(g)
    _shrink_backward(_np(g), _np(code), step, _np(d if step else g), _rows(gamma) if step else np.ones((1, 1), t),
                     per_row_gamma, per_row, per_entry, t(0), t(1), _np(gz), _np(gd), gt, gg)
    gtheta = _reduce(gt, theta_shape, g.dtype) if need_theta else None
    return gz, (gd if step else None), (_reduce(gg, gamma.shape, g.dtype) if step else None), gtheta


@numba.njit(**_JIT)
def _adaptive_shrink_forward(z, x, th, eps, one, cut, with_theta, out, code):
    """:func:`_shrink_forward` with ALISTA-AT's per-entry threshold ``th eps / (|x| + eps)`` made on the fly."""
    B, n = z.shape
    the = th * eps
    for b in range(B):
        c = cut[b]
        for j in range(n):
            t = (one / (abs(x[b, j]) + eps)) * the  # as functional.adaptive_threshold computes it
            hi = max(c, t) if with_theta else c
            out[b, j], code[b, j] = _shrink_entry(z[b, j], t, hi, min(hi, t))


@numba.njit(**_SUM)
def _adaptive_shrink_backward(g, code, x, th, eps, zero, one, gz, gx):
    """``gz = g [code != 0]``; ``gx = gz + s dt/dx`` with ``s = -gz sign`` the threshold's gradient and
    ``dt/dx = -th eps sign(x) / (|x| + eps)^2``; returns ``sum s / (|x| + eps)`` (times ``eps``: d/dth)."""
    B, n = g.shape
    acc = 0.0
    k = th * -eps
    for b in range(B):
        for j in range(n):
            xj = x[b, j]
            gj, s = _shrink_grad(g[b, j], code[b, j], zero, one)
            r = one / (abs(xj) + eps)
            acc += s * r
            gz[b, j] = gj
            gx[b, j] = gj + s * r * r * (one if xj > 0 else (-one if xj < 0 else zero)) * k
    return acc


def adaptive_shrink_forward(z: Tensor, x: Tensor, theta: float, eps: float, cut: Tensor | None,
                            with_theta: bool) -> tuple[Tensor, Tensor]:
    """:func:`shrink_forward` with the threshold ``theta eps / (|x| + eps)`` of each entry (ALISTA-AT)."""
    out = _empty(z)
    code = torch.empty(z.shape, dtype=torch.int8)
    t = _scalar_type(z)
    c = np.full(z.shape[0], np.inf, t) if cut is None else _np(cut.reshape(-1))
    _adaptive_shrink_forward(_np(z), _np(x), t(theta), t(eps), t(1), c, with_theta and cut is not None, _np(out),
                             _np(code))
    return out, code


def adaptive_shrink_backward(g: Tensor, code: Tensor, x: Tensor, theta: float,
                             eps: float) -> tuple[Tensor, Tensor, float]:
    """``(grad_z, grad_z + the threshold's part of grad_x, grad_theta)`` of :func:`adaptive_shrink_forward`."""
    gz, gx = _empty(g), _empty(g)
    t = _scalar_type(g)
    acc = _adaptive_shrink_backward(_np(g), _np(code), _np(x), t(theta), t(eps), t(0), t(1), _np(gz), _np(gx))
    return gz, gx, acc * eps


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


# --- AGLISTA's layer ----------------------------------------------------------------------------------

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
    within one unit in the last place of the true value (tests/test_kernels.py) and about 10x
    faster than the scalar ``libm`` call Numba makes, because the loop vectorises. ``u`` is clamped
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


@numba.njit(**_JIT)
def _gate_forward(x, c, v, gx):
    B, n = x.shape
    e = np.empty(n, x.dtype)
    for b in range(B):
        _exp_neg_abs(x[b], v, e)
        for j in range(n):
            xj = x[b, j]
            gx[b, j] = xj + xj * (e[j] * c)


@numba.njit(**_FMA)
def _shrink_overshoot_forward(z, x, th, cut, with_theta, a, eps, out, code):
    B, n = z.shape
    for b in range(B):
        hi = max(cut[b], th) if with_theta else cut[b]
        lo = min(hi, th)
        for j in range(n):
            s, code[b, j] = _shrink_entry(z[b, j], th, hi, lo)
            d = s - x[b, j]
            out[b, j] = s + a * (d / (abs(d) + eps))


@numba.njit(**_SUM)
def _shrink_overshoot_backward(g, z, x, code, th, a, eps, zero, one, gz, gsum):
    """``gz``: the gradient of the shrinkage's input; ``gsum = gz - s``, the overshoot's part of ``x``'s
    gradient added. Returns ``(sum g q, sum of theta's gradient)`` in float64."""
    B, n = g.shape
    ga = 0.0
    gth = 0.0
    ae = a * eps
    for b in range(B):
        for j in range(n):
            zj, c = z[b, j], code[b, j]
            s = zj if c == BYPASS else zj - min(max(zj, -th), th)  # the shrinkage's output again
            d = s - x[b, j]
            inv = one / (abs(d) + eps)
            gj = g[b, j]
            o = gj * ae * inv * inv  # g a dq/dd
            ga += gj * (d * inv)
            gzj, s_th = _shrink_grad(gj + o, c, zero, one)
            gth += s_th
            gz[b, j] = gzj
            gsum[b, j] = gzj - o
    return ga, gth


@numba.njit(**_SUM)
def _gate_backward(gg, x, c, v, one, gsum, gx):
    """``gx = gsum + gg (1 + (1 - v |x|) c e)``; returns ``(sum gg x e, -sum gg x |x| c e)`` in float64."""
    B, n = gg.shape
    e = np.empty(n, x.dtype)
    gc = 0.0
    gv = 0.0
    for b in range(B):
        _exp_neg_abs(x[b], v, e)
        for j in range(n):
            gj, xj, ej = gg[b, j], x[b, j], e[j]
            a = abs(xj)
            ce = ej * c
            gx[b, j] = gsum[b, j] + (gj + gj * ((a * -v + one) * ce))
            gxj = gj * xj
            gc += gxj * ej
            gv -= gxj * a * ce
    return gc, gv


def gate_forward(x: Tensor, c: float, v: float) -> Tensor:
    """AGLISTA's gain gate ``x + x c e``, ``e = exp(-v |x|)`` (scalar ``c``, ``v``)."""
    gx = _empty(x)
    t = _scalar_type(x)
    _gate_forward(_np(x), t(c), t(v), _np(gx))
    return gx


def gate_backward(gg: Tensor, x: Tensor, c: float, v: float, gsum: Tensor) -> tuple[Tensor, float, float]:
    """``(grad_x, grad_c, grad_v)`` of :func:`gate_forward` from the gradient ``gg`` of its output,
    with ``gsum`` (the rest of ``x``'s gradient) added to ``grad_x``."""
    gx = _empty(x)
    t = _scalar_type(x)
    gc, gv = _gate_backward(_np(gg), _np(x), t(c), t(v), t(1), _np(gsum), _np(gx))
    return gx, gc, gv


def shrink_overshoot_forward(z: Tensor, x: Tensor, theta: float, cut: Tensor | None, with_theta: bool,
                             a: float, eps: float) -> tuple[Tensor, Tensor]:
    """``(out, code)``: ``s = shrink(z)`` (as :func:`shrink_forward`, scalar ``theta``) and AGLISTA's
    overshoot ``out = s + a q``, ``q = d / (|d| + eps)``, ``d = s - x``."""
    out = _empty(z)
    code = torch.empty(z.shape, dtype=torch.int8)
    t = _scalar_type(z)
    c = np.full(z.shape[0], np.inf, t) if cut is None else _np(cut.reshape(-1))
    _shrink_overshoot_forward(_np(z), _np(x), t(theta), c, with_theta and cut is not None, t(a), t(eps),
                              _np(out), _np(code))
    return out, code


def shrink_overshoot_backward(g: Tensor, z: Tensor, x: Tensor, code: Tensor, theta: float, a: float,
                              eps: float) -> tuple[Tensor, Tensor, float, float]:
    """``(grad_z, grad_z - s, grad_a, grad_theta)`` of :func:`shrink_overshoot_forward`, where ``-s``
    is the overshoot's gradient of ``x``."""
    gz, gsum = _empty(g), _empty(g)
    t = _scalar_type(g)
    ga, gth = _shrink_overshoot_backward(_np(g), _np(z), _np(x), _np(code), t(theta), t(a), t(eps), t(0), t(1),
                                         _np(gz), _np(gsum))
    return gz, gsum, ga, gth


# --- NA-ALISTA's LSTM cell -------------------------------------------------------------------------------

@numba.njit(**_FMA)
def _sigmoid_row(u, scale, one, out):
    """``out = 1 / (1 + exp(-scale u))`` for one row."""
    for j in range(u.shape[0]):
        out[j] = one / (one + _exp(u[j] * -scale))


@numba.njit(**_FMA)
def _lstm_forward(hw, inp, w_ih_t, bias, c, one, two, s, c_new, tau, h):
    B, H = c.shape
    w0, w1 = w_ih_t[0], w_ih_t[1]
    pre = np.empty(4 * H, hw.dtype)  # a separate row: in place, the sigmoid's loop is not vectorised (10x)
    for b in range(B):
        u0, u1 = inp[b, 0], inp[b, 1]
        for k in range(4 * H):
            pre[k] = hw[b, k] + u0 * w0[k] + u1 * w1[k] + bias[k]
        sb = s[b]
        _sigmoid_row(pre, one, one, sb)
        for k in range(H):
            c_new[b, k] = sb[H + k] * c[b, k] + sb[k] * (sb[2 * H + k] * two - one)
        _sigmoid_row(c_new[b], two, one, tau[b])
        for k in range(H):
            tau[b, k] = tau[b, k] * two - one  # tanh(c_new) = 2 sigmoid(2 c_new) - 1
            h[b, k] = sb[3 * H + k] * tau[b, k]


def lstm_forward(hw: Tensor, inp: Tensor, w_ih: Tensor, bias: Tensor, c: Tensor) -> tuple[Tensor, ...]:
    """``(h, c_new, s, tau)`` of an LSTM cell whose g rows are doubled (see ``NA_ALISTA.lstm``) from
    ``hw = h @ W_hh^T`` ``(batch, 4H)``, one or two input columns ``inp``, ``W_ih`` ``(4H, inputs)``,
    the summed biases and the cell state ``c``: ``s = sigmoid(hw + inp W_ih^T + bias)``."""
    if inp.shape[1] == 1:  # a second input with weight 0 adds exactly 0
        inp, w_ih = torch.cat([inp, torch.zeros_like(inp)], 1), torch.cat([w_ih, torch.zeros_like(w_ih)], 1)
    s, c_new, tau, h = _empty(hw), _empty(c), _empty(c), _empty(c)
    t = _scalar_type(hw)
    _lstm_forward(_np(hw), _np(inp), _np(w_ih.T), _np(bias), _np(c), t(1), t(2), _np(s), _np(c_new), _np(tau),
                  _np(h))
    return h, c_new, s, tau


@numba.njit(**_SUM)
def _lstm_backward(s, c_prev, tau, dh, dc, one, two, dgates, dc_prev):
    # One short loop per output block: with every array in one loop, LLVM's aliasing checks
    # exceed its limit and the loop is not vectorised (2.3 ns an entry instead of about 0.3).
    B, H = c_prev.shape
    dct = np.empty(H, s.dtype)
    for b in range(B):
        si, sf, sg, so = s[b, :H], s[b, H:2 * H], s[b, 2 * H:3 * H], s[b, 3 * H:]
        for k in range(H):
            t = tau[b, k]
            dct[k] = dc[b, k] + dh[b, k] * so[k] * (one - t * t)  # through h = o tanh(c)
        for k in range(H):
            dc_prev[b, k] = dct[k] * sf[k]
        for k in range(H):
            dgates[b, k] = dct[k] * (sg[k] * two - one) * si[k] * (one - si[k])
        for k in range(H):
            dgates[b, H + k] = dct[k] * c_prev[b, k] * sf[k] * (one - sf[k])
        for k in range(H):
            dgates[b, 2 * H + k] = dct[k] * si[k] * two * sg[k] * (one - sg[k])
        for k in range(H):
            dgates[b, 3 * H + k] = dh[b, k] * tau[b, k] * so[k] * (one - so[k])


def lstm_backward(s: Tensor, c_prev: Tensor, tau: Tensor, dh: Tensor, dc: Tensor) -> tuple[Tensor, Tensor]:
    """``(d gates, d c_prev)`` of an LSTM cell whose g rows are doubled (see ``NA_ALISTA.lstm``).

    ``s = sigmoid(gates)`` ``(batch, 4H)`` in the order i, f, g, o; ``tau = tanh(c)`` of the
    new cell state; ``dh``, ``dc`` the gradients of the new ``h`` and ``c``."""
    dgates, dc_prev = _empty(s), _empty(c_prev)
    t = _scalar_type(s)
    _lstm_backward(_np(s), _np(c_prev), _np(tau), _np(dh), _np(dc), t(1), t(2), _np(dgates), _np(dc_prev))
    return dgates, dc_prev


# --- row l1 norms (NA-ALISTA's features) -------------------------------------------------------------------

@numba.njit(**_JIT)
def _add_scaled_sign(g, v, w, scale, one, zero, out):
    B, n = v.shape
    for b in range(B):
        wb = w[b]
        for j in range(n):
            vj = v[b, j]
            out[b, j] = scale * (g[b, j] + wb * (one if vj > 0 else (-one if vj < 0 else vj * zero)))  # sign(nan) = nan


def add_scaled_sign(g: Tensor, v: Tensor, w: Tensor, scale: float) -> Tensor:
    """``scale (g + w sign(v))`` for ``g, v: (batch, n)`` and a per-sample ``w: (batch,)``: the
    gradient of ``|v|.sum(-1)`` added to ``g`` (``scale``: 1 or -1, exact)."""
    out = _empty(v)
    t = _scalar_type(v)
    _add_scaled_sign(_np(g), _np(v), _np(w), t(scale), t(1), t(0), _np(out))
    return out
