"""Analytic W of ALISTA (docs/spec.md §4): closed form = PGD optimum, constraint, optimality, coherence."""

from __future__ import annotations

import warnings

import pytest
import torch

from unrolled import Problem, ProblemSpec, UsageError, analytic_weights, coherence
from unrolled.analytic import closed_form, objective, pgd, projected_gradient

D = torch.float64


@pytest.fixture(scope="module")
def A():
    return Problem(ProblemSpec(m=31, n=61, seed=0)).A


def test_closed_form_satisfies_constraint(A):
    W, rank = closed_form(A)
    assert W.shape == A.shape and W.dtype == D and rank == 31
    torch.testing.assert_close(torch.diagonal(W.T @ A), torch.ones(61, dtype=D), rtol=0, atol=1e-10)


def test_closed_form_equals_pgd(A):
    cf = analytic_weights(A, "closed-form")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # full rank: no warning
        pg = analytic_weights(A, "pgd", max_iter=5000)
    assert 0 < pg.iterations < 5000 and pg.converged and pg.change < 1e-12  # stopped on the relative-change test
    assert abs(pg.objective - cf.objective) <= 1e-6 * cf.objective
    torch.testing.assert_close(torch.diagonal(pg.W.T @ A), torch.ones(61, dtype=D), rtol=0, atol=1e-10)
    # the optimum is unique for full-rank A: the matrices agree too
    assert float((pg.W - cf.W).norm() / cf.W.norm()) < 1e-6
    assert cf.objective <= pg.objective * (1 + 1e-12)


def test_closed_form_is_optimal_against_feasible_perturbations(A):
    W = closed_form(A)[0]
    f0 = objective(W, A)
    g = torch.Generator().manual_seed(1)
    norms2 = (A * A).sum(0)
    for scale in (1e-4, 1e-2, 1.0):
        Dlt = scale * torch.randn(A.shape, generator=g, dtype=D)
        Dlt = Dlt - A * ((A * Dlt).sum(0) / norms2)  # keep a_i^T (w_i + d_i) = 1
        Wp = W + Dlt
        torch.testing.assert_close(torch.diagonal(Wp.T @ A), torch.ones(61, dtype=D), rtol=0, atol=1e-10)
        assert objective(Wp, A) >= f0 * (1 - 1e-12)
        assert objective(Wp, A) > f0  # strictly convex on the feasible set when A A^T is invertible
    # the reference algorithm stopped early is no better, and says it stopped early
    with pytest.warns(UserWarning, match="PGD stopped at max_iter=20 .* not converged"):
        W20 = projected_gradient(A, max_iter=20)[0]
    assert objective(W20, A) > f0


def test_objective_and_coherence_definitions():
    A = torch.tensor([[1.0, 0.6, 0.0], [0.0, 0.8, 1.0]], dtype=D)
    # A^T A off-diagonal: (0,1)=0.6, (0,2)=0, (1,2)=0.8, each twice
    assert objective(A, A) == pytest.approx(2 * (0.36 + 0.64), rel=1e-14)
    assert coherence(A, A) == pytest.approx(0.8, rel=1e-14)
    W = torch.tensor([[1.0, 0.0, -1.0], [0.5, 1.25, 1.0]], dtype=D)
    G = W.T @ A
    expect = max(abs(float(G[i, j])) for i in range(3) for j in range(3) if i != j)
    assert coherence(W, A) == pytest.approx(expect, rel=1e-14)


def test_lowrank_uses_pseudo_inverse_with_warning():
    A = Problem(ProblemSpec(m=31, n=61, matrix="lowrank", rank=20, seed=3)).A
    with pytest.warns(UserWarning, match="rank-deficient.*pseudo-inverse"):
        res = analytic_weights(A)
    assert res.rank == 20 and res.rank_deficient
    torch.testing.assert_close(torch.diagonal(res.W.T @ A), torch.ones(61, dtype=D), rtol=0, atol=1e-10)
    assert torch.isfinite(res.W).all() and res.objective == res.objective and res.objective < float("inf")
    with pytest.warns(UserWarning, match="rank-deficient"):
        pg = analytic_weights(A, "pgd", max_iter=3000)
    assert res.objective <= pg.objective * (1 + 1e-9)


def test_analytic_w_lowers_coherence():
    A = Problem(ProblemSpec(m=250, n=500, seed=0)).A
    res = analytic_weights(A)
    assert res.coherence < coherence(A, A)
    assert res.objective < objective(A, A)
    assert res.coherence == pytest.approx(coherence(res.W, A), rel=1e-14)


def test_float32_input_gives_float32_w(A):
    res = analytic_weights(A.float())
    assert res.W.dtype == torch.float32
    torch.testing.assert_close(torch.diagonal(res.W.T @ A.float()), torch.ones(61), rtol=0, atol=1e-5)


def test_unknown_method_lists_valid():
    with pytest.raises(UsageError, match="valid: closed-form, pgd"):
        analytic_weights(torch.eye(3, dtype=D), "foo")


def scaled(A, norm2):
    return A * (norm2 ** 0.5 / float(torch.linalg.matrix_norm(A, ord=2)))


@pytest.mark.parametrize("columns", ["uniform", "unequal"])
def test_pgd_step_from_the_norm_converges_where_the_reference_step_diverged(A, columns):
    """||A||_2^2 = 100 (columns of norm about 4, or of norms 1..10 before scaling): the reference's fixed
    step 0.1 is outside (0, 2/L) = (0, 0.02) and gave NaN after 1000 iterations; the default 1/L
    converges (measured 427 and 1123 iterations) to the closed form's objective."""
    B = A if columns == "uniform" else A * torch.linspace(1, 10, 61, dtype=D)
    B = scaled(B, 100.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = analytic_weights(B, "pgd", max_iter=3000)
    assert res.converged and res.change < 1e-12 and res.iterations < 3000
    assert torch.isfinite(res.W).all()
    cf = analytic_weights(B)
    assert abs(res.objective - cf.objective) <= 1e-8 * cf.objective
    torch.testing.assert_close(torch.diagonal(res.W.T @ B), torch.ones(61, dtype=D), rtol=0, atol=1e-10)
    assert pgd(B).step == pytest.approx(1 / 100.0, rel=1e-12)
    with pytest.raises(UsageError, match=r"step=0.1 diverges .* 2/\|\|A\|\|\^2 = 0.02"):
        pgd(B, step=0.1)


def test_reference_step_is_kept_where_stable(A):
    # ||A||^2 ~ 5.5 < 20: step 0.1 is allowed and reaches the same optimum as 1/L, in more iterations
    ref, safe = pgd(A, step=0.1, max_iter=5000), pgd(A, max_iter=5000)
    assert ref.converged and safe.converged and safe.iterations < ref.iterations
    assert abs(objective(ref.W, A) - objective(safe.W, A)) <= 1e-9 * objective(safe.W, A)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_a_is_a_one_line_error(A, bad):
    B = A.clone()
    B[3, 5] = bad
    for method in ("pgd", "closed-form"):
        with pytest.raises(UsageError, match="A contains NaN or Inf") as err:
            analytic_weights(B, method)
        assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="A is zero"):
        pgd(torch.zeros(3, 4, dtype=D))


def test_closed_form_reports_no_iterations(A):
    res = analytic_weights(A)
    assert res.iterations == 0 and res.converged and res.change == 0.0
