"""Bring your own data: finite pools (generated or from files), validation split off the pool,
unsupervised training from measurements, bit-identical resume inside an epoch, predictions."""

from __future__ import annotations

import pytest
import torch
from faults import killed_at

import unrolled as ur
from unrolled import UsageError
from unrolled.problem import Problem, ProblemSpec
from unrolled.training.data import DataSpec, Pool, to_problem_units, to_user_units


def small_spec(**kw) -> ProblemSpec:
    return ProblemSpec(**{**dict(m=23, n=41, p=0.15, snr=40.0, val_size=100, test_size=200, seed=3), **kw})


@pytest.fixture(scope="module")
def problem() -> Problem:
    return Problem(small_spec())


# -- the pool ------------------------------------------------------------------------------------


def test_pool_visits_every_sample_once_per_epoch_in_a_seeded_order(problem):
    pool = Pool.generated(problem, 50, seed=1)
    assert len(pool) == 50 and pool.x.shape == (50, 41) and pool.y.shape == (50, 23)
    assert pool.x.dtype == torch.float32
    idx = pool.indices(0, 150)  # three epochs, batches of 150 crossing none
    for e in range(3):
        assert sorted(idx[50 * e: 50 * (e + 1)].tolist()) == list(range(50))
        assert torch.equal(idx[50 * e: 50 * (e + 1)], pool.order(e))
    assert not torch.equal(pool.order(0), pool.order(1)), "every epoch is reshuffled"
    # a batch crossing the end of an epoch is the concatenation of both epochs' orders
    assert torch.equal(pool.indices(45, 10), torch.cat([pool.order(0)[45:], pool.order(1)[:5]]))
    # stateless: any position, any batch size, the same sequence
    assert torch.equal(torch.cat([pool.indices(s, 7) for s in range(0, 147, 7)]), idx[:147])
    # the same seed gives the same order, another seed another
    assert torch.equal(Pool.generated(problem, 50, seed=1).indices(0, 150), idx)
    assert not torch.equal(Pool.generated(problem, 50, seed=2).indices(0, 50), idx[:50])


def test_a_generated_pool_is_the_problems_and_is_measured_like_its_samples(problem):
    a = Pool.generated(problem, 5000, seed=0, dtype=torch.float64)  # two blocks of 4096
    b = Pool.generated(problem, 5000, seed=9, dtype=torch.float64)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y), "the pool's content is the problem's, not the seed's"
    x_val, _ = problem.validation(torch.float64)
    assert not torch.equal(a.x[:100], x_val), "the pool is not the validation set"
    noise = a.y - a.x @ problem.A.T
    snr = 20 * torch.log10((a.x @ problem.A.T).std(1, correction=0) / noise.std(1, correction=0))
    assert float(snr[torch.isfinite(snr)].mean()) == pytest.approx(40.0, abs=0.5)
    assert a.x[:4096].count_nonzero() / (4096 * 41) == pytest.approx(0.15, abs=0.01)


def test_split_is_seeded_and_disjoint(problem):
    pool = Pool.generated(problem, 40, seed=0, dtype=torch.float64)
    rest, held = pool.split(10, seed=5)
    assert len(rest) == 30 and len(held) == 10
    rows = {tuple(r.tolist()) for r in pool.x}
    assert {tuple(r.tolist()) for r in rest.x} | {tuple(r.tolist()) for r in held.x} == rows
    assert not {tuple(r.tolist()) for r in rest.x} & {tuple(r.tolist()) for r in held.x}
    again = pool.split(10, seed=5)[1]
    assert torch.equal(again.x, held.x) and not torch.equal(pool.split(10, seed=6)[1].x, held.x)
    with pytest.raises(UsageError, match="keep at least one"):
        pool.split(40, seed=0)


def test_units_use_the_problems_column_scale_when_it_has_one(problem):
    x = torch.randn(3, 41, dtype=torch.float64)
    assert to_problem_units(problem, x) is x and to_user_units(problem, x) is x

    class Scaled(Problem):
        scale = torch.linspace(0.5, 2.0, 41, dtype=torch.float64)

    scaled = Scaled(small_spec())
    assert torch.allclose(to_problem_units(scaled, x), x * Scaled.scale)
    assert torch.allclose(to_user_units(scaled, to_problem_units(scaled, x)), x, rtol=1e-15)


# -- training on a pool --------------------------------------------------------------------------


def _train(problem, out, data, **kw):
    kw = {**dict(budget=64 * 12, lr=2e-3, batch=64, eval_every=2, seed=4), **kw}
    return ur.train(problem, "alista", {"K": 3}, out=out, data=data, log=lambda s: None, **kw)


def test_training_on_a_generated_pool_draws_only_pool_samples(problem, monkeypatch):
    calls = []
    sample = Problem.sample
    monkeypatch.setattr(Problem, "sample", lambda self, *a, **k: calls.append(a[0]) or sample(self, *a, **k))
    run = _train(problem, None, DataSpec(pool=100))
    assert calls and all(c <= 4096 for c in calls) and sum(calls) == 100, "only the pool was drawn, once"
    assert run.result["samples"] == 64 * 12  # 7.7 epochs of the pool


def test_a_pool_run_records_its_data_and_resumes_bit_identically_inside_an_epoch(problem, tmp_path):
    spec = DataSpec(pool=100)
    ref = tmp_path / "ref"
    _train(problem, ref, spec)
    cfg = ur.load(ref).config
    assert cfg["data"] == {"pool": 100}
    run = tmp_path / "run"
    # 12 steps of 64 over a pool of 100: checkpoints every 2 steps (128 samples) fall inside epochs
    code = killed_at(40, lambda: _train(problem, run, spec))
    assert code == 75 and not (run / "result.json").exists()
    assert (run / "state.safetensors").exists(), "killed before the first checkpoint"
    ur.resume(run, log=lambda s: None)
    assert (ref / "weights.safetensors").read_bytes() == (run / "weights.safetensors").read_bytes()
    assert (ref / "metrics.jsonl").read_bytes() == (run / "metrics.jsonl").read_bytes()


def test_fresh_training_is_unchanged_by_the_data_hook(problem, tmp_path):
    a = _train(problem, tmp_path / "a", None)
    b = _train(problem, tmp_path / "b", DataSpec())
    assert "data" not in a.config and "data" not in b.config
    weights = [(tmp_path / d / "weights.safetensors").read_bytes() for d in "ab"]
    assert weights[0] == weights[1]
