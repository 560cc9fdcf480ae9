"""Pure maths (SPEC §5, §6): soft threshold, support selection, Lasso objective and KKT residual."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from unrolled import functional as F
from unrolled import kernels

D = torch.float64


def t(*v) -> torch.Tensor:
    return torch.tensor(v, dtype=D)


# -- soft threshold ---------------------------------------------------------------------------------


def test_soft_threshold_scalar():
    z = t(-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5)
    assert torch.equal(F.soft_threshold(z, 1.0), t(-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5))
    assert torch.equal(F.soft_threshold(z, t(1.0)), t(-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5))
    assert torch.equal(F.soft_threshold(z, 0.0), z)


def test_soft_threshold_broadcasting():
    z = torch.tensor([[3.0, -2.0, 0.5], [-1.0, 4.0, -6.0]], dtype=D)
    per_coord = F.soft_threshold(z, t(1.0, 2.0, 3.0))
    assert torch.equal(per_coord, torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, -3.0]], dtype=D))
    per_sample = F.soft_threshold(z, torch.tensor([[1.0], [5.0]], dtype=D))
    assert torch.equal(per_sample, torch.tensor([[2.0, -1.0, 0.0], [0.0, 0.0, -1.0]], dtype=D))
    per_entry = F.soft_threshold(z, torch.tensor([[0.0, 2.0, 0.25], [0.5, 1.0, 6.0]], dtype=D))
    assert torch.equal(per_entry, torch.tensor([[3.0, 0.0, 0.25], [-0.5, 3.0, 0.0]], dtype=D))


def test_soft_threshold_gradients():
    z = t(-3.0, -0.5, 0.2, 2.0).requires_grad_()
    theta = t(1.0).requires_grad_()
    F.soft_threshold(z, theta).sum().backward()
    assert torch.equal(z.grad, t(1.0, 0.0, 0.0, 1.0))
    assert float(theta.grad) == 0.0  # -1 from +2.0, +1 from -3.0
    z.grad = theta.grad = None
    (F.soft_threshold(z, theta) * t(1.0, 1.0, 1.0, 5.0)).sum().backward()
    assert float(theta.grad) == 1.0 - 5.0


# -- support selection -------------------------------------------------------------------------------


def test_percentage_keep_hand_values():
    # n=500: index = round((1 - q/100) * 499); keep = 499 - index
    assert F.percentage_keep(1, 500) == 6  # q=1.2: round(493.012) = 493
    assert F.percentage_keep(10, 500) == 60  # q=12: round(439.12) = 439
    assert F.percentage_keep(11, 500) == 65  # q=min(13.2, 13): round(434.13) = 434
    assert F.percentage_keep(16, 500) == 65  # capped at p_max = 13 %
    assert F.percentage_keep(1, 41) == 0  # q=1.2: round(39.52) = 40 = n-1: nothing above the maximum
    assert F.percentage_keep(5, 41) == 2  # q=6: round(37.6) = 38
    assert F.percentage_keep(3, 500, p=1.2, p_max=0.0) == 0  # the reference default p_max=0 disables it


@pytest.mark.parametrize("tt, n", [(1, 500), (4, 500), (11, 500), (5, 41), (9, 37), (13, 1000)])
def test_percentage_keep_matches_nearest_percentile(tt, n):
    a = np.random.default_rng(tt * n).permutation(n).astype(float)  # distinct values
    q = min(1.2 * tt, 13.0)
    cut = np.percentile(a, 100 - q, method="nearest")
    assert F.percentage_keep(tt, n) == int((a > cut).sum())


def test_count_schedule_hand_values():
    assert F.count_schedule(10, 4) == [3, 6, 9, 12]  # floor(12/4)=3 ... 12
    assert F.count_schedule(5, 3) == [2, 4, 6]
    assert F.count_schedule(50, 1) == [60]
    # s=50, K=16: linspace(3, 60, 16) = 3 + 3.8 k, truncated
    assert F.count_schedule(50, 16) == [3, 6, 10, 14, 18, 22, 25, 29, 33, 37, 41, 44, 48, 52, 56, 60]


Z = t(0.5, -3.0, 2.0, 0.1, -1.0, 4.0)  # |z| descending: 4 (i5), 3 (i1), 2 (i2), 1 (i4), 0.5 (i0), 0.1 (i3)


def test_support_mask_hand_vectors():
    assert F.support_mask(Z, 2).tolist() == [False, True, False, False, False, True]
    assert F.support_mask(Z, 3).tolist() == [False, True, True, False, False, True]
    assert F.support_mask(Z, 0).tolist() == [False] * 6
    assert F.support_mask(Z, 6).tolist() == [True] * 6
    assert F.support_mask(Z, 2, theta=3.5).tolist() == [False, False, False, False, False, True]
    # ties at the cut: 'strictly above' the (keep+1)-th largest lets fewer entries through
    assert F.support_mask(t(2.0, -2.0, 1.0), 1).tolist() == [False, False, False]


def test_percentage_form_hand_vectors():
    # keep=2 entries (|z| = 4, 3) bypass if also |z| > theta; the rest is soft-thresholded.
    assert torch.equal(F.shrink(Z, 1.5, keep=2, with_theta=True), t(0.0, -3.0, 0.5, 0.0, 0.0, 4.0))
    assert torch.equal(F.shrink(Z, 3.5, keep=2, with_theta=True), t(0.0, 0.0, 0.0, 0.0, 0.0, 4.0))
    assert torch.equal(F.shrink(Z, 1.5, keep=3, with_theta=True), t(0.0, -3.0, 2.0, 0.0, 0.0, 4.0))
    assert torch.equal(F.shrink(Z, 1.5, keep=0), F.soft_threshold(Z, 1.5))


def test_count_form_hand_vectors():
    # Count form (NA-ALISTA): entries strictly larger than the p_k-th largest, no theta test.
    # p_k = 3: the 3rd largest |z| is 2, so |z| = 4, 3 bypass; models pass keep = p_k - 1.
    assert torch.equal(F.shrink(Z, 3.5, keep=3 - 1, with_theta=False), t(0.0, -3.0, 0.0, 0.0, 0.0, 4.0))
    assert torch.equal(F.shrink(Z, 1.5, keep=3, with_theta=False), t(0.0, -3.0, 2.0, 0.0, 0.0, 4.0))


def test_support_selection_per_sample_and_with_tensor_theta():
    z = torch.stack([Z, -Z.flip(0)])
    theta = torch.tensor([[1.5], [3.5]], dtype=D)
    out = F.shrink(z, theta, keep=2, with_theta=True)
    assert torch.equal(out[0], t(0.0, -3.0, 0.5, 0.0, 0.0, 4.0))
    assert torch.equal(out[1], -t(0.0, 0.0, 0.0, 0.0, 0.0, 4.0).flip(0))


def test_support_mask_carries_no_gradient():
    z = Z.clone().requires_grad_()
    theta = t(1.5).requires_grad_()
    F.shrink(z, theta, keep=2, with_theta=True).sum().backward()
    # bypassed (i1, i5): 1; thresholded: 1 where |z| > theta (i2) else 0
    assert torch.equal(z.grad, t(0.0, 1.0, 1.0, 0.0, 0.0, 1.0))
    assert float(theta.grad) == -1.0  # only from the thresholded +2.0; bypassed entries give none
    assert not F.support_mask(z, 2).requires_grad

    theta_c = torch.full((6,), 1.5, dtype=D, requires_grad=True)
    F.shrink(Z, theta_c, keep=2, with_theta=False).sum().backward()
    assert torch.equal(theta_c.grad, t(0.0, 0.0, -1.0, 0.0, 0.0, 0.0))


# -- steps, objective, KKT ----------------------------------------------------------------------------


def test_gradient_and_pgd_step_match_matrix_form():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(23, 41, generator=g, dtype=D)
    W = torch.randn(23, 41, generator=g, dtype=D)
    x, y = torch.randn(5, 41, generator=g, dtype=D), torch.randn(5, 23, generator=g, dtype=D)
    expect = (x.T + 0.3 * W.T @ (y.T - A @ x.T)).T
    torch.testing.assert_close(F.gradient_step(x, y, A, W, 0.3), expect, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(F.pgd_step(x, y, A, W, 0.3, 0.7), F.soft_threshold(expect, 0.7),
                               rtol=1e-12, atol=1e-12)


def test_fista_momentum():
    t1, b1 = F.fista_momentum(1.0)
    assert t1 == pytest.approx((1 + 5 ** 0.5) / 2, rel=1e-15) and b1 == 0.0
    t2, b2 = F.fista_momentum(t1)
    assert t2 == pytest.approx((1 + (1 + 4 * t1 * t1) ** 0.5) / 2, rel=1e-15)
    assert b2 == pytest.approx((t1 - 1) / t2, rel=1e-15)


def test_lasso_objective_and_kkt_hand_values():
    A = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=D)
    y = t(3.0, 2.0)[None]
    x = t(1.0, 0.0)[None]
    # r = (2, 2): F = 4 + lam * 1
    assert float(F.lasso_objective(x, y, A, 0.5)) == 4.5
    # g = A^T (Ax - y) = (-2, -4): on-support |g1 + lam| = 1.5, off-support |g2| - lam = 3.5
    assert float(F.kkt_residual(x, y, A, 0.5)) == 3.5
    # the solution: x1 = 3 - lam, x2 = (2*2 - lam)/4 for lam < 4
    lam = 0.5
    xs = t(3.0 - lam, (4.0 - lam) / 4.0)[None]
    assert float(F.kkt_residual(xs, y, A, lam)) < 1e-15
    assert float(F.kkt_residual(torch.zeros(1, 2, dtype=D), y, A, 10.0)) == 0.0  # lam >= ||A^T y||_inf


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kth_largest_matches_topk(dtype):
    # The CPU path (np.partition) must give exactly the value torch.topk gives, ties included.
    g = torch.Generator().manual_seed(5)
    a = torch.randn(37, 41, generator=g, dtype=dtype).abs()
    a[0, :5] = a[0, 5]  # ties
    for k in (1, 2, 6, 20, 41):
        expected = a.topk(k, dim=-1).values[:, -1:]
        assert torch.equal(F.kth_largest(a, k), expected)
        scratch = a.clone()
        assert torch.equal(F.kth_largest(scratch, k, overwrite=True), expected)  # reorders scratch's rows
        assert torch.equal(scratch.sort(-1).values, a.sort(-1).values)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_selection_cut_skips_rows_without_changing_the_level(dtype):
    # With a row threshold, rows where at most `keep` entries exceed theta get the level theta
    # without a selection; the level must be max(kth largest, theta) in every row, ties included.
    g = torch.Generator().manual_seed(11)
    a = torch.randn(37, 41, generator=g, dtype=dtype).abs()
    a[0, :6] = 0.7  # ties at the threshold
    a[1] = 0.0
    for theta in (0.7, torch.tensor(0.7, dtype=dtype), 0.2 + 2 * torch.rand(37, 1, generator=g, dtype=dtype),
                  torch.tensor(-0.1, dtype=dtype)):
        counts = kernels.count_over(a, theta)
        assert torch.equal(torch.from_numpy(counts), (a > torch.as_tensor(theta, dtype=dtype)).sum(-1))
        for keep in (0, 1, 5, 6, 12, 40):
            expected = torch.maximum(a.topk(keep + 1, dim=-1).values[:, -1:], torch.as_tensor(theta, dtype=dtype))
            assert torch.equal(F.selection_cut(a, keep, theta), expected)
            assert torch.equal(F.selection_cut(a.clone(), keep, theta, overwrite=True), expected)
    # the short cuts were taken: rows without a selection, and selections among a shortlist
    high = 1.5 * torch.ones(37, 1, dtype=dtype)
    counts = kernels.count_over(a, high)
    assert (counts <= 5).any() and (counts > 5).any() and counts.max() <= 41 // 2
    expected = torch.maximum(a.topk(6, dim=-1).values[:, -1:], high)
    assert torch.equal(F.selection_cut(a, 5, high), expected)


@pytest.mark.parametrize("theta_shape", [(), (41,), (7, 1), (7, 41)])
@pytest.mark.parametrize("keep", [0, 5])
def test_shrink_gradient_matches_finite_differences(theta_shape, keep):
    # The custom backward of the soft threshold (with and without a bypass mask) against
    # torch.autograd.gradcheck in float64 (default tolerances: eps 1e-6, atol 1e-5, rtol 1e-3).
    g = torch.Generator().manual_seed(3)
    z = torch.randn(7, 41, generator=g, dtype=torch.float64).requires_grad_()
    theta = (0.3 + 0.4 * torch.rand(theta_shape, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda z, th: F.shrink(z, th, keep, True), (z, theta))
    # ... and the values equal the clamp formula with the mask
    out = F.shrink(z, theta, keep, True)
    mask = F.support_mask(z, keep, theta) if keep else torch.zeros_like(z, dtype=torch.bool)
    ref = z - torch.clamp(z, -theta, theta).masked_fill(mask, 0.0)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("gamma", [0.3, (), (7, 1), (41,), (7, 41)])
@pytest.mark.parametrize("with_base", [False, True])
def test_gradient_step_backward_matches_finite_differences(gamma, with_base):
    # The hand-written backward of the training-mode gradient step, for every input.
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(7, 41, generator=g, dtype=D), torch.randn(7, 23, generator=g, dtype=D)
    A, W = torch.randn(23, 41, generator=g, dtype=D), torch.randn(23, 41, generator=g, dtype=D)
    base = torch.randn(7, 41, generator=g, dtype=D)
    inputs = [v.requires_grad_() for v in (x, y, A, W, base)]
    if not isinstance(gamma, float):
        gamma = (0.2 + torch.rand(gamma, generator=g, dtype=D)).requires_grad_()
        inputs.append(gamma)

    def step(x, y, A, W, base, *rest):
        return F.gradient_step(x, y, A, W, rest[0] if rest else gamma, base if with_base else None)

    assert torch.autograd.gradcheck(step, inputs)
    with torch.no_grad():  # and the formula, with the base in front
        z = x + (y - x @ A.T) @ W * gamma
        torch.testing.assert_close(step(*inputs), z + base - x if with_base else z, rtol=1e-12, atol=1e-12)


def test_training_and_inference_steps_give_the_same_bits():
    g = torch.Generator().manual_seed(6)
    A, W = torch.randn(25, 51, generator=g), torch.randn(25, 51, generator=g)
    x, y = torch.randn(9, 51, generator=g), torch.randn(9, 25, generator=g)
    for gamma, theta in ((torch.tensor(0.7), torch.tensor(0.2)), (torch.rand(9, 1, generator=g), torch.rand(9, 1))):
        for keep, with_theta in ((0, True), (6, True), (6, False)):
            with torch.no_grad():
                ref = F.pgd_step(x, y, A, W, gamma, theta, keep, with_theta)
            out = F.pgd_step(x, y, A, W, gamma.requires_grad_(), theta.requires_grad_(), keep, with_theta)
            assert torch.equal(out, ref)
            gamma, theta = gamma.detach(), theta.detach()


def test_aglista_gates_match_their_formulas_and_finite_differences():
    g = torch.Generator().manual_seed(8)
    x, x_new = torch.randn(6, 13, generator=g, dtype=D), torch.randn(6, 13, generator=g, dtype=D)
    x[0, :3] = 0.0  # |x| at its kink, as at layer 1
    c, v, a = t(0.3), t(1.7), t(0.05)
    torch.testing.assert_close(F.gain_gate(x, c, v), x * (1 + c * torch.exp(-v * x.abs())), rtol=1e-14, atol=0)
    o = 1 + a / ((x_new - x).abs() + 0.01)
    torch.testing.assert_close(F.overshoot(x_new, x, a), o * x_new + (1 - o) * x, rtol=1e-12, atol=1e-14)
    x[0, :3] = 0.5  # finite differences need distance from the kink
    inputs = [v.clone().requires_grad_() for v in (x, c, v)]
    assert torch.autograd.gradcheck(F.gain_gate, inputs)
    inputs = [v.clone().requires_grad_() for v in (x_new, x, a)]
    assert torch.autograd.gradcheck(F.overshoot, inputs)


def test_kth_largest_row_parallel_matches_topk():
    # Large batches are split by rows over the intra-op threads: the same values as topk.
    threads = torch.get_num_threads()
    a = torch.randn(4099, 37, generator=torch.Generator().manual_seed(9)).abs()
    try:
        torch.set_num_threads(3)
        got = F.kth_largest(a, 7)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(got, a.topk(7, dim=-1).values[:, -1:])


def test_aglista_gates_give_the_same_bits_with_and_without_autograd():
    g = torch.Generator().manual_seed(10)
    x, x_new = torch.randn(6, 13, generator=g), torch.randn(6, 13, generator=g)
    c, v, a = torch.tensor(0.3), torch.tensor(1.7), torch.tensor(0.05)
    with torch.no_grad():
        gain, over = F.gain_gate(x, c, v), F.overshoot(x_new, x, a)
    assert torch.equal(gain, F.gain_gate(x, c.requires_grad_(), v))
    assert torch.equal(over, F.overshoot(x_new, x, a.requires_grad_()))


def test_adaptive_threshold_matches_its_formula_finite_differences_and_no_grad_bits():
    g = torch.Generator().manual_seed(12)
    x = torch.randn(6, 13, generator=g, dtype=D)
    x[0, :3] = 0.0  # |x| at its kink: autograd's abs gives 0 there, so must we
    theta = t(0.4)
    torch.testing.assert_close(F.adaptive_threshold(x, theta, 0.1), theta / (x.abs() / 0.1 + 1), rtol=1e-14, atol=0)
    xg, tg = x.clone().requires_grad_(), theta.clone().requires_grad_()
    F.adaptive_threshold(xg, tg, 0.1).sum().backward()
    assert torch.all(xg.grad[0, :3] == 0)
    x[0, :3] = 0.5  # finite differences need distance from the kink
    assert torch.autograd.gradcheck(lambda x, th: F.adaptive_threshold(x, th, 0.1),
                                    [x.clone().requires_grad_(), theta.clone().requires_grad_()])
    x32, th32 = x.float(), theta.float()
    with torch.no_grad():
        ref = F.adaptive_threshold(x32, th32, 0.1)
    assert torch.equal(ref, F.adaptive_threshold(x32, th32.requires_grad_(), 0.1))
