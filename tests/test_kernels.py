"""The fused CPU kernels against the PyTorch forms they replace (unrolled/kernels.py)."""

from __future__ import annotations

import contextlib

import numpy as np
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


def close(a, b, loose=1):
    """Equal to rounding: a few units in the last place of the dtype (times ``loose``)."""
    torch.testing.assert_close(a, b, rtol=loose * (1e-5 if a.dtype == torch.float32 else 1e-12), atol=loose * 1e-6)


def compare(fn, inputs, grad, exact, loose=1):
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
            close(k, t, loose)


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
@pytest.mark.parametrize("gamma_shape, theta_shape", [((), ()), ((7, 1), (7, 1)), ((7, 1), (7, 41))])
def test_step_shrink_kernel_matches_the_pytorch_form(dtype, gamma_shape, theta_shape):
    x, grad = batch(dtype, seed=7)
    d = torch.randn(x.shape, generator=torch.Generator().manual_seed(8), dtype=dtype)
    gen = torch.Generator().manual_seed(9)
    gamma = 0.5 + torch.rand(gamma_shape, generator=gen, dtype=dtype)
    theta = 0.3 + torch.rand(theta_shape, generator=gen, dtype=dtype)
    for keep, with_theta in ((0, True), (5, False), (5, True)):
        # out, grad x = gz, grad d = gz gamma (and a per-entry theta's gradient) have no sums
        exact = {-1, 0, 2, 3} if theta_shape == (7, 41) else {-1, 0, 2}
        compare(lambda x, g, d, th, k=keep, w=with_theta: F.step_shrink(x, g, d, th, k, w),
                (x, gamma, d, theta), grad, exact)


def gated_inputs(dtype, seed=2, rows=7, m=13, n=41):
    g = torch.Generator().manual_seed(seed)
    x, grad = batch(dtype, rows, n, seed)
    x[torch.rand(rows, n, generator=g) < 0.5] = 0.0  # AGLISTA's iterates are sparse
    A, W = (torch.randn(m, n, generator=g, dtype=dtype) / m ** 0.5 for _ in range(2))
    y = torch.randn(rows, m, generator=g, dtype=dtype)
    params = tuple(torch.tensor(s, dtype=dtype) for s in (0.3, 1.7, 0.8, 0.2, 0.05))  # c, v, gamma, theta, a
    return x, y, A, W, params, grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("keep, with_theta", [(0, True), (5, True), (5, False)])
def test_gated_step_kernels_match_the_pytorch_composition(dtype, keep, with_theta):
    x, y, A, W, params, grad = gated_inputs(dtype)
    x[2, :5] = 0.2 * torch.sign(x[2, :5])  # the overshoot's d = 0 where shrink(z) = x
    assert kernels.usable_scalars(x, scalars=params)
    # The overshoot's derivative a eps / (|d| + eps)^2 scales a rounding difference in d by up to
    # a / eps = 5, and the sums run in another order (float64 is the exactness check).
    compare(lambda x, *p: F.gated_step(x, y, A, W, *p, keep, with_theta), (x, *params), grad, exact=set(),
            loose=20 if dtype == torch.float32 else 1)
    with torch.no_grad():  # inference takes the same kernels: the same bits as training
        out = F.gated_step(x, y, A, W, *params, keep, with_theta)
    assert torch.equal(out, F.gated_step(x, y, A, W, *(p.requires_grad_() for p in params), keep, with_theta))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("eps", [None, 0.1])  # ALISTA, ALISTA-AT
@pytest.mark.parametrize("keep, with_theta", [(0, True), (5, True), (5, False)])
def test_pgd_step_node_matches_the_pytorch_composition(dtype, eps, keep, with_theta):
    x, y, A, W, params, grad = gated_inputs(dtype, seed=12)
    gamma, theta = params[2], params[3]
    assert F._fixed_operators(x, y, A, W, gamma, theta)
    compare(lambda x, g, th: F.pgd_step(x, y, A, W, g, th, keep, with_theta, eps), (x, gamma, theta), grad,
            exact={-1}, loose=5 if dtype == torch.float32 else 1)  # the forward is the same operations
    if dtype == torch.float64:
        inputs = tuple(v.clone().requires_grad_() for v in (x, y, gamma, theta))
        step = lambda x, y, g, th: F.pgd_step(x, y, A, W, g, th, keep, with_theta, eps)  # noqa: E731
        assert torch.autograd.gradcheck(step, inputs)


def test_exp_kernel_is_within_one_unit_in_the_last_place():
    # float32 exp of the gate kernels (a polynomial, not libm) over its whole range
    for v, top in ((1.0, 87.3), (-1.0, 88.3)):  # exp(-u) and exp(u)
        u = torch.linspace(0, top, 400_001)
        out = torch.empty_like(u)
        kernels._exp_neg_abs(u.numpy(), np.float32(v), out.numpy())
        exact = torch.exp(u.double().abs() * -v)
        ulp = torch.from_numpy(np.spacing(exact.float().numpy())).double()
        assert ((out.double() - exact).abs() / ulp).max() <= 1.05
    out = torch.empty(3)
    kernels._exp_neg_abs(np.array([0.0, 200.0, np.inf], np.float32), np.float32(1), out.numpy())
    tiny = torch.finfo(torch.float32).tiny  # clamped at exp(-87.3): the smallest normal floats
    assert out[0] == 1 and tiny <= out[1] < 1.3e-38 and out[2] == out[1]


def test_kernel_gradients_match_finite_differences():
    # gradcheck through the kernels (float64), away from the kinks.
    g = torch.Generator().manual_seed(4)
    z = torch.randn(5, 17, generator=g, dtype=torch.float64)
    for theta in (torch.tensor(0.3, dtype=torch.float64), 0.3 + torch.rand(5, 1, generator=g, dtype=torch.float64)):
        inputs = (z.clone().requires_grad_(), theta.clone().requires_grad_())
        assert kernels.usable(*inputs)
        assert torch.autograd.gradcheck(lambda z, th: F.shrink(z, th, 4, False), inputs)
    x, y, A, W, params, _ = gated_inputs(torch.float64)
    gamma = 0.5 + torch.rand(5, 1, generator=g, dtype=torch.float64)
    d = torch.randn(z.shape, generator=g, dtype=z.dtype)
    inputs = (z.clone().requires_grad_(), gamma.requires_grad_(), d.requires_grad_(), theta.clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda *a: F.step_shrink(*a, 4, False), inputs)
    for keep, with_theta in ((0, True), (5, True), (5, False)):
        inputs = (x.clone().requires_grad_(), y.clone().requires_grad_(), *(p.clone().requires_grad_() for p in params))
        step = lambda x, y, *p, k=keep, w=with_theta: F.gated_step(x, y, A, W, *p, k, w)  # noqa: E731
        assert torch.autograd.gradcheck(step, inputs)


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
    theta = torch.rand(7, 1, dtype=torch.float64)
    compare(lambda z, th: F.shrink(z, th, 5, False), (z, theta), grad, exact={-1, 0})
    x, y, A, W, params, _ = gated_inputs(torch.float64)
    compare(lambda x, *p: F.gated_step(x, y, A, W, *p, 5), (x, *params), grad, exact=set())


@pytest.mark.parametrize("inputs", ["both", "r", "u"])
def test_na_alista_residual_node_gradient_with_and_without_kernels(inputs):
    from unrolled.models.na_alista import _Residual

    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(5, 11, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)
    A, W = torch.randn(7, 11, generator=g, dtype=torch.float64), torch.randn(7, 11, generator=g, dtype=torch.float64)
    r = y - x @ A.T
    d = r @ W
    features = {"both": [r, d], "r": [r], "u": [d]}[inputs]
    scale = torch.tensor([2.0, 0.5], dtype=torch.float64)[:len(features)]
    for enabled in (True, False):
        kernels.ENABLED = enabled
        try:
            leaves = (x.clone().requires_grad_(), y.clone().requires_grad_())
            assert torch.autograd.gradcheck(lambda x, y: _Residual.apply(x, y, A, W, inputs, scale), leaves)
            got_d, got_f = _Residual.apply(*leaves, A, W, inputs, scale)
            torch.testing.assert_close(got_d, d, rtol=1e-12, atol=1e-12)
            want_f = torch.stack([v.abs().sum(-1) for v in features], 1) / scale
            torch.testing.assert_close(got_f, want_f, rtol=1e-12, atol=1e-12)
        finally:
            kernels.ENABLED = True


def test_na_alista_softsign_head_equals_linear_then_softsign():
    from unrolled.models.na_alista import _SoftsignHead

    g = torch.Generator().manual_seed(7)
    c, U = torch.randn(5, 9, generator=g, dtype=torch.float64), torch.randn(2, 9, generator=g, dtype=torch.float64)
    gamma, theta = _SoftsignHead.apply(c, U)
    out = torch.nn.functional.softsign(torch.nn.functional.linear(c, U))
    assert torch.equal(gamma, out[:, 1:]) and torch.equal(theta, out[:, :1])
    assert torch.autograd.gradcheck(_SoftsignHead.apply, (c.requires_grad_(), U.requires_grad_()))
