"""Problems (docs/spec.md §2): seeding, matrices, signals, noise, save/load."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import scipy.io
import torch

from unrolled import Problem, ProblemSpec, UsageError
from unrolled.problem import generate_matrix


def small(**kw) -> ProblemSpec:
    base = dict(m=23, n=41, p=0.2, snr=30.0, seed=7, val_size=60, test_size=90)
    base.update(kw)
    return ProblemSpec(**base)


# -- seeding ------------------------------------------------------------------------------------


def test_same_seed_same_bits():
    a, b = Problem(small()), Problem(small())
    assert torch.equal(a.A, b.A)
    for dtype in (torch.float32, torch.float64):
        for sa, sb in ((a.validation(dtype), b.validation(dtype)), (a.test(dtype=dtype), b.test(dtype=dtype))):
            assert torch.equal(sa[0], sb[0]) and torch.equal(sa[1], sb[1])
    ga, gb = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    for _ in range(3):  # a stream of batches, not only the first one
        xa, ya = a.sample(17, ga, torch.float64)
        xb, yb = b.sample(17, gb, torch.float64)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_different_seed_different_bits():
    a, b = Problem(small(seed=1)), Problem(small(seed=2))
    assert not torch.equal(a.A, b.A)
    assert not torch.equal(a.validation()[0], b.validation()[0])
    assert not torch.equal(a.test()[1], b.test()[1])
    xa, _ = a.sample(17, torch.Generator().manual_seed(1), torch.float64)
    xb, _ = a.sample(17, torch.Generator().manual_seed(2), torch.float64)
    assert not torch.equal(xa, xb)


def test_validation_test_and_training_are_different_streams():
    p = Problem(small(val_size=90))
    xv, xt = p.validation(torch.float64)[0], p.test(dtype=torch.float64)[0]
    xs, _ = p.sample(90, torch.Generator().manual_seed(p.spec.seed), torch.float64)
    assert not torch.equal(xv, xt) and not torch.equal(xs, xv) and not torch.equal(xs, xt)


def test_float32_batch_is_float64_batch_rounded():
    p = Problem(small())
    x64, y64 = p.sample(33, torch.Generator().manual_seed(5), torch.float64)
    x32, y32 = p.sample(33, torch.Generator().manual_seed(5), torch.float32)
    assert x32.dtype == torch.float32 and y32.dtype == torch.float32
    assert torch.equal(x32, x64.to(torch.float32)) and torch.equal(y32, y64.to(torch.float32))
    v64, v32 = p.validation(torch.float64), p.validation(torch.float32)
    assert torch.equal(v32[0], v64[0].float()) and torch.equal(v32[1], v64[1].float())


def test_smaller_fixed_set_is_a_prefix_and_signals_do_not_depend_on_snr():
    p = Problem(small(test_size=2500))
    x_small, y_small = p.test(100, torch.float64)
    x_big, y_big = p.test(dtype=torch.float64)
    assert torch.equal(x_small, x_big[:100]) and torch.equal(y_small, y_big[:100])
    x_clean, y_clean = p.test(dtype=torch.float64, snr=math.inf)
    assert torch.equal(x_clean, x_big)
    assert torch.allclose(y_clean, x_big @ p.A.T, rtol=0, atol=1e-12)


# -- matrices -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [dict(), dict(kappa=10.0), dict(kappa=100.0), dict(matrix="lowrank", rank=7)])
def test_unit_norm_columns(kw):
    A = generate_matrix(small(**kw))
    assert A.shape == (23, 41)
    np.testing.assert_allclose(np.linalg.norm(A, axis=0), 1.0, rtol=0, atol=1e-12)


def test_kappa_sets_the_condition_number():
    # Columns are re-normalised after the singular values are set, so cond(A) is kappa only
    # approximately; on 31x61 it stays within a factor 1.5 and grows with kappa.
    conds = []
    for kappa in (1.0, 10.0, 100.0, 1000.0):
        A = generate_matrix(ProblemSpec(m=31, n=61, kappa=kappa, seed=1))
        c = np.linalg.cond(A)
        assert kappa / 1.5 <= c <= kappa * 1.5, (kappa, c)
        conds.append(c)
    assert conds == sorted(conds)


def test_lowrank_has_rank_r():
    A = generate_matrix(ProblemSpec(m=31, n=61, matrix="lowrank", rank=7, seed=2))
    assert np.linalg.matrix_rank(A) == 7


@pytest.mark.parametrize("fmt", ["npy", "npz", "mat-D", "mat-A"])
def test_file_matrix_is_normalised_with_its_scale(tmp_path, fmt):
    A = np.random.default_rng(0).standard_normal((23, 41)) * 3.0  # columns far from unit norm
    if fmt == "npy":
        path = tmp_path / "A.npy"
        np.save(path, A)
    elif fmt == "npz":
        path = tmp_path / "A.npz"
        np.savez(path, A=A)
    else:
        path = tmp_path / "A.mat"
        scipy.io.savemat(path, {fmt[-1]: A, "other": np.ones(3)})
    p = Problem(ProblemSpec(m=23, n=41, matrix="file", a_file=str(path)))
    norms = np.linalg.norm(A, axis=0)
    np.testing.assert_allclose(p.A.numpy(), A / norms, rtol=1e-15)
    np.testing.assert_allclose(p.scale.numpy(), norms, rtol=1e-15)
    with pytest.warns(UserWarning, match="raw columns"):
        raw = Problem(ProblemSpec(m=23, n=41, matrix="file", a_file=str(path), raw_columns=True))
    assert np.array_equal(raw.A.numpy(), A) and raw.scale is None


def test_normalised_problem_round_trips_and_maps_estimates_back(tmp_path):
    spec = ProblemSpec(m=20, n=40, col_spread=10.0, val_size=5, test_size=5, seed=3)
    p = Problem(spec)
    A_user = generate_matrix(spec)
    assert p.scale is not None and 0.1 <= float(p.scale.min()) and float(p.scale.max()) <= 10
    np.testing.assert_allclose(np.linalg.norm(p.A.numpy(), axis=0), 1, rtol=1e-14)
    q = Problem.load(p.save(tmp_path / "p.npz"))
    assert torch.equal(q.A, p.A) and torch.equal(q.scale, p.scale) and q.spec == spec
    x, y = p.test(dtype=torch.float64)  # y = A x = A_user x_user: the estimate in user units is x / scale
    x_user = p.to_user(x)
    torch.testing.assert_close(x_user @ torch.from_numpy(A_user).T, y - (y - x @ p.A.T), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(p.from_user(x_user), x)
    assert isinstance(p.to_user(x.numpy()), np.ndarray)


def test_old_problem_file_with_raw_columns_loads_as_it_was(tmp_path):
    A = np.random.default_rng(0).standard_normal((10, 20)) * 2.0
    spec = ProblemSpec(m=10, n=20, val_size=5, test_size=5)
    np.savez(tmp_path / "old.npz", A=A, spec=np.array(spec.to_json()), format=np.array("unrolled-problem-v1"))
    with pytest.warns(UserWarning, match="raw columns"):
        p = Problem.load(tmp_path / "old.npz")
    assert np.array_equal(p.A.numpy(), A) and p.scale is None and p.spec.raw_columns


def test_later_fields_keep_old_spec_bits():
    assert "rho" not in ProblemSpec().to_json() and "raw_columns" not in ProblemSpec().to_json()
    assert '"rho": 0.5' in ProblemSpec(matrix="toeplitz", rho=0.5).to_json()
    assert ProblemSpec.from_dict(json.loads(ProblemSpec(col_spread=3.0).to_json())) == ProblemSpec(col_spread=3.0)


def test_partial_dct_rows_of_the_orthonormal_dct():
    from scipy.fft import idct

    A = generate_matrix(ProblemSpec(m=16, n=64, matrix="dct", seed=1))
    rows = np.sort(np.random.default_rng(1).choice(64, size=16, replace=False))
    D = idct(np.eye(64), norm="ortho", axis=0).T  # the orthonormal DCT-II as a matrix: D @ D.T = I
    np.testing.assert_allclose(D @ D.T, np.eye(64), atol=1e-12)
    S = D[rows]
    np.testing.assert_allclose(A, S / np.linalg.norm(S, axis=0), atol=1e-12)


def test_toeplitz_columns_are_correlated():
    A = generate_matrix(ProblemSpec(m=60, n=60, matrix="toeplitz", seed=0))
    G = A.T @ A  # E[a_i^T a_j] = 0.9^|i-j| (before the columns are normalised)
    assert 0.8 < float(np.mean(np.diag(G, 1))) < 1.0
    assert float(np.mean(np.abs(np.diag(G, 40)))) < 0.3


def test_lowrank_default_rank_and_suite_kinds():
    from unrolled.problem import MATRIX_SUITE, SUITE_RATIOS

    spec = ProblemSpec(m=40, n=80, matrix="lowrank")
    assert spec.inner_rank == 32 and np.linalg.matrix_rank(generate_matrix(spec)) == 32
    for kw in MATRIX_SUITE.values():
        for r in SUITE_RATIOS:
            p = Problem(ProblemSpec(m=int(64 * r), n=64, val_size=2, test_size=2, **kw))
            np.testing.assert_allclose(np.linalg.norm(p.A.numpy(), axis=0), 1, rtol=1e-13)
    with pytest.raises(UsageError, match="rho"):
        ProblemSpec(rho=0.5)


def test_file_matrix_shape_must_match_spec(tmp_path):
    np.save(tmp_path / "A.npy", np.ones((23, 41)))
    with pytest.raises(UsageError, match="23x41"):
        Problem(ProblemSpec(m=20, n=41, matrix="file", a_file=str(tmp_path / "A.npy")))


# -- signals and noise ----------------------------------------------------------------------------


def test_realised_snr():
    p = Problem(ProblemSpec(m=250, n=500, p=0.1, snr=25.0, seed=3, val_size=2000))
    x, y = p.validation(torch.float64)
    clean = x @ p.A.T
    e = y - clean
    keep = (clean * clean).sum(1) > 0
    snr = 10 * torch.log10((clean[keep] ** 2).sum(1) / (e[keep] ** 2).sum(1))
    # m=250: the chi-square and mean(Ax)^2 biases are ~0.04 dB, the standard error ~0.01 dB.
    assert abs(float(snr.mean()) - 25.0) < 0.2


def test_noiseless_means_no_noise():
    p = Problem(small(snr=math.inf))
    x, y = p.validation(torch.float64)
    assert torch.allclose(y, x @ p.A.T, rtol=0, atol=1e-12)


def test_salt_and_pepper_rule():
    p = Problem(ProblemSpec(m=250, n=500, p=0.1, snr=math.inf, test_noise="salt-pepper", sp_density=0.01,
                            seed=4, test_size=2000))
    x, y = p.test(dtype=torch.float64)
    clean = x @ p.A.T
    peak = clean.abs().amax(1, keepdim=True)
    hit = y != clean
    frac = float(hit.double().mean())
    assert abs(frac - 0.01) < 1e-3  # 500k entries: standard error 1.4e-4
    assert torch.equal(y[hit].abs(), peak.expand_as(y)[hit])  # every hit is +-max|y| of its sample
    pos = float((y[hit] > 0).double().mean())
    assert abs(pos - 0.5) < 0.05  # random sign; ~5000 hits, standard error 0.007


def test_fixed_cardinality_support():
    p = Problem(small(signal="fixed", p=0.17))
    x, _ = p.validation(torch.float64)
    assert ((x != 0).sum(1) == round(0.17 * 41)).all()


def test_bernoulli_mean_support():
    p = Problem(ProblemSpec(m=23, n=41, p=0.2, seed=5, val_size=2000))
    x, _ = p.validation(torch.float64)
    # mean of 2000 Binomial(41, 0.2): standard error 0.057
    assert abs(float((x != 0).sum(1).double().mean()) - 0.2 * 41) < 0.3


def test_gamma_signals_positive_with_mean_shape_over_rate():
    p = Problem(small(signal="gamma", gamma_shape=2.0, gamma_rate=0.5, val_size=2000))
    x, _ = p.validation(torch.float64)
    assert (x > 0).all()
    # 82,000 entries of Gamma(2, rate 0.5): mean 4, standard error 0.01
    assert abs(float(x.mean()) - 2.0 / 0.5) < 0.05


def test_test_perturb_changes_only_the_test_matrix():
    a, b = Problem(small()), Problem(small(test_perturb=1e-2))
    assert torch.equal(a.A, b.A)
    assert torch.equal(a.validation()[0], b.validation()[0]) and torch.equal(a.validation()[1], b.validation()[1])
    Ab = b.test_matrix()
    assert not torch.equal(Ab, b.A)
    assert torch.allclose(Ab.norm(dim=0), torch.ones(41, dtype=torch.float64), rtol=0, atol=1e-12)
    xa, ya = a.test(dtype=torch.float64)
    xb, yb = b.test(dtype=torch.float64)
    assert torch.equal(xa, xb) and not torch.equal(ya, yb)
    # Same noise draws, each scaled by sigma = std(A x) 10^(-snr/20) of its own clean measurements.
    za = (ya - xa @ a.A.T) / ((xa @ a.A.T).std(1, correction=0, keepdim=True) * 10 ** (-30 / 20))
    zb = (yb - xb @ Ab.T) / ((xb @ Ab.T).std(1, correction=0, keepdim=True) * 10 ** (-30 / 20))
    keep = (xa != 0).any(1)
    assert torch.allclose(za[keep], zb[keep], rtol=0, atol=1e-9)
    assert torch.equal(Ab, b.test_matrix())  # seeded: the same perturbation every time


# -- spec validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("kw, words", [
    (dict(p=0.0), "outside (0, 1]"), (dict(p=1.5), "outside (0, 1]"), (dict(m=50, n=41), "m=50 > n=41"),
    (dict(m=0), "positive"), (dict(matrix="foo"), "valid: gaussian, dct, toeplitz, lowrank, file"),
    (dict(signal="foo"), "valid: bernoulli"), (dict(kappa=0.5), "kappa"), (dict(matrix="lowrank", rank=300), "rank"),
    (dict(matrix="file"), "a_file"), (dict(snr=math.nan), "snr=nan"), (dict(snr=-math.inf), "snr=-inf"),
    (dict(test_snr=math.nan), "test_snr=nan"),
])
def test_bad_spec_is_refused(kw, words):
    with pytest.raises(UsageError) as e:
        small(**kw)
    assert words in str(e.value)


# -- files -------------------------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    p = Problem(small(test_perturb=1e-3, kappa=20.0))
    path = p.save(tmp_path / "prob.npz")
    q = Problem.load(path)
    assert q.spec == p.spec
    assert torch.equal(q.A, p.A)
    for dtype in (torch.float32, torch.float64):
        assert torch.equal(q.test(dtype=dtype)[0], p.test(dtype=dtype)[0])
        assert torch.equal(q.test(dtype=dtype)[1], p.test(dtype=dtype)[1])
        assert torch.equal(q.validation(dtype)[1], p.validation(dtype)[1])


def test_save_adds_suffix_and_noiseless_spec_survives(tmp_path):
    p = Problem(small(snr=math.inf))
    path = p.save(tmp_path / "prob")
    assert path.name == "prob.npz" and path.exists()
    assert math.isinf(Problem.load(path).spec.snr)


def test_file_based_problem_round_trip_keeps_A_without_the_file(tmp_path):
    A = np.random.default_rng(1).standard_normal((23, 41))
    np.save(tmp_path / "A.npy", A)
    p = Problem(ProblemSpec(m=23, n=41, matrix="file", a_file=str(tmp_path / "A.npy")))
    path = p.save(tmp_path / "prob.npz")
    (tmp_path / "A.npy").unlink()
    q = Problem.load(path)
    assert torch.equal(q.A, p.A) and torch.equal(q.scale, p.scale)
    np.testing.assert_allclose(q.A.numpy() * q.scale.numpy(), A, rtol=1e-14)


def test_load_refuses_foreign_and_corrupted_files(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.ones(3))
    with pytest.raises(UsageError, match="not an unrolled problem file"):
        Problem.load(tmp_path / "other.npz")
    good = Problem(small()).save(tmp_path / "good.npz")
    data = good.read_bytes()
    (tmp_path / "bad.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="cannot read problem file"):
        Problem.load(tmp_path / "bad.npz")
    with pytest.raises(UsageError, match="does not exist"):
        Problem.load(tmp_path / "missing.npz")


def test_unknown_spec_field_lists_valid_ones():
    with pytest.raises(UsageError, match="valid: .*seed"):
        ProblemSpec.from_dict({"m": 3, "bogus": 1})


def test_no_warnings_on_standard_problem():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Problem(small()).test()
