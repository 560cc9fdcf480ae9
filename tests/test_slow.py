"""Slow end-to-end quality checks (``make test-slow``; not in the default run)."""

from __future__ import annotations

import pytest
import torch

from unrolled import Problem, ProblemSpec, metrics, solvers
from unrolled.models import build
from unrolled.training import Trainer, TrainOptions, end_to_end

pytestmark = pytest.mark.slow


def test_alista_trained_on_the_standard_problem_approaches_the_oracle():
    # 250 x 500, p = 0.1, 40 dB; the count + theta recipe of docs/results.md at a small budget.
    problem = Problem(ProblemSpec(m=250, n=500, p=0.1, snr=40, seed=0, val_size=1000, test_size=2000))
    model = build("alista", problem, {"ss": "count", "ss.theta": True})
    Trainer(model, problem, end_to_end(16, lr=2e-3, samples=150_000), TrainOptions(eval_every=50, val_size=1000),
            log=lambda s: None).run()
    x, y = problem.test(2000)
    with torch.no_grad():
        ours = metrics.nmse_db(model(y), x)
    xv, yv = problem.validation(torch.float64)
    lam = solvers.tune_lambda("fista", problem.A, xv[:500], yv[:500], 16)[0]
    fista = metrics.nmse_db(solvers.final(solvers.fista(problem.A, y.double(), lam, 16)), x)
    oracle = metrics.nmse_db(metrics.oracle_estimates(problem.A, x, y, 40.0)["oracle-ls"], x)
    assert ours < fista - 20, (ours, fista)  # 16 learned layers beat 16 FISTA steps by far
    assert oracle < ours < oracle + 8, (ours, oracle)  # within 8 dB of the physical limit
