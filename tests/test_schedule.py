"""Schedules (docs/spec.md §7): the paper's stage-wise protocol (a fixed pool, every stage to
convergence on validation, the best weights restored) and a learned-matrix model beating ISTA."""

from __future__ import annotations

import math
import re

import pytest
import torch

from unrolled import Problem, ProblemSpec
from unrolled.metrics import nmse_db
from unrolled.models import build
from unrolled.solvers import final, ista, tune_lambda
from unrolled.training import Trainer, TrainOptions, make_schedule, stagewise
from unrolled.training.schedule import REFERENCE_MAXIT, end_to_end, paper_stagewise, progressive


def small_problem(seed: int = 3) -> Problem:
    return Problem(ProblemSpec(m=20, n=40, p=0.1, val_size=400, test_size=1000, seed=seed))


def assert_beats_ista(model, problem: Problem, K: int, margin_db: float = 3.0) -> None:
    """The trained network beats ISTA with λ tuned on validation, at the same depth, on the test set."""
    x, y = problem.test(dtype=torch.float64)
    xv, yv = problem.validation(torch.float64)
    lam, _ = tune_lambda("ista", problem.A, xv, yv, K)
    ista_db = nmse_db(final(ista(problem.A, y, lam, K)), x)
    with torch.no_grad():
        lista_db = nmse_db(model(y.float()).double(), x)
    assert math.isfinite(lista_db) and lista_db < ista_db - margin_db, (lista_db, ista_db)


def test_paper_protocol_is_the_reference_schedule():
    K = 3
    stages = paper_stagewise(K)
    assert len(stages) == 3 * K
    for t in range(1, K + 1):
        new, all_, fine = stages[3 * (t - 1): 3 * t]
        assert new.layers == (t,) and all_.layers == fine.layers == tuple(range(1, t + 1))
        assert [s.lr for s in (new, all_, fine)] == pytest.approx([5e-4, 1e-4, 1e-5])
        assert {s.depth for s in (new, all_, fine)} == {t}
    # to convergence: only patience ends a stage, within the reference's maxit per stage
    assert all(s.max_steps == REFERENCE_MAXIT and s.patience == 4000 for s in stages)
    assert make_schedule("paper-stagewise", K, patience=2000)[0].patience == 2000
    # the budget-spread variant differs only in the stage lengths
    spread = stagewise(K, lr=5e-4, samples=K * 128 * 100, batch=128, patience=4000)
    assert [s.max_steps for s in spread[:3]] == [40, 40, 20]
    assert [(s.layers, s.lr) for s in spread] == [(s.layers, s.lr) for s in stages]
    capped = stagewise(K, samples=128 * 77, batch=128, converge=True)
    assert {s.max_steps for s in capped} == {77}


def test_progressive_grows_the_depth_then_fine_tunes_at_full_depth():
    stages = progressive(10, lr=3e-3, samples=128 * 1000, batch=128, growth=4)
    assert [(s.name, s.depth, s.layers) for s in stages[:3]] == [
        ("depth4", 4, (1, 2, 3, 4)), ("depth8", 8, tuple(range(1, 9))), ("depth10", 10, tuple(range(1, 11)))]
    assert [s.max_steps for s in stages] == [250, 250, 250, 250]  # 750 main steps over 3 depths, 250 fine
    assert stages[-1].depth == 10 and stages[-1].lr == pytest.approx(3e-4) and stages[-1].cosine
    assert all(s.clip == 1.0 and s.decay == 1.0 for s in stages)
    # growth >= K is the end-to-end recipe itself
    same = progressive(6, samples=128 * 40, growth=6)
    e2e = end_to_end(6, lr=3e-3, samples=128 * 40, batch=128)
    assert [(s.layers, s.depth, s.lr, s.max_steps, s.cosine) for s in same] == [
        (s.layers, s.depth, s.lr, s.max_steps, s.cosine) for s in e2e]
    assert make_schedule("progressive", 3, growth=1)[0].depth == 1
    with pytest.raises(Exception, match="growth"):
        progressive(4, growth=0)


def test_progressive_validates_each_depth_and_beats_ista():
    problem = small_problem(seed=5)
    K = 4
    model = build("lwa", problem, dict(K=K, gates="lista"), torch.float32)
    stages = progressive(K, lr=3e-3, samples=64 * 600, batch=64, growth=2)
    trainer = Trainer(model, problem, stages, TrainOptions(batch=64, eval_every=50, val_size=400, seed=1),
                      log=lambda s: None)
    depths: list[int] = []
    validate = trainer.validate
    trainer.validate = lambda stage: depths.append(stage.depth) or validate(stage)
    trainer.run()
    assert depths[0] == 2 and depths[-1] == K and sorted(set(depths)) == [2, K]
    assert_beats_ista(model, problem, K)


def test_paper_protocol_on_a_pool_ends_stages_by_patience_and_restores_the_best():
    data_mod = pytest.importorskip("unrolled.training.data")
    problem = small_problem()
    model = build("lwa", problem, dict(K=2), torch.float64)
    pool = data_mod.DataSpec(pool=256).build(problem, 0, "mse", torch.float64)
    # a learning rate large enough that every stage overshoots and stops improving soon
    stages = paper_stagewise(2, lr=2e-2, samples=64 * 400, batch=64, patience=30)
    trainer = Trainer(model, problem, stages, TrainOptions(batch=64, eval_every=5, val_size=400),
                      log=lambda s: lines.append(s), data=pool)
    lines: list[str] = []
    problem.sample = lambda *a, **k: pytest.fail("a pooled training drew a fresh sample")
    seen: list[float] = []
    validate = trainer.validate
    trainer.validate = lambda s: seen.append(validate(s)) or seen[-1]
    restored: list[tuple[float, float]] = []
    finish = trainer._finish_stage

    def check_restore(stage):
        finish(stage)
        restored.append((validate(stage), min(seen)))
        seen.clear()

    trainer._finish_stage = check_restore
    trainer.run()
    steps = [int(re.search(r": (\d+) steps", line).group(1)) for line in lines if " steps, best" in line]
    assert len(steps) == len(stages)
    assert all(s < 400 for s in steps), f"every stage must end by patience, not by its cap: {steps}"
    assert all(s >= 30 for s in steps)
    for after, best in restored:
        assert after == pytest.approx(best, abs=1e-9)
    assert trainer.c["samples"] == 64 * sum(steps) and trainer.c["samples"] > len(pool.pool)  # several epochs


def test_learned_matrices_beat_ista_at_the_same_depth():
    problem = small_problem(seed=5)
    K = 4
    model = build("lwa", problem, dict(K=K), torch.float32)
    stages = make_schedule("end-to-end", K, lr=3e-3, samples=64 * 600, batch=64)
    Trainer(model, problem, stages, TrainOptions(batch=64, eval_every=50, val_size=400, seed=1),
            log=lambda s: None).run()
    assert_beats_ista(model, problem, K)
