"""The Numba kernels (unrolled/ops/kernels/) against the PyTorch forms of the same fast nodes.

Each test runs an op under the ``numba`` backend and under ``torch`` (the same autograd nodes
without kernels, what CUDA runs). Outputs and gradients listed as exact have the same bits;
the rest agree to rounding (``close``: rtol 1e-12 in float64, 1e-5 in float32, times a stated
``loose`` factor): kernels fuse multiply-adds and sum in float64. tests/test_ops.py checks both
against the reference in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

from unrolled import ops  # noqa: E402
from unrolled.ops import Cut, kernels  # noqa: E402
from unrolled.ops.fast.shrinkage import selection_cut  # noqa: E402
from unrolled.ops.fast.steps import _fixed_operators  # noqa: E402

D = torch.float64
DTYPES = [torch.float32, torch.float64]
CUTS = [None, Cut(5, True), Cut(5, False)]
CUT_IDS = ["plain", "percentage", "count"]


@pytest.fixture(autouse=True)
def numba_backend():
    with ops.backend("numba"):
        yield


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def run(fn, inputs, grad):
    """``fn(*inputs)`` and the gradients of ``(out * grad).sum()`` for every input."""
    leaves = [v.detach().clone().requires_grad_() for v in inputs]
    out = fn(*leaves)
    return out.detach(), list(torch.autograd.grad(out, leaves, grad))


def close(a, b, loose=1):
    """Equal to rounding: a few units in the last place of the dtype (times ``loose``)."""
    torch.testing.assert_close(a, b, rtol=loose * (1e-5 if a.dtype == torch.float32 else 1e-12), atol=loose * 1e-6)


def compare(fn, inputs, grad, exact, loose=1):
    """``numba`` against ``torch``: the output (-1) and the gradients whose indices are in ``exact``
    have the same bits, the rest agree to rounding (fused multiply-adds, float64 sums)."""
    out_k, grads_k = run(fn, inputs, grad)
    with ops.backend("torch"):
        out_t, grads_t = run(fn, inputs, grad)
    for i, (k, t) in enumerate(zip([*grads_k, out_k], [*grads_t, out_t])):
        i = -1 if i == len(grads_k) else i
        if i in exact:
            assert torch.equal(k, t), f"{'output' if i < 0 else f'gradient {i}'} differs"
        else:
            close(k, t, loose)


def batch(dtype, rows=7, n=41, seed=0):
    g = gen(seed)
    z = torch.randn(rows, n, generator=g, dtype=dtype)
    z[0, :4] = 0.0  # exact zeros
    z[1, :3] = torch.tensor([0.5, -0.5, 0.5], dtype=dtype)  # ties (and |z| = theta below)
    return z, torch.randn(rows, n, generator=g, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("theta_shape", [(), (7, 1), (7, 41)])
@pytest.mark.parametrize("cut", [*CUTS, Cut(41, False), Cut(3, True)], ids=[*CUT_IDS, "count-all", "percentage-3"])
def test_shrink_kernel_matches_the_pytorch_form(dtype, theta_shape, cut):
    z, grad = batch(dtype)
    theta = torch.full(theta_shape, 0.5, dtype=dtype)
    if theta_shape:
        theta = theta + 0.3 * torch.rand(theta_shape, generator=gen(1), dtype=dtype)
        theta.view(-1)[0] = -0.1  # a negative threshold: every entry passes, zeros included
    assert kernels.usable(z, theta)
    exact = {-1, 0, 1} if theta_shape == (7, 41) else {-1, 0}  # a per-entry theta's gradient has no sum
    compare(lambda z, th: ops.shrink(z, th, cut), (z, theta), grad, exact)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma_shape, theta_shape", [((), ()), ((7, 1), (7, 1)), ((7, 1), (7, 41))])
def test_step_shrink_kernel_matches_the_pytorch_form(dtype, gamma_shape, theta_shape):
    x, grad = batch(dtype, seed=7)
    d = torch.randn(x.shape, generator=gen(8), dtype=dtype)
    g = gen(9)
    gamma = 0.5 + torch.rand(gamma_shape, generator=g, dtype=dtype)
    theta = 0.3 + torch.rand(theta_shape, generator=g, dtype=dtype)
    for cut in CUTS:
        # out, grad x = gz, grad d = gz gamma (and a per-entry theta's gradient) have no sums
        exact = {-1, 0, 2, 3} if theta_shape == (7, 41) else {-1, 0, 2}
        compare(lambda x, g, d, th, c=cut: ops.step_shrink(x, g, d, th, c), (x, gamma, d, theta), grad, exact)


def gated_inputs(dtype, seed=2, rows=7, m=13, n=41):
    g = gen(seed)
    x, grad = batch(dtype, rows, n, seed)
    x[torch.rand(rows, n, generator=g) < 0.5] = 0.0  # AGLISTA's iterates are sparse
    A, W = (torch.randn(m, n, generator=g, dtype=dtype) / m ** 0.5 for _ in range(2))
    y = torch.randn(rows, m, generator=g, dtype=dtype)
    params = tuple(torch.tensor(s, dtype=dtype) for s in (0.3, 1.7, 0.8, 0.2, 0.05))  # c, v, gamma, theta, a
    return x, y, A, W, params, grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cut", CUTS, ids=CUT_IDS)
def test_gated_step_kernels_match_the_pytorch_composition(dtype, cut):
    x, y, A, W, params, grad = gated_inputs(dtype)
    x[2, :5] = 0.2 * torch.sign(x[2, :5])  # the overshoot's d = 0 where shrink(z) = x
    assert kernels.usable_scalars(x, scalars=params)
    # The overshoot's derivative a eps / (|d| + eps)^2 scales a rounding difference in d by up to
    # a / eps = 5, and the sums run in another order (float64 is the exactness check).
    compare(lambda x, *p: ops.gated_step(x, y, A, W, *p, cut), (x, *params), grad, exact=set(),
            loose=20 if dtype == torch.float32 else 1)
    with torch.no_grad():  # inference takes the same kernels: the same bits as training
        out = ops.gated_step(x, y, A, W, *params, cut)
    assert torch.equal(out, ops.gated_step(x, y, A, W, *(p.requires_grad_() for p in params), cut))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [None, 0.1], ids=["alista", "alista-at"])
@pytest.mark.parametrize("cut", CUTS, ids=CUT_IDS)
def test_pgd_step_node_matches_the_pytorch_composition(dtype, eps, cut):
    x, y, A, W, params, grad = gated_inputs(dtype, seed=12)
    gamma, theta = params[2], params[3]
    assert _fixed_operators(x, y, A, W, gamma, theta)
    compare(lambda x, g, th: ops.pgd_step(x, y, A, W, g, th, cut, eps), (x, gamma, theta), grad,
            exact={-1}, loose=5 if dtype == torch.float32 else 1)  # the forward is the same operations


@pytest.mark.parametrize("width", [1, 2])
def test_lstm_kernels_in_float32(width):
    # float32: the kernels' sigmoid uses the polynomial exp (within 1 ulp), the torch form libm's;
    # an LSTM cell's outputs and gradients stay within 1e-5 relative (loose = 1).
    H, g = 15, gen(13)
    inp, h, c = (torch.randn(7, k, generator=g) for k in (width, H, H))
    w = [0.5 * torch.randn(4 * H, k, generator=g) for k in (width, H)] + [torch.randn(4 * H, generator=g)] * 2
    cot = torch.randn(7, H, generator=g)

    def cell(i, h, c, *w):
        h_new, c_new = ops.lstm_cell(i, h, c, ops.lstm_weights(*w))
        return torch.cat([h_new, c_new], 1)

    compare(cell, (inp, h, c, *w), torch.cat([cot, cot.flip(0)], 1), exact=set())


def test_exp_kernel_is_within_one_unit_in_the_last_place():
    # float32 exp of the gate kernels (a polynomial, not libm) over its whole range
    for v, top in ((1.0, 87.3), (-1.0, 88.3)):  # exp(-u) and exp(u)
        u = torch.linspace(0, top, 400_001)
        out = torch.empty_like(u)
        kernels.common._exp_neg_abs(u.numpy(), np.float32(v), out.numpy())
        exact = torch.exp(u.double().abs() * -v)
        ulp = torch.from_numpy(np.spacing(exact.float().numpy())).double()
        assert ((out.double() - exact).abs() / ulp).max() <= 1.05
    out = torch.empty(3)
    kernels.common._exp_neg_abs(np.array([0.0, 200.0, np.inf], np.float32), np.float32(1), out.numpy())
    tiny = torch.finfo(torch.float32).tiny  # clamped at exp(-87.3): the smallest normal floats
    assert out[0] == 1 and tiny <= out[1] < 1.3e-38 and out[2] == out[1]


def test_kernel_gradients_match_finite_differences():
    # gradcheck through the kernels (float64; eps 1e-6, atol 1e-5, rtol 1e-3), away from the kinks.
    g = gen(4)
    z = torch.randn(5, 17, generator=g, dtype=D)
    for theta in (torch.tensor(0.3, dtype=D), 0.3 + torch.rand(5, 1, generator=g, dtype=D)):
        inputs = (z.clone().requires_grad_(), theta.clone().requires_grad_())
        assert kernels.usable(*inputs)
        assert torch.autograd.gradcheck(lambda z, th: ops.shrink(z, th, Cut(4, False)), inputs)
    x, y, A, W, params, _ = gated_inputs(D)
    gamma = 0.5 + torch.rand(5, 1, generator=g, dtype=D)
    d = torch.randn(z.shape, generator=g, dtype=z.dtype)
    inputs = (z.clone().requires_grad_(), gamma.requires_grad_(), d.requires_grad_(), theta.clone().requires_grad_())
    assert torch.autograd.gradcheck(lambda *a: ops.step_shrink(*a, Cut(4, False)), inputs)
    for cut in CUTS:
        inputs = (x.clone().requires_grad_(), y.clone().requires_grad_(), *(p.clone().requires_grad_() for p in params))
        assert torch.autograd.gradcheck(lambda x, y, *p, c=cut: ops.gated_step(x, y, A, W, *p, c), inputs)
        for eps in (None, 0.1):
            inputs = (x.clone().requires_grad_(), y.clone().requires_grad_(), params[2].clone().requires_grad_(),
                      params[3].clone().requires_grad_())
            assert torch.autograd.gradcheck(lambda x, y, g, th, c=cut, e=eps: ops.pgd_step(x, y, A, W, g, th, c, e),
                                            inputs)


def test_usable_refuses_what_the_kernels_do_not_take():
    z = torch.randn(4, 6)
    assert kernels.usable(z, torch.tensor(0.1), torch.rand(4, 1), torch.rand(4, 6))
    assert not kernels.usable(z.T.contiguous().T, torch.tensor(0.1))  # not contiguous
    assert not kernels.usable(z, torch.rand(6))  # per coordinate
    assert not kernels.usable(z, torch.rand(4, 6).T.contiguous().T)  # a per-entry parameter, not contiguous
    assert not kernels.usable(z, torch.tensor(0.1, dtype=D))  # mixed dtypes
    assert not kernels.usable(z.half())
    assert not kernels.usable(z[None])
    assert not kernels.usable(torch.arange(6).reshape(2, 3))  # not floating point
    assert not kernels.usable_scalars(z, scalars=(torch.rand(4, 1),))
    assert not kernels.usable_scalars(z, z[:, :5].contiguous(), scalars=(torch.tensor(0.1),))
    assert kernels.usable_scalars(z, z.clone(), scalars=(torch.tensor(0.1), torch.tensor(0.2)))
    for other in ("torch", "reference"):  # only the numba backend runs kernels
        with ops.backend(other):
            assert not kernels.usable(z) and not kernels.usable_scalars(z, scalars=(torch.tensor(0.1),))
    with ops.backend("fast"):  # the default, with Numba installed
        assert kernels.usable(z)


@pytest.mark.parametrize("dtype", DTYPES)
def test_count_over_and_compact_over(dtype):
    a = torch.randn(9, 23, generator=gen(5), dtype=dtype).abs()
    a[0, :6] = 0.7  # ties at the threshold do not count
    a[1] = 0.0
    for theta in (0.7, torch.tensor(0.7, dtype=dtype), 0.2 + torch.rand(9, 1, generator=gen(6), dtype=dtype),
                  torch.tensor(-0.1, dtype=dtype)):
        th = torch.as_tensor(theta, dtype=dtype)
        over = a > th
        counts = kernels.selection.count_over(a, theta)
        assert counts.dtype == np.int64 and torch.equal(torch.from_numpy(counts), over.sum(-1))
        rows = np.array([0, 3, 8, 1])
        width = int(counts[rows].max()) + 2
        got = kernels.selection.compact_over(a, theta, rows, width, pad=-1.0)
        assert got.shape == (4, width) and got.dtype == a.numpy().dtype
        for i, b in enumerate(rows):  # row b's entries above theta, in order, then the pad
            above = a[b][over[b]].numpy()
            assert np.array_equal(got[i, :len(above)], above) and (got[i, len(above):] == -1.0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_selection_cut_short_cuts_give_the_same_level(dtype):
    # With a row threshold, rows where at most `keep` entries exceed theta get the level theta
    # without a selection, and the others select among their entries above theta alone
    # (count_over, compact_over); the level is max(kth largest, theta) in every row, ties included.
    a = torch.randn(37, 41, generator=gen(11), dtype=dtype).abs()
    a[0, :6] = 0.7
    high = 1.5 * torch.ones(37, 1, dtype=dtype)
    counts = kernels.selection.count_over(a, high)
    assert (counts <= 5).any() and (counts > 5).any() and counts.max() <= 41 // 2  # both short cuts are taken
    for theta in (high, 0.7, torch.tensor(0.05, dtype=dtype)):  # the last: most rows need the full selection
        for keep in (0, 5, 12):
            expected = torch.maximum(a.topk(keep + 1, dim=-1).values[:, -1:], torch.as_tensor(theta, dtype=dtype))
            assert torch.equal(selection_cut(a, keep, theta), expected)
            assert torch.equal(selection_cut(a.clone(), keep, theta, overwrite=True), expected)


def test_kernels_take_gradients_of_any_layout():
    # Autograd may hand a backward a non-contiguous gradient; the kernels copy it, not lose it.
    z, grad = batch(D, seed=5)
    grad = grad.T.contiguous().T  # same values, column-major
    assert not grad.is_contiguous()
    theta = torch.rand(7, 1, dtype=D)
    compare(lambda z, th: ops.shrink(z, th, Cut(5, False)), (z, theta), grad, exact={-1, 0})
    x, y, A, W, params, _ = gated_inputs(D)
    compare(lambda x, *p: ops.gated_step(x, y, A, W, *p, Cut(5, True)), (x, *params), grad, exact=set())
    compare(lambda x, g, th: ops.pgd_step(x, y, A, W, g, th, Cut(5, True), 0.1), (x, params[2], params[3]), grad,
            exact=set())


def layer(name, A, W, cut, x, y):
    """``(fn, inputs)``: one kernel-backed op on the batch ``(x, y)``, its parameters scalars or per sample."""
    c, v, gamma, theta, a = (torch.tensor(s, dtype=D) for s in (0.3, 1.7, 0.8, 0.2, 0.05))
    rows = (len(x), 1)
    if name == "shrink":
        return (lambda z, th: ops.shrink(z, th, cut)), (x, torch.full(rows, 0.2, dtype=D))
    if name == "step_shrink":
        return ((lambda x, g, d, th: ops.step_shrink(x, g, d, th, cut)),
                (x, torch.full(rows, 0.8, dtype=D), x.flip(-1), torch.full(rows, 0.2, dtype=D)))
    if name in ("pgd_step", "alista_at"):
        eps = 0.1 if name == "alista_at" else None
        return (lambda x, y, g, th: ops.pgd_step(x, y, A, W, g, th, cut, eps)), (x, y, gamma, theta)
    if name == "gated_step":
        return (lambda x, y, *p: ops.gated_step(x, y, A, W, *p, cut)), (x, y, c, v, gamma, theta, a)
    if name == "residual":
        return (lambda x, y: ops.residual_features(x, y, A, W, "both", torch.tensor([2.0, 0.5], dtype=D))[1]), (x, y)
    H = x.shape[1]  # lstm: two inputs, the state (h, c) = (x, x reversed)
    weights = [torch.full(s, 0.1, dtype=D) for s in ((4 * H, 2), (4 * H, H), (4 * H,), (4 * H,))]
    return (lambda i, h: ops.lstm_cell(i, h, h.flip(-1), ops.lstm_weights(*weights))[0]), (x[:, :2], x)


LAYERS = [(name, cut) for name in ("shrink", "step_shrink", "pgd_step", "alista_at", "gated_step") for cut in CUTS]
LAYERS += [("residual", None), ("lstm", None)]


@pytest.mark.parametrize("name, cut", LAYERS, ids=[f"{n}-{c.keep if c else 0}{'t' if c and c.above_theta else ''}"
                                                   for n, c in LAYERS])
def test_empty_single_and_strided_batches(name, cut):
    # The kernels take contiguous batches of any size: an empty batch gives an empty output and
    # zero gradients (a per-sample parameter's gradient has zero rows); one sample gives its row
    # of the batch; strided inputs take the torch form. All agree with the reference to 1e-12.
    g = gen(14)
    A, W = (torch.randn(13, 41, generator=g, dtype=D) / 13 ** 0.5 for _ in range(2))
    x, y = torch.randn(7, 41, generator=g, dtype=D), torch.randn(7, 13, generator=g, dtype=D)
    x[x.abs() < 0.3] = 0.0

    def grads(backend, rows):
        fn, inputs = layer(name, A, W, cut, x[rows], y[rows])
        leaves = [v.detach().clone().requires_grad_() for v in inputs]
        with ops.backend(backend):
            out = fn(*leaves)
            return out.detach(), torch.autograd.grad(out, leaves, torch.ones_like(out))

    for rows in (slice(0, 0), slice(2, 3), slice(None)):
        (out, gs), (ref, ref_gs) = grads("numba", rows), grads("reference", rows)
        assert out.shape == ref.shape
        for u, w in zip([out, *gs], [ref, *ref_gs]):
            torch.testing.assert_close(u, w, rtol=1e-12, atol=1e-12)
            if out.numel() == 0:
                assert not w.any()
    with torch.no_grad():
        fn, inputs = layer(name, A, W, cut, x, y)
        whole = fn(*inputs)
        strided = [torch.empty(v.shape[::-1], dtype=v.dtype).T.copy_(v) if v.dim() == 2 else v for v in inputs]
        assert not strided[0].is_contiguous()
        torch.testing.assert_close(fn(*strided), whole, rtol=1e-12, atol=1e-12)
