"""The fused CPU kernels against the PyTorch forms they replace (unrolled/kernels.py)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from unrolled import functional as F
from unrolled import kernels


@contextlib.contextmanager
def kernels_off():
    kernels.ENABLED = False
    try:
        yield
    finally:
        kernels.ENABLED = True


def run(fn, inputs, grad):
    """``fn(*inputs)`` and the gradients of ``(out * grad).sum()`` for every input."""
    leaves = [v.detach().clone().requires_grad_() for v in inputs]
    out = fn(*leaves)
    out.backward(grad)
    return out.detach(), [v.grad for v in leaves]


def close(a, b):
    """Equal to rounding: a few units in the last place of the dtype."""
    torch.testing.assert_close(a, b, rtol=1e-5 if a.dtype == torch.float32 else 1e-12, atol=1e-6)


def compare(fn, inputs, grad, exact):
    """With and without kernels: the output (-1) and the gradients whose indices are in ``exact``
    have the same bits, the rest agree to rounding (fused multiply-adds, float64 sums)."""
    out_k, grads_k = run(fn, inputs, grad)
    with kernels_off():
        out_t, grads_t = run(fn, inputs, grad)
    for i, (k, t) in enumerate(zip([*grads_k, out_k], [*grads_t, out_t])):
        i = -1 if i == len(grads_k) else i
        if i in exact:
            assert torch.equal(k, t), f"{'output' if i < 0 else f'gradient {i}'} differs"
        else:
            close(k, t)


def batch(dtype, rows=7, n=41, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, n, generator=g, dtype=dtype)
    z[0, :4] = 0.0  # exact zeros
    z[1, :3] = torch.tensor([0.5, -0.5, 0.5], dtype=dtype)  # ties (and |z| = theta below)
    return z, torch.randn(rows, n, generator=g, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("theta_shape", [(), (7, 1), (7, 41)])
@pytest.mark.parametrize("keep, with_theta", [(0, True), (5, True), (5, False), (41, False), (3, True)])
def test_shrink_kernel_matches_the_pytorch_form(dtype, theta_shape, keep, with_theta):
    z, grad = batch(dtype)
    theta = torch.full(theta_shape, 0.5, dtype=dtype)
    if theta_shape:
        theta = theta + 0.3 * torch.rand(theta_shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
        theta.view(-1)[0] = -0.1  # a negative threshold: every entry passes, zeros included
    assert kernels.usable(z, theta)
    exact = {-1, 0, 1} if theta_shape == (7, 41) else {-1, 0}  # a per-entry theta's gradient has no sum
    compare(lambda z, th: F.shrink(z, th, keep, with_theta), (z, theta), grad, exact)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gate_kernels_match_the_pytorch_forms(dtype):
    x, grad = batch(dtype, seed=2)
    x_new = x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=dtype)
    x_new[2, :5] = x[2, :5]  # d = 0
    c, v, a = (torch.tensor(s, dtype=dtype) for s in (0.3, 1.7, 0.05))
    compare(F.gain_gate, (x, c, v), grad, exact={-1})  # its forward is PyTorch's
    compare(F.overshoot, (x_new, x, a), grad, exact=set())
    with torch.no_grad():  # inference takes the overshoot kernel too: the same bits as training
        assert torch.equal(F.overshoot(x_new, x, a), F.overshoot(x_new, x, a.requires_grad_()).detach())


def test_kernel_gradients_match_finite_differences():
    # gradcheck through the kernels (float64), away from the kinks.
    g = torch.Generator().manual_seed(4)
    z = torch.randn(5, 17, generator=g, dtype=torch.float64)
    for theta in (torch.tensor(0.3, dtype=torch.float64), 0.3 + torch.rand(5, 1, generator=g, dtype=torch.float64)):
        inputs = (z.clone().requires_grad_(), theta.clone().requires_grad_())
        assert kernels.usable(*inputs)
        assert torch.autograd.gradcheck(lambda z, th: F.shrink(z, th, 4, False), inputs)
    x = z + 0.5 * torch.sign(z)
    c, v, a = (torch.tensor(s, dtype=torch.float64, requires_grad=True) for s in (0.3, 1.7, 0.05))
    assert torch.autograd.gradcheck(F.gain_gate, (x.clone().requires_grad_(), c, v))
    assert torch.autograd.gradcheck(F.overshoot, (z.clone().requires_grad_(), x.clone().requires_grad_(), a))


def test_usable_refuses_what_the_kernels_do_not_take():
    z = torch.randn(4, 6)
    assert kernels.usable(z, torch.tensor(0.1), torch.rand(4, 1), torch.rand(4, 6))
    assert not kernels.usable(z.T.contiguous().T, torch.tensor(0.1))  # not contiguous
    assert not kernels.usable(z, torch.rand(6))  # per coordinate
    assert not kernels.usable(z, torch.tensor(0.1, dtype=torch.float64))  # mixed dtypes
    assert not kernels.usable(z.half())
    assert not kernels.usable(z[None])
    assert not kernels.usable_scalars(z, scalars=(torch.rand(4, 1),))
    assert not kernels.usable_scalars(z, z[:, :5].contiguous(), scalars=(torch.tensor(0.1),))
    with kernels_off():
        assert not kernels.usable(z)


def test_kernels_take_gradients_of_any_layout():
    # Autograd may hand a backward a non-contiguous gradient; the kernels copy it, not lose it.
    z, grad = batch(torch.float64, seed=5)
    grad = grad.T.contiguous().T  # same values, column-major
    assert not grad.is_contiguous()
    theta, a = torch.rand(7, 1, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64)
    compare(lambda z, th: F.shrink(z, th, 5, False), (z, theta), grad, exact={-1, 0})
    compare(F.overshoot, (z, 0.5 * z, a), grad, exact=set())


def test_na_alista_row_norms_gradient_with_and_without_kernels():
    from unrolled.models.na_alista import _RowNorms

    g = torch.Generator().manual_seed(6)
    r, d = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 11, generator=g, dtype=torch.float64)
    for enabled in (True, False):
        kernels.ENABLED = enabled
        try:
            inputs = (r.clone().requires_grad_(), d.clone().requires_grad_())
            assert torch.autograd.gradcheck(_RowNorms.apply, inputs)
            torch.testing.assert_close(_RowNorms.apply(*inputs), torch.stack([r.abs().sum(-1), d.abs().sum(-1)], 1))
        finally:
            kernels.ENABLED = True
