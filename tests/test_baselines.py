"""OMP, IHT, CoSaMP and the converged Lasso (unrolled/baselines.py) in float64 against known supports."""

from __future__ import annotations

import pytest
import torch

from unrolled import Problem, ProblemSpec, UsageError
from unrolled import baselines as B
from unrolled.cli import main
from unrolled.errors import require

D = torch.float64


def sparse_case(m=47, n=71, s=5, batch=9, seed=0, noise=0.0):
    """Gaussian A (odd sizes), ``s``-sparse signals with magnitudes in [1, 2] on random supports."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(m, n, generator=g, dtype=D) / m ** 0.5
    x = torch.zeros(batch, n, dtype=D)
    for b in range(batch):
        idx = torch.randperm(n, generator=g)[:s]
        sign = torch.randint(0, 2, (s,), generator=g, dtype=D) * 2 - 1
        x[b, idx] = sign * (1 + torch.rand(s, generator=g, dtype=D))
    y = x @ A.T + noise * torch.randn(batch, m, generator=g, dtype=D)
    return A, x, y


def ls_on(A, y, support):
    """Least squares of each row of ``y`` on its support (the reference)."""
    out = torch.zeros(y.shape[0], A.shape[1], dtype=D)
    for b in range(y.shape[0]):
        S = support[b].nonzero().flatten()
        out[b, S] = torch.linalg.lstsq(A[:, S], y[b]).solution
    return out


def test_hard_threshold_keeps_the_largest():
    z = torch.tensor([[0.5, -3.0, 1.0, 2.0], [-1.0, 0.1, 0.2, 0.0]], dtype=D)
    assert torch.equal(B.hard_threshold(z, 2), torch.tensor([[0, -3.0, 0, 2.0], [-1.0, 0, 0.2, 0]], dtype=D))


def test_masked_least_squares_matches_lstsq_per_row():
    # random masks of different sizes, padded to a common width; a singular sub-Gram matrix
    # (a duplicated column) takes the min-norm fallback and still fits y on its columns
    A, _, y = sparse_case(m=23, n=31)
    A[:, 7] = A[:, 3]
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(len(y), 31, generator=g) < 0.3
    mask[0] = False
    mask[0, [3, 7, 11]] = True
    got = B._masked_lstsq(A.T @ A, y @ A, mask, int(mask.sum(1).max()))
    assert (got[~mask] == 0).all()
    for b in range(len(y)):
        S = mask[b].nonzero().flatten()
        ref = torch.linalg.lstsq(A[:, S], y[b], driver="gelsd").solution
        assert torch.allclose(A[:, S] @ got[b, S], A[:, S] @ ref, atol=1e-10)
        if b:
            assert torch.allclose(got[b, S], ref, atol=1e-10)


@pytest.mark.parametrize("algo", ["iht", "cosamp"])
def test_iht_and_cosamp_recover_a_known_support(algo):
    # IHT with step 1/L is guaranteed only under a strong RIP (here s=3, m=61 of n=71; at s=5 a few
    # signals stall in a local minimum, a property of IHT); CoSaMP needs 3s <= m
    s, m = (3, 61) if algo == "iht" else (5, 47)
    A, x, y = sparse_case(m=m, s=s, batch=20)
    iters = 400 if algo == "iht" else 12
    solver = B.iht if algo == "iht" else B.cosamp
    last = None
    for last in solver(A, y, s, iters):
        assert ((last != 0).sum(1) <= s).all()  # every iterate is s-sparse
    assert torch.equal(last != 0, x != 0)
    assert torch.allclose(last, x, atol=1e-8)


def test_iht_never_increases_the_residual():
    # with ||A||^2 / L = 1 each step minimises a majoriser of ||y - A x||^2 over s-sparse x (Blumensath-Davies)
    A, _, y = sparse_case(s=5, noise=1e-2)
    prev = None
    for xk in B.iht(A, y, 5, 100):
        r = ((y - xk @ A.T) ** 2).sum(1)
        if prev is not None:
            assert (r <= prev * (1 + 1e-12)).all()
        prev = r


def test_cosamp_with_noise_finds_the_support_within_the_oracle_error():
    # its last step prunes a least-squares fit on the merged set (3s columns), so it is not the oracle
    # least squares on the true support, but within a small factor of its error (Needell-Tropp, Thm A)
    A, x, y = sparse_case(noise=1e-3)
    last = list(B.cosamp(A, y, 5, 12))[-1]
    assert torch.equal(last != 0, x != 0)
    oracle = (ls_on(A, y, x != 0) - x).norm(dim=1)
    assert ((last - x).norm(dim=1) <= 3 * oracle).all()


def test_omp_path_is_greedy_least_squares():
    pytest.importorskip("sklearn")
    A, x, y = sparse_case(m=61, noise=1e-3)  # OMP's exact recovery needs m of order 2 s log n
    path = list(B.omp(A, y, 5))
    assert len(path) == 6 and (path[0] == 0).all()
    for k, xk in enumerate(path):
        assert ((xk != 0).sum(1) == k).all()  # iterate k holds k atoms
        if k:
            assert torch.allclose(xk, ls_on(A, y, xk != 0), atol=1e-10)  # least squares on them
            assert ((path[k - 1] != 0) <= (xk != 0)).all()  # atoms are only added
    assert torch.equal(path[-1] != 0, x != 0)


def test_omp_stops_early_and_keeps_its_last_iterate():
    pytest.importorskip("sklearn")
    A, x, y = sparse_case(s=3)  # noiseless: the residual vanishes after 3 atoms
    path = list(B.omp(A, y, 8))
    assert torch.allclose(path[3], x, atol=1e-10)
    assert all(torch.equal(p, path[3]) for p in path[4:])


def test_converged_lasso_satisfies_kkt_and_finds_the_support():
    pytest.importorskip("sklearn")
    A, x, y = sparse_case(m=71, noise=1e-3)  # m=71: A_S meets the irrepresentable condition for all 9 signals
    lam = 0.02
    xh = B.lasso_cd(A, y, lam, tol=1e-12)
    g = (y - xh @ A.T) @ A  # A^T (y - A x): lam sign(x) on the support, at most lam off it
    on = xh != 0
    assert torch.allclose(g[on], lam * xh[on].sign(), atol=1e-7)
    assert (g[~on].abs() <= lam + 1e-7).all()
    assert torch.equal(on, x != 0)
    for b in range(len(y)):  # sign-consistent: the closed form on the true support
        S = on[b].nonzero().flatten()
        AS = A[:, S]
        closed = torch.linalg.solve(AS.T @ AS, AS.T @ y[b] - lam * x[b, S].sign())
        assert torch.allclose(xh[b, S], closed, atol=1e-7)
    # along a grid (warm-started) the same solutions as one lambda at a time
    both = B.lasso_cd(A, y, [0.05, lam], tol=1e-12)
    assert torch.allclose(both[1], xh, atol=1e-7)


def test_tuning_the_sparsity_prefers_the_true_one():
    A, x, y = sparse_case(m=47, batch=30, s=6, noise=1e-3)
    s, table = B.tune_sparsity("cosamp", A, x, y, 10, expected=6)
    assert s == 6 and [t[0] for t in table] == B.sparsity_grid("cosamp", A, 6)


def test_bad_sparsity_is_one_line():
    A, _, y = sparse_case()
    with pytest.raises(UsageError, match="3s <= min"):
        list(B.cosamp(A, y, 20, 1))


def test_require_names_the_extra():
    with pytest.raises(UsageError, match=r"pip install 'unrolled\[search\]'"):
        require("no_such_module_xyz", extra="search", feature="the search")
    assert require("math", extra="x").sqrt(4.0) == 2.0


def test_solve_table_has_the_new_baselines_with_their_time(tmp_path, capsys):
    pytest.importorskip("sklearn")
    problem = tmp_path / "p.npz"
    Problem(ProblemSpec(m=30, n=60, p=0.1, snr=40, seed=0, val_size=40, test_size=40)).save(problem)
    assert main(["solve", str(problem), "--algo", "ista,omp,iht,cosamp,lasso-cd", "--iters", "6",
                 "--out", str(tmp_path / "s.csv")]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("layer"))
    assert header.split() == ["layer", "ista", "omp", "iht", "cosamp"]
    assert "iht: s = " in out and "cosamp: s = " in out
    assert "converged lasso-cd:" in out and "time (tuning and solving): ista" in out
    csv = (tmp_path / "s.csv").read_text()
    assert "lasso-cd" in csv and "solve_seconds" in csv
    assert "floor: oracle-ls" in out and "lasso-cd" not in out.split("floor:")[1].split("\n")[0]


def test_nmse_interval_is_a_ratio_of_sums_resampled():
    from unrolled.metrics import nmse_db, nmse_interval

    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 13, generator=g, dtype=D) * torch.rand(400, 1, generator=g, dtype=D)
    # every vector with the same relative error 1e-2: every resampled ratio is 1e-2, the interval one point
    lo, hi = nmse_interval(x * 1.1, x)
    assert lo == pytest.approx(-20.0, abs=1e-9) and hi == pytest.approx(-20.0, abs=1e-9)
    x_hat = x + 0.1 * torch.randn(400, 13, generator=g, dtype=D) * torch.rand(400, 1, generator=g, dtype=D)
    lo, hi = nmse_interval(x_hat, x)
    assert lo < nmse_db(x_hat, x) < hi and hi - lo < 3
    lo99, hi99 = nmse_interval(x_hat, x, confidence=0.99)
    assert lo99 < lo and hi < hi99


def test_eval_with_new_baselines_and_a_confidence_interval(tmp_path, capsys):
    pytest.importorskip("sklearn")
    import unrolled as ur

    problem = Problem(ProblemSpec(m=30, n=60, p=0.1, snr=40, seed=0, val_size=40, test_size=50))
    ur.train(problem, "alista", {"K": 3}, budget=2000, out=tmp_path / "run")
    assert main(["eval", str(tmp_path / "run"), "--baselines", "omp,lasso-cd", "--ci"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("layer"))
    assert header.split() == ["layer", "alista", "omp"]
    assert "converged lasso-cd:" in out and "95 % bootstrap interval of alista at layer 3: [" in out
    assert main(["eval", str(tmp_path / "run"), "--ci", "1.5"]) == 2


def test_lasso_refuses_or_marks_a_lambda_that_does_not_converge():
    pytest.importorskip("sklearn")
    A, x, y = sparse_case(m=31, noise=1e-2)
    with pytest.raises(UsageError, match="did not converge"):
        B.lasso_cd(A, y, 1e-9, max_iter=50)
    sols = B.lasso_cd(A, y, [0.5, 1e-9], max_iter=50, strict=False)  # tuning leaves such a lambda out
    assert sols[0] is not None and sols[1] is None
