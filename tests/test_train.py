"""Trainer: schedules, known optimum, best-weight restore, bit-identical resume, NaN rollback, tampering."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from unrolled import Problem, ProblemSpec, UsageError
from unrolled.cli import main
from unrolled.io import load_safetensors
from unrolled.models import Config, UnrolledNet, build
from unrolled.training import RunDir, Stage, Trainer, TrainOptions, end_to_end, load_weights, stagewise


@dataclass
class ScaleConfig(Config):
    c0: float = 0.3


class Scale(UnrolledNet):
    """Test model with one parameter: ``x = c A^T y`` (K = 1)."""

    name = "scale"
    Config = ScaleConfig

    def __init__(self, problem, config):
        super().__init__(problem, config)
        self.c = nn.Parameter(torch.tensor(config.c0, dtype=torch.float64))

    def step(self, t, x, y, ctx):
        return self.c * (y @ self.A)


def orthogonal_problem(n: int = 17, seed: int = 0) -> Problem:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    return Problem(ProblemSpec(m=n, n=n, p=0.3, val_size=200, test_size=200, seed=seed), A=q)


def small_problem(snr: float = 40.0) -> Problem:
    return Problem(ProblemSpec(m=23, n=41, p=0.15, snr=snr, val_size=300, test_size=500, seed=3))


def test_one_parameter_model_learns_known_optimum():
    # Orthogonal A, no noise: A^T y = x exactly, so the MSE optimum is c = 1.
    problem = orthogonal_problem()
    model = Scale(problem, ScaleConfig(K=1)).to(torch.float64)
    stages = [Stage("fit", (1,), 1, lr=0.05, max_steps=300, patience=10**9)]
    Trainer(model, problem, stages, TrainOptions(batch=64, eval_every=25, val_size=200)).run()
    assert abs(float(model.c.detach()) - 1.0) < 1e-3


def test_stagewise_order_and_learning_rates():
    K, lr = 4, 5e-4
    stages = stagewise(K, lr=lr, samples=K * 512 * 100, batch=512, decay=0.3)
    assert len(stages) == 3 * K
    for t in range(1, K + 1):
        new, all_, fine = stages[3 * (t - 1): 3 * t]
        assert new.layers == (t,) and new.depth == t and new.lr == lr
        assert all_.layers == fine.layers == tuple(range(1, t + 1))
        assert math.isclose(all_.lr, lr * 0.2) and math.isclose(fine.lr, lr * 0.02)
        # A true learning-rate decay: layer l trains at lr * 0.3^(t - l).
        assert math.isclose(all_.lr_of(1), lr * 0.2 * 0.3 ** (t - 1))
        assert math.isclose(all_.lr_of(t), lr * 0.2)
    e2e = end_to_end(K, lr=1e-3, samples=512 * 100, batch=512, fine=(0.1,))
    assert e2e[0].layers == tuple(range(1, K + 1)) and e2e[0].depth == K and e2e[0].clip == 1.0
    assert e2e[1].lr == pytest.approx(1e-4)


def test_optimiser_groups_use_per_layer_learning_rates():
    problem = small_problem()
    model = build("alista", problem, dict(K=3), torch.float64)
    stage = stagewise(3, lr=1e-3, samples=3 * 512 * 10)[7]  # layer 3, all layers at lr * 0.2
    trainer = Trainer(model, problem, [stage], TrainOptions(val_size=100))
    opt = trainer._make_optim(stage)
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs == pytest.approx([1e-3 * 0.2 * 0.3**2, 1e-3 * 0.2 * 0.3, 1e-3 * 0.2])


def test_tied_weights_train_at_the_newest_layers_rate():
    problem = small_problem()
    model = build("lista", problem, dict(K=3, tied=True), torch.float64)
    stage = stagewise(3, lr=1e-3, samples=3 * 512 * 10)[7]  # layer 3, all layers at lr * 0.2
    opt = Trainer(model, problem, [stage], TrainOptions(val_size=100))._make_optim(stage)
    shared = {id(p) for p in model.shared_parameters()}
    assert shared, "tied LISTA must have shared parameters"
    for g in opt.param_groups:
        if any(id(p) in shared for p in g["params"]):
            assert all(id(p) in shared for p in g["params"]) and g["lr"] == pytest.approx(1e-3 * 0.2)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_best_validation_weights_are_restored():
    problem = small_problem()
    model = build("alista", problem, dict(K=3, gamma0=1.0, guard=False), torch.float64)
    # A learning rate far too large (no step guard to hold it): later steps get worse; the stage
    # must end on its best.
    stage = Stage("big", (1, 2, 3), 3, lr=0.5, max_steps=40, patience=10**9)
    trainer = Trainer(model, problem, [stage], TrainOptions(batch=32, eval_every=5, val_size=300))
    seen = []
    validate = trainer.validate
    trainer.validate = lambda s: seen.append(validate(s)) or seen[-1]
    trainer.run()
    assert seen[-1] > min(seen) + 0.1, "the test needs a stage that ends worse than its best"
    assert validate(stage) == pytest.approx(min(seen), abs=1e-12)


def _train_args(problem_path: Path, out: Path, extra: list[str] = ()) -> list[str]:
    return ["train", str(problem_path), "--model", "alista", "--layers", "4", "--out", str(out),
            "--schedule", "stagewise", "--budget-samples", str(4 * 64 * 30), "--batch", "64", "--eval-every", "5",
            "--seed", "7", *extra]


@pytest.fixture
def problem_file(tmp_path):
    return small_problem().save(tmp_path / "p.npz")


def test_resume_after_kill_is_bit_identical(tmp_path, problem_file):
    ref = tmp_path / "ref"
    assert main(_train_args(problem_file, ref)) == 0
    # Kill a second identical run with SIGKILL part-way, then resume it.
    run = tmp_path / "run"
    code = f"import sys; from unrolled.cli import main; sys.exit(main({_train_args(problem_file, run)!r}))"
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # wait until a few stages have been checkpointed
        if line.startswith("stage 4/"):
            proc.kill()
            break
    proc.wait()
    assert not (run / "result.json").exists(), "the run finished before it was killed"
    assert main(["train", "--resume", str(run)]) == 0
    a = (ref / "weights.safetensors").read_bytes()
    b = (run / "weights.safetensors").read_bytes()
    assert a == b
    assert (ref / "metrics.jsonl").read_bytes() == (run / "metrics.jsonl").read_bytes()


def test_nan_loss_rolls_back_and_halves_learning_rate(monkeypatch):
    problem = small_problem()
    model = build("alista", problem, dict(K=3), torch.float64)
    stage = Stage("e2e", (1, 2, 3), 3, lr=1e-3, max_steps=30, patience=10**9)
    trainer = Trainer(model, problem, [stage], TrainOptions(batch=32, eval_every=5, val_size=100))
    sample, calls = problem.sample, {"n": 0}

    def poisoned(*args, **kw):
        x, y = sample(*args, **kw)
        calls["n"] += 1
        return (x, y * float("nan")) if calls["n"] == 12 else (x, y)

    monkeypatch.setattr(problem, "sample", poisoned)
    logs = []
    trainer.log = logs.append
    trainer.run()
    assert trainer.c["nan_events"] == 1
    assert any("learning rate halved" in m for m in logs)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert trainer.c["total_steps"] == 30  # the poisoned batch was skipped, training went on


def test_tampered_weights_are_refused(tmp_path, problem_file, capsys):
    run = tmp_path / "run"
    assert main(_train_args(problem_file, run)) == 0
    w = run / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside a tensor
    w.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["eval", str(run), "--test-size", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checksum" in err


def test_cli_train_eval_round_trip(tmp_path, problem_file, capsys):
    run = tmp_path / "run"
    assert main(_train_args(problem_file, run)) == 0
    assert main(["eval", str(run), "--test-size", "200"]) == 0
    out = capsys.readouterr().out
    assert "alista" in out and "ista" in out and "oracle" in out
    rows = (run / "eval.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header[:3] == ["method", "layer", "nmse_db"]
    methods = {r.split(",")[0] for r in rows[1:]}
    assert {"alista", "ista", "fista", "oracle-ls"} <= methods
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"] == "alista" and len(cfg["stages"]) == 12
    # trained beats untrained at the same depth on the test set
    res = {r.split(",")[0]: float(r.split(",")[2]) for r in rows[1:] if r.split(",")[1] == "4"}
    assert res["alista"] < res["ista"]


def test_eval_on_validation_with_a_changed_config_writes_its_own_table(tmp_path, problem_file, capsys):
    run = tmp_path / "run"
    assert main(_train_args(problem_file, run)) == 0
    assert main(["eval", str(run), "--test-size", "200"]) == 0
    plain = (run / "eval.csv").read_text()
    assert main(["eval", str(run), "--split", "validation", "--set", "ss.ramp=0.5"]) == 0
    out = capsys.readouterr().out
    assert "validation set" in out and "ss.ramp" in out
    assert (run / "eval.csv").read_text() == plain  # the test table is left alone
    rows = (run / "eval-validation-ss.ramp=0.5.csv").read_text().splitlines()
    header = rows[0].split(",")
    first = dict(zip(header, rows[1].split(","), strict=False))
    assert first["split"] == "validation" and "ss.ramp" in first["overrides"]
    # the validation set, not the test set: the numbers differ from the test table's
    assert rows[1:] != plain.splitlines()[1:]
    # a field that would change the weights' shapes, an unknown field, a test option: one line each
    for args, words in ((["--set", "K=5"], "does not fit"), (["--set", "nope=1"], "unknown config field"),
                        (["--split", "validation", "--test-size", "9"], "drop --test-x")):
        assert main(["eval", str(run), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err


def test_existing_run_is_not_overwritten(tmp_path, problem_file, capsys):
    run = tmp_path / "run"
    assert main(_train_args(problem_file, run)) == 0
    capsys.readouterr()
    assert main(_train_args(problem_file, run)) == 2
    assert "--resume" in capsys.readouterr().err


def test_load_weights_checks_shapes(tmp_path):
    problem = small_problem()
    model = build("alista", problem, dict(K=3), torch.float64)
    trainer = Trainer(model, problem, end_to_end(3, samples=64 * 3, batch=64, fine=()), TrainOptions(batch=64),
                      tmp_path / "r")
    (tmp_path / "r").mkdir()
    trainer.run()
    RunDir(tmp_path / "r").finish(trainer)
    other = build("alista", problem, dict(K=4), torch.float64)
    sha = json.loads((tmp_path / "r" / "result.json").read_text())["weights_sha256"]
    with pytest.raises(UsageError, match="does not fit"):
        load_weights(other, tmp_path / "r" / "weights.safetensors", sha)


def test_init_from_warm_starts_with_the_source_weights(tmp_path, problem_file, capsys):
    src = tmp_path / "src"
    assert main(_train_args(problem_file, src)) == 0
    # A one-step continuation with a tiny learning rate stays next to the source weights.
    dst = tmp_path / "dst"
    args = ["train", str(problem_file), "--model", "alista", "--layers", "4", "--out", str(dst),
            "--init-from", str(src), "--set", "ss=count", "--set", "ss.theta=true", "--budget-samples", "64",
            "--batch", "64", "--lr", "1e-9"]
    assert main(args) == 0
    cfg = json.loads((dst / "config.json").read_text())
    sha = json.loads((src / "result.json").read_text())["weights_sha256"]
    assert cfg["init_from"]["weights_sha256"] == sha and cfg["model_config"]["ss"]["theta"] is True
    a = load_safetensors(src / "weights.safetensors")
    b = load_safetensors(dst / "weights.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    capsys.readouterr()
    bad = ["train", str(problem_file), "--model", "tilista", "--layers", "4", "--out", str(tmp_path / "bad"),
           "--init-from", str(src)]
    assert main(bad) == 2
    assert "does not fit model 'tilista'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before anything is written
    # ALISTA-AT has ALISTA's parameters (its thresholds adapt per entry): a warm start across families.
    at = ["train", str(problem_file), "--model", "alista-at", "--layers", "4", "--out", str(tmp_path / "at"),
          "--init-from", str(src), "--budget-samples", "64", "--batch", "64", "--lr", "1e-9"]
    assert main(at) == 0
    assert json.loads((tmp_path / "at" / "config.json").read_text())["init_from"]["model"] == "alista"


def test_only_finite_states_near_the_best_count_as_last_good(monkeypatch):
    # Validations -5 (start), -6, -2, NaN, -5.5 dB: with a 3 dB margin, the -2 dB and the NaN
    # states are not "good", so a rollback after them returns to the -6 dB state.
    from unrolled.training.trainer import GOOD_MARGIN_DB

    assert GOOD_MARGIN_DB == 3.0
    problem = small_problem()
    model = build("alista", problem, dict(K=3), torch.float64)
    stage = Stage("e2e", (1, 2, 3), 3, lr=1e-3, max_steps=25, patience=10**9)
    trainer = Trainer(model, problem, [stage], TrainOptions(batch=32, eval_every=5, val_size=100))
    values = iter([-5.0, -6.0, -2.0, math.nan, -5.5, -5.7])
    monkeypatch.setattr(trainer, "validate", lambda s: next(values))
    good = []

    def record():
        good.append(all(torch.equal(trainer.last_good[0][k], p) for k, p in trainer.params.items()))

    monkeypatch.setattr(trainer, "_write_state", record)
    trainer.run()
    assert good[:5] == [True, False, False, True, True]


def test_a_validation_worse_than_zero_after_a_better_one_rolls_back(monkeypatch, tmp_path):
    # LISTA on a partial DCT at lr 3e-3 went from -9.2 dB to +25 dB in 50 steps and stayed above 0 dB
    # (issue 15): such a jump restores the last good state and halves the rate, as a NaN does.
    problem = small_problem()
    model = build("alista", problem, dict(K=3), torch.float64)
    stage = Stage("e2e", (1, 2, 3), 3, lr=1e-3, max_steps=20, patience=10**9)
    lines = []
    trainer = Trainer(model, problem, [stage], TrainOptions(batch=32, eval_every=5, val_size=100), tmp_path / "r",
                      log=lines.append)
    (tmp_path / "r").mkdir()
    values = iter([-5.0, -6.0, 25.0, -6.5, -7.0])
    states = {}

    def validate(s):
        v = next(values)
        states[v] = {k: p.detach().clone() for k, p in trainer.params.items()}
        return v

    monkeypatch.setattr(trainer, "validate", validate)
    restored = []
    rollback = trainer._rollback

    def checked(stage, reason):
        rollback(stage, reason)
        restored.append(all(torch.equal(p, states[-6.0][k]) for k, p in trainer.params.items()))

    monkeypatch.setattr(trainer, "_rollback", checked)
    trainer.run()
    assert trainer.c["nan_events"] == 1 and restored == [True]  # back at the -6 dB state
    assert any("+25.00 dB, worse than x_hat = 0 (best -6.00 dB)" in s and "halved" in s for s in lines)
    events = [json.loads(r) for r in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [(e["reason"][:25], e["lr_scale"]) for e in events if e.get("event") == "rollback"] == \
        [("validation NMSE +25.00 dB", 0.5)]
    assert [e["best"] for e in events if "val" in e] == [-6.0, -6.0, -6.5, -7.0]
