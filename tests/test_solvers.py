"""Classical Lasso solvers (docs/spec.md §6): monotone descent, KKT optimality, closed forms, tuning, backends."""

from __future__ import annotations

import pytest
import torch

from unrolled import Problem, ProblemSpec, UsageError, ops
from unrolled import solvers as S
from unrolled.ops import Cut, Selection, reference

D = torch.float64
ALGOS = ("ista", "fista", "oista", "ista-bt")
FAST = ["torch", pytest.param("numba", marks=pytest.mark.skipif(not ops.numba_available(), reason="Numba missing"))]


@pytest.fixture(scope="module")
def data():
    """A small well-conditioned problem (31x37, sigma_min(A) = 0.15) with 20 noisy signals."""
    p = Problem(ProblemSpec(m=31, n=37, p=0.1, snr=30.0, seed=3, val_size=20, test_size=20))
    x, y = p.validation(D)
    return p.A, x, y


@pytest.mark.parametrize("algo", ["ista", "ista-bt", "oista"])
@pytest.mark.parametrize("lam", [0.01, 0.1, 0.5])
def test_objective_never_increases(data, algo, lam):
    # ISTA with step 1/L, Beck-Teboulle backtracking, and OISTA (1/L_S kept only when the
    # support stays inside S) are all descent methods; FISTA is not.
    A, _, y = data
    prev = None
    for xk in S.get_solver(algo)(A, y, lam, 300):
        f = ops.lasso_objective(xk, y, A, lam)
        if prev is not None:
            assert (f <= prev + 1e-12 * prev.abs()).all()
        prev = f


@pytest.mark.parametrize("algo, iters", [("ista", 1000), ("fista", 1000), ("oista", 500), ("ista-bt", 600)])
@pytest.mark.parametrize("lam", [0.05, 0.3])
def test_solvers_reach_the_lasso_optimum(data, algo, iters, lam):
    A, _, y = data
    x = S.final(S.get_solver(algo)(A, y, lam, iters))
    assert float(ops.kkt_residual(x, y, A, lam).max()) < 1e-8


def test_solvers_agree(data):
    A, _, y = data
    lam = 0.1
    ref = S.final(S.fista(A, y, lam, 1500))
    for algo in ("ista", "oista", "ista-bt"):
        x = S.final(S.get_solver(algo)(A, y, lam, 1000))
        torch.testing.assert_close(x, ref, rtol=0, atol=1e-9)
        assert torch.equal(x != 0, ref != 0)


def test_iterates_start_at_zero_and_count(data):
    A, _, y = data
    for algo in ALGOS:
        its = list(S.get_solver(algo)(A, y, 0.1, 5))
        assert len(its) == 6 and torch.equal(its[0], torch.zeros(20, 37, dtype=D))
        assert all(xk.shape == (20, 37) and xk.dtype == D for xk in its)


def test_fista_first_step_is_ista_step(data):
    A, _, y = data
    a, b = list(S.ista(A, y, 0.2, 1)), list(S.fista(A, y, 0.2, 1))
    assert torch.equal(a[1], b[1])


def test_orthogonal_A_closed_form():
    # With A orthogonal (m = n), the Lasso solution is eta_lam(A^T y): one ISTA step with L = 1.
    g = torch.Generator().manual_seed(2)
    Q, _ = torch.linalg.qr(torch.randn(29, 29, generator=g, dtype=D))
    y = torch.randn(6, 29, generator=g, dtype=D)
    lam = 0.5
    expect = ops.soft_threshold(y @ Q, lam)
    assert S.lipschitz(Q) == pytest.approx(1.0, rel=1e-12)
    one = list(S.ista(Q, y, lam, 1, L=1.0))[1]
    torch.testing.assert_close(one, expect, rtol=0, atol=1e-13)
    assert float(ops.kkt_residual(expect, y, Q, lam).max()) < 1e-12
    for algo in ALGOS:
        x = S.final(S.get_solver(algo)(Q, y, lam, 60))
        torch.testing.assert_close(x, expect, rtol=0, atol=1e-12)


def test_lam_zero_on_square_invertible_solves_least_squares():
    g = torch.Generator().manual_seed(4)
    A = torch.eye(11, dtype=D) + 0.1 * torch.randn(11, 11, generator=g, dtype=D)
    x_true = torch.randn(3, 11, generator=g, dtype=D)
    y = x_true @ A.T
    torch.testing.assert_close(S.final(S.fista(A, y, 0.0, 400)), x_true, rtol=0, atol=1e-10)


def test_tune_lambda_uses_the_validation_score(data):
    A, x, y = data
    lam, table = S.tune_lambda("fista", A, x, y, iters=30)
    lams = [t[0] for t in table]
    assert lams == sorted(lams) and len(table) == 12 + 6  # coarse grid plus one refinement
    assert lam == min(table, key=lambda t: t[1])[0]
    # every table entry is the validation NMSE of that lambda after `iters` iterations
    for lam_i, score in table[::5] + [next(t for t in table if t[0] == lam)]:
        direct = S.nmse_curve(iter([S.final(S.fista(A, y, lam_i, 30))]), x)[0]
        assert score == pytest.approx(direct, abs=1e-12)
    # the refinement sits around the coarse optimum
    assert min(lams) <= lam <= max(lams)


def test_tune_lambda_with_grid(data):
    A, x, y = data
    grid = [0.001, 0.01, 0.1, 1.0]
    lam, table = S.tune_lambda("ista", A, x, y, iters=20, grid=grid)
    assert [t[0] for t in table] == grid and lam in grid
    assert lam == min(table, key=lambda t: t[1])[0]


def test_nmse_curve(data):
    A, x, y = data
    curve = S.nmse_curve(S.fista(A, y, 0.01, 50), x)
    assert len(curve) == 51 and curve[0] == pytest.approx(0.0, abs=1e-12)  # x_0 = 0: 0 dB
    assert curve[-1] < -10.0


def test_unknown_algorithm_lists_valid():
    with pytest.raises(UsageError, match="valid: ista, fista, oista, ista-bt"):
        S.get_solver("foo")
    with pytest.raises(UsageError, match="eta"):
        S.final(S.ista_backtracking(torch.eye(2, dtype=D), torch.ones(1, 2, dtype=D), 0.1, 3, eta=1.0))


# -- proximal_gradient and support selection ------------------------------------------------------------


def test_proximal_gradient_is_the_reference_iteration(data):
    # x_{t+1} = shrink(x_t + gamma W^T (y - A x_t), theta, cuts[t]) from x_0 = 0, written out with the
    # reference ops; W != A, the percentage cuts of ALISTA, and ALISTA-AT's adaptive threshold.
    A, _, y = data
    W = A + 0.05 * torch.randn(A.shape, generator=torch.Generator().manual_seed(5), dtype=D)
    cuts = Selection("percentage").cuts(8, A.shape[1], 4.0)
    assert any(cuts) and None in cuts
    for eps in (None, 0.1):
        x = torch.zeros(y.shape[0], A.shape[1], dtype=D)
        expect = [x]
        for cut in cuts:
            theta = 0.02 if eps is None else reference.adaptive_threshold(x, 0.02, eps)
            x = reference.shrink(x + 0.3 * (y - x @ A.T) @ W, theta, cut)
            expect.append(x)
        with ops.backend("reference"):
            got = list(S.proximal_gradient(A, y, W, 0.3, 0.02, 8, cuts, eps))
        assert len(got) == 9
        for u, v in zip(got, expect):
            torch.testing.assert_close(u, v, rtol=1e-13, atol=1e-13)


def test_ista_is_proximal_gradient_with_w_equal_a(data):
    A, _, y = data
    L, lam = S.lipschitz(A), 0.1
    cuts = [Cut(3, True)] * 6
    for c in (None, cuts):
        for u, v in zip(S.ista(A, y, lam, 6, cuts=c), S.proximal_gradient(A, y, A, 1 / L, lam / L, 6, c)):
            assert torch.equal(u, v)
    with_cuts = S.final(S.ista(A, y, lam, 6, cuts=cuts))
    assert not torch.equal(with_cuts, S.final(S.ista(A, y, lam, 6)))  # the cuts change the iterates ...
    a, b = list(S.ista(A, y, lam, 1, cuts=cuts)), list(S.fista(A, y, lam, 1, cuts=cuts))
    assert torch.equal(a[1], b[1])  # ... and FISTA's first step is still ISTA's


@pytest.mark.parametrize("algo", ["ista", "fista"])
def test_selecting_every_entry_solves_least_squares(algo):
    # With Cut(n, False) every entry bypasses the shrinkage: the iteration is gradient descent
    # (FISTA: Nesterov's) on 1/2 ||y - A x||^2, whose minimiser for a square invertible A is A^-1 y,
    # whatever lam.
    g = torch.Generator().manual_seed(4)
    A = torch.eye(11, dtype=D) + 0.1 * torch.randn(11, 11, generator=g, dtype=D)
    x_true = torch.randn(3, 11, generator=g, dtype=D)
    y = x_true @ A.T
    iters = 400
    x = S.final(S.get_solver(algo)(A, y, 5.0, iters, cuts=[Cut(11, False)] * iters))
    torch.testing.assert_close(x, x_true, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("algo", ALGOS)
def test_solvers_agree_across_backends(data, algo, backend):
    # Every iterate of every solver, fast against reference: 1e-10 relative to the largest entry.
    A, _, y = data
    with ops.backend("reference"):
        want = list(S.get_solver(algo)(A, y, 0.1, 40))
    with ops.backend(backend):
        got = list(S.get_solver(algo)(A, y, 0.1, 40))
    for u, v in zip(got, want):
        torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-10 * float(v.abs().max()))
    cuts = Selection("percentage").cuts(40, A.shape[1], 4.0)
    for eps in (None, 0.1):
        with ops.backend("reference"):
            want = list(S.proximal_gradient(A, y, A, 0.3, 0.02, 40, cuts, eps))
        with ops.backend(backend):
            got = list(S.proximal_gradient(A, y, A, 0.3, 0.02, 40, cuts, eps))
        for u, v in zip(got, want):
            torch.testing.assert_close(u, v, rtol=1e-10, atol=1e-10 * float(v.abs().max()))
