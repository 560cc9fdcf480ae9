"""Robust ALISTA (issue 18): perturbed streams, the AtoW encoder, batched decoding, the curriculum loop.

Tiny odd sizes (13 x 29), float64 where values are compared.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from unrolled import perturbed, solvers
from unrolled.errors import UsageError
from unrolled.models import build
from unrolled.models.robust_alista import coherence_descent, rel2_loss
from unrolled.problem import Problem, ProblemSpec
from unrolled.repro.robust import tune_fista
from unrolled.training.robust import RobustOptions, train_perturbed

F64 = torch.float64


@pytest.fixture(scope="module")
def problem() -> Problem:
    return Problem(ProblemSpec(m=13, n=29, p=0.15, seed=4))


def test_fixed_sets_are_seeded_prefixes_and_share_draws_across_sigma(problem):
    a = perturbed.fixed_set(problem, "test", 0.01, 5, 6)
    b = perturbed.fixed_set(problem, "test", 0.01, 5, 6)
    assert torch.equal(a.A, b.A) and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    small = perturbed.fixed_set(problem, "test", 0.01, 3, 6)
    assert torch.equal(small.A, a.A[:3]) and torch.equal(small.x, a.x[:3])
    zero = perturbed.fixed_set(problem, "test", 0.0, 5, 6)
    assert torch.allclose(zero.A, problem.A.expand(5, -1, -1), atol=1e-15)  # sigma = 0: the nominal A
    assert torch.equal(zero.x, a.x)  # signals do not depend on sigma
    # the same G at every sigma: the set is colnorm(A + sigma G) with G from the matrices' own stream
    g = perturbed.stream(problem.spec.seed, "test", "matrices")
    G = torch.stack([torch.randn(problem.m, problem.n, generator=g, dtype=F64) for _ in range(5)])
    for sigma in (0.01, 0.02):
        s = perturbed.fixed_set(problem, "test", sigma, 5, 6)
        assert torch.equal(s.A, perturbed.perturb(problem.A, sigma, G))
    cols = torch.linalg.vector_norm(a.A, dim=-2)
    assert torch.allclose(cols, torch.ones_like(cols), atol=1e-14)  # unit columns


def test_streams_do_not_overlap(problem):
    val = perturbed.fixed_set(problem, "val", 0.01, 4, 6)
    test = perturbed.fixed_set(problem, "test", 0.01, 4, 6)
    train = perturbed.train_batch(problem, 0.01, 4, 6, torch.Generator().manual_seed(problem.spec.seed),
                                  dtype=F64)
    assert not torch.equal(val.A, test.A) and not torch.equal(val.x, test.x)
    for s in (val, test):  # no training matrix or signal equals a fixed one
        assert torch.cdist(train.A.flatten(1), s.A.flatten(1)).min() > 0.1
        assert not torch.equal(train.x, s.x)
    nominal_x, _ = problem.validation(F64)  # nor the nominal problem's fixed sets
    assert not torch.equal(val.x.reshape(-1, problem.n), nominal_x[:24])
    noisy = perturbed.fixed_set(problem, "test", 0.01, 4, 6, snr=20.0)
    assert torch.equal(noisy.x, test.x) and not torch.equal(noisy.y, test.y)


def test_curriculum_is_the_references_linspace():
    assert perturbed.curriculum(0.02, 5) == pytest.approx([0.005, 0.01, 0.015, 0.02])
    assert perturbed.curriculum(0.03, 2) == pytest.approx([0.03])
    with pytest.raises(UsageError):
        perturbed.curriculum(0.02, 1)


def test_encoder_at_init_reduces_the_coherence_loss_and_is_gradient_descent(problem):
    model = build("robust-alista", problem, {"K": 3}, F64)
    b = perturbed.fixed_set(problem, "val", 0.01, 3, 2)
    with torch.no_grad():
        W = model.weights(b.A)
    before, after = rel2_loss(b.A, b.A), rel2_loss(W, b.A)
    assert (after < before).all(), (before, after)
    # at the nominal A the default init is plain gradient descent with step eta (autograd gradient)
    W0 = coherence_descent(problem.A, 1e-3, 4)
    assert torch.allclose(model.weights(), W0, rtol=1e-12, atol=1e-14)
    proj = build("robust-alista", problem, {"K": 3, "project": True}, F64)
    with torch.no_grad():
        Wp = proj.weights(b.A)
    assert torch.allclose((Wp * b.A).sum(-2), torch.ones(3, problem.n, dtype=F64), atol=1e-12)  # w_i^T a_i = 1
    assert (rel2_loss(Wp, b.A) < before).all()


def test_rel2_loss_is_half_the_alista_objective_on_the_constraint_set(problem):
    from unrolled.analytic import closed_form, objective

    W, _ = closed_form(problem.A)
    assert float(rel2_loss(W, problem.A)) == pytest.approx(objective(W, problem.A) / 2, rel=1e-10)


def test_gradient_flows_through_encoder_and_decoder(problem):
    model = build("robust-alista", problem, {"K": 3}, F64)
    b = perturbed.train_batch(problem, 0.01, 3, 4, torch.Generator().manual_seed(1), dtype=F64)
    ((model.decode(b.y, b.A) - b.x) ** 2).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_batched_decoding_equals_the_per_matrix_iteration(problem):
    """alista_iterates / decode against solvers.proximal_gradient on every matrix, selection included."""
    model = build("robust-alista", problem, {"K": 4}, F64)
    b = perturbed.fixed_set(problem, "test", 0.02, 3, 5, snr=30.0)
    with torch.no_grad():
        got = model.decode(b.y, b.A, all_layers=True)
        W = model.weights(b.A)
    for k in range(3):
        ref = list(solvers.proximal_gradient(b.A[k], b.y[k], W[k], 1.0, model.theta0(), 4, model.cuts))
        for t in range(5):
            assert torch.allclose(got[t][k], ref[t], rtol=1e-12, atol=1e-13)


def test_batched_fista_equals_fista_per_matrix(problem):
    b = perturbed.fixed_set(problem, "test", 0.01, 2, 5, snr=30.0)
    L = torch.linalg.matrix_norm(b.A, ord=2) ** 2
    got = list(perturbed.fista_iterates(b.y, b.A, 0.05, 6, L))
    for k in range(2):
        ref = list(solvers.fista(b.A[k], b.y[k], 0.05, 6))
        assert all(torch.allclose(g[k], r, rtol=1e-12, atol=1e-13) for g, r in zip(got, ref))
    assert tune_fista(b, 6) > 0


def test_curriculum_training_runs_its_stages_resumes_and_refuses_other_options(problem, tmp_path):
    opts = RobustOptions(task="joint", sigmas=perturbed.curriculum(0.02, 3), steps=4, matrices=2, signals=3,
                         eval_every=2, val_matrices=2, val_signals=3, lr=1e-3)
    model = build("robust-alista", problem, {"K": 2})
    train_perturbed(model, problem, opts, tmp_path / "joint", log=lambda s: None)
    rows = [json.loads(line) for line in (tmp_path / "joint" / "metrics.jsonl").read_text().splitlines()]
    assert [r["sigma"] for r in rows] == pytest.approx([0.01, 0.01, 0.02, 0.02])
    assert (tmp_path / "joint" / "result.json").exists()
    again = build("robust-alista", problem, {"K": 2})
    train_perturbed(again, problem, opts, tmp_path / "joint", log=lambda s: None)  # finished: loads
    for (k, p), q in zip(model.named_parameters(), again.parameters()):
        assert torch.equal(p, q), k
    with pytest.raises(UsageError, match="other options"):
        train_perturbed(again, problem, RobustOptions(**{**opts.__dict__, "steps": 5}), tmp_path / "joint")


def test_interrupted_training_resumes_to_the_same_weights(problem, tmp_path):
    """A checkpoint mid-stage continues to the bits of an uninterrupted run."""
    opts = RobustOptions(task="augment", sigmas=[0.01, 0.02], steps=6, matrices=2, signals=3, eval_every=2,
                         val_matrices=2, val_signals=3, lr=1e-2)
    whole = train_perturbed(build("tilista", problem, {"K": 2}), problem, opts, tmp_path / "a", log=lambda s: None)

    class Stop(Exception):
        pass

    from unrolled.training import robust as R

    calls = {"n": 0}
    original = R.RobustTrainer._save

    def save_then_stop(self):
        original(self)
        calls["n"] += 1
        if calls["n"] == 4:  # inside the second stage
            raise Stop

    R.RobustTrainer._save = save_then_stop
    try:
        with pytest.raises(Stop):
            train_perturbed(build("tilista", problem, {"K": 2}), problem, opts, tmp_path / "b", log=lambda s: None)
    finally:
        R.RobustTrainer._save = original
    resumed = train_perturbed(build("tilista", problem, {"K": 2}), problem, opts, tmp_path / "b", log=lambda s: None)
    for (k, p), q in zip(whole.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), k


def test_encoder_task_needs_robust_alista(problem):
    with pytest.raises(UsageError, match="robust-alista"):
        train_perturbed(build("alista", problem, {"K": 2}), problem, RobustOptions(task="joint", steps=1))
    assert math.isinf(RobustOptions().snr)


def test_batched_closed_form_equals_the_svd_closed_form(problem):
    from unrolled.analytic import closed_form

    b = perturbed.fixed_set(problem, "test", 0.02, 3, 1)
    W = perturbed.closed_form_batch(b.A)
    for k in range(3):
        assert torch.allclose(W[k], closed_form(b.A[k])[0], rtol=1e-10, atol=1e-12)
    low = b.A.clone()
    low[1, -1] = low[1, 0]  # a repeated row: A A^T singular, the pseudo-inverse path
    W = perturbed.closed_form_batch(low)
    assert torch.allclose(W[1], closed_form(low[1])[0], atol=1e-10)


def test_cli_trains_on_perturbed_matrices_and_refuses_other_schedules(tmp_path, capsys):
    from unrolled.cli import main

    Problem(ProblemSpec(m=13, n=29, p=0.15, seed=4)).save(tmp_path / "p.npz")
    base = ["train", str(tmp_path / "p.npz"), "--layers", "2", "--eval-every", "2"]
    assert main([*base, "--model", "alista", "--perturb", "0.02", "--psteps", "3", "--budget-samples", "256",
                 "--out", str(tmp_path / "aug")]) == 0
    assert "sigma 0.01, 0.02" in capsys.readouterr().out
    assert (tmp_path / "aug" / "weights.safetensors").exists()
    assert main([*base, "--model", "tilista", "--perturb", "0.02", "--schedule", "stagewise",
                 "--out", str(tmp_path / "x")]) == 2
    assert "--perturb has its own curriculum" in capsys.readouterr().err
