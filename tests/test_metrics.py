"""Metrics (docs/spec.md §3): NMSE (aggregate and per-sample dB), support statistics, the oracle floor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from unrolled import Problem, ProblemSpec
from unrolled import metrics as M

D = torch.float64


def test_nmse_db_hand_values():
    x = torch.tensor([[3.0, 4.0]], dtype=D)
    assert M.nmse_db(torch.tensor([[3.0, 3.0]], dtype=D), x) == pytest.approx(10 * math.log10(1 / 25), abs=1e-12)
    assert M.nmse_db(torch.zeros(1, 2, dtype=D), x) == pytest.approx(0.0, abs=1e-12)
    assert M.nmse_db(x, x) < -2000  # exact: floored at 1e-300, not -inf
    assert M.nmse_db(x.float(), x) == M.nmse_db(x, x.float())


def test_aggregate_and_per_sample_db_differ_as_computed_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=D)
    xh = torch.tensor([[0.9, 0.0], [0.0, 2.4]], dtype=D)
    # errors 0.01 and 0.16, energies 1 and 4
    assert M.nmse_db(xh, x) == pytest.approx(10 * math.log10(0.17 / 5), abs=1e-12)
    assert M.nmse_db_per_sample(xh, x) == pytest.approx((10 * math.log10(0.01) + 10 * math.log10(0.04)) / 2,
                                                        abs=1e-12)
    # a zero signal is skipped by the per-sample mean
    x0 = torch.cat([x, torch.zeros(1, 2, dtype=D)])
    xh0 = torch.cat([xh, torch.ones(1, 2, dtype=D)])
    assert M.nmse_db_per_sample(xh0, x0) == pytest.approx(M.nmse_db_per_sample(xh, x), abs=1e-12)


def test_support_stats_hand_values():
    x = torch.tensor([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 3.0]], dtype=D)
    xh = torch.tensor([[0.5, 0.1, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]], dtype=D)
    # sample 1: est {0,1}, true {0,2}: tp 1, fp 1, fn 1, F1 = 2/4; sample 2: exact, F1 = 1
    assert M.support_stats(xh, x) == pytest.approx({"fp": 0.5, "fn": 0.5, "f1": 0.75}, abs=1e-15)
    # tol 0.2 drops the 0.1: sample 1 tp 1, fp 0, fn 1, F1 = 2/3
    assert M.support_stats(xh, x, tol=0.2) == pytest.approx({"fp": 0.0, "fn": 0.5, "f1": (2 / 3 + 1) / 2},
                                                            abs=1e-15)
    # empty truth, empty estimate: perfect
    assert M.support_stats(torch.zeros(1, 3), torch.zeros(1, 3)) == {"fp": 0.0, "fn": 0.0, "f1": 1.0}


@pytest.fixture(scope="module")
def noisy():
    p = Problem(ProblemSpec(m=23, n=41, p=0.2, snr=20.0, seed=9, test_size=40))
    x, y = p.test(dtype=D)
    return p.A, x, y


def test_oracle_ls_is_lstsq_on_the_true_support(noisy):
    A, x, y = noisy
    est = M.oracle_estimates(A, x, y, 20.0, chunk=7)["oracle-ls"]  # chunks of uneven support sizes
    An, yn = A.numpy(), y.numpy()
    for i in range(0, 40, 3):
        S = np.flatnonzero(x[i].numpy())
        expect = np.zeros(41)
        expect[S] = np.linalg.lstsq(An[:, S], yn[i], rcond=None)[0]
        np.testing.assert_allclose(est[i].numpy(), expect, rtol=0, atol=1e-10)


def test_oracle_mmse_formula(noisy):
    A, x, y = noisy
    est = M.oracle_estimates(A, x, y, 20.0, chunk=11)["oracle-mmse"]
    An, yn = A.numpy(), y.numpy()
    for i in range(0, 40, 3):
        S = np.flatnonzero(x[i].numpy())
        clean = An @ x[i].numpy()
        sigma2 = (clean.std() * 10 ** (-20 / 20)) ** 2  # population std, docs/spec.md §2
        AS = An[:, S]
        expect = np.zeros(41)
        expect[S] = np.linalg.solve(AS.T @ AS + sigma2 * np.eye(len(S)), AS.T @ yn[i])
        np.testing.assert_allclose(est[i].numpy(), expect, rtol=0, atol=1e-10)


def test_oracle_noiseless_is_exact_and_handles_empty_supports():
    p = Problem(ProblemSpec(m=23, n=41, p=0.05, seed=1, test_size=60))
    x, y = p.test(dtype=D)
    assert ((x != 0).sum(1) == 0).any()  # a zero signal is in the set
    for est in M.oracle_estimates(p.A, x, y, math.inf).values():
        torch.testing.assert_close(est, x, rtol=0, atol=1e-10)


def test_oracle_floor_at_40db():
    # docs/spec.md §3: m = 250, s = 50, 40 dB SNR: about -45.9 dB whatever n (1000 samples: +-0.5 dB).
    p = Problem(ProblemSpec(m=250, n=500, p=0.1, snr=40.0, seed=0, test_size=1000))
    x, y = p.test(dtype=D)
    for est in M.oracle_estimates(p.A, x, y, 40.0).values():
        assert M.nmse_db(est, x) == pytest.approx(-45.9, abs=0.5)
