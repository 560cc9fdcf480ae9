"""Run directories that survive anything: a kill at every write, concurrent writers, tampered
files, symbolic links, runs of the previous format, and divergence."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from faults import killed_at

import unrolled as ur
from unrolled import io
from unrolled.cli import main
from unrolled.io import read_safetensors, save_safetensors, sha256, write_json
from unrolled.problem import Problem, ProblemSpec

BASE_RUNS = Path("/work/base/runs")  # runs written by the previous release (format unrolled-run-v1)


def _args(problem_file: Path, out: Path, *extra: str) -> list[str]:
    """A tiny run: ALISTA K=3 on 23 x 41, end-to-end (2 stages, 6 steps), a checkpoint every 2 steps."""
    return ["train", str(problem_file), "--model", "alista", "--layers", "3", "--out", str(out),
            "--budget-samples", "192", "--batch", "32", "--eval-every", "2", "--seed", "1", *extra]


@pytest.fixture(scope="module")
def problem_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("p") / "p.npz"
    return Problem(ProblemSpec(m=23, n=41, p=0.15, snr=40.0, val_size=100, test_size=100, seed=3)).save(path)


@pytest.fixture(scope="module")
def reference(problem_file, tmp_path_factory) -> tuple[Path, list[str]]:
    """An uninterrupted run and the fault points it passed, in order."""
    out = tmp_path_factory.mktemp("ref") / "run"
    points: list[str] = []
    io._fault_hook = points.append
    try:
        assert main(_args(problem_file, out)) == 0
    finally:
        io._fault_hook = None
    return out, points


def _same(a: Path, b: Path) -> None:
    assert (a / "weights.safetensors").read_bytes() == (b / "weights.safetensors").read_bytes()
    assert (a / "metrics.jsonl").read_bytes() == (b / "metrics.jsonl").read_bytes()


def _killed_at(k: int, argv: list[str]) -> int:
    """Run ``main(argv)`` in a forked child that dies (``os._exit``, no cleanup) at fault point ``k``."""
    return killed_at(k, lambda: main(argv))


def test_a_kill_at_every_write_resumes_bit_identically(reference, problem_file, tmp_path, capsys):
    ref, points = reference
    assert len(points) >= 25 and points.count("state.safetensors: synced, not renamed") >= 4
    for k in range(1, len(points) + 1):
        run = tmp_path / f"k{k}"
        assert _killed_at(k, _args(problem_file, run)) == 75, f"fault point {k} ({points[k - 1]}) was not reached"
        if (run / "config.json").exists():
            assert main(["train", "--resume", str(run)]) == 0, f"killed at {points[k - 1]}: resume failed"
        else:  # killed before the run existed: the same command starts it
            assert main(_args(problem_file, run)) == 0, f"killed at {points[k - 1]}: a fresh start was refused"
        _same(ref, run)
        assert not list(run.glob("*.tmp")) and not list(run.glob(".*.tmp")), "a stale .tmp file was left"
    capsys.readouterr()


def test_a_resume_killed_again_still_resumes(reference, problem_file, tmp_path):
    ref, points = reference
    run = tmp_path / "run"
    assert _killed_at(12, _args(problem_file, run)) == 75
    assert _killed_at(5, ["train", "--resume", str(run)]) == 75
    assert main(["train", "--resume", str(run)]) == 0
    _same(ref, run)


def test_a_second_writer_is_refused_naming_the_holder(problem_file, tmp_path, capsys):
    run = tmp_path / "run"
    code = ("import sys, time; from unrolled import io; from unrolled.cli import main\n"
            "io._fault_hook = lambda at: time.sleep(30) if at.startswith('state.safetensors: written') else None\n"
            f"sys.exit(main({_args(problem_file, run)!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # the first validation: the holder sleeps inside its checkpoint
            if line.startswith("stage 1/"):
                break
        capsys.readouterr()
        assert main(["train", "--resume", str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"PID {proc.pid}" in err, err
        assert main(_args(problem_file, run, "--lr", "0.01")) == 2  # a fresh start into it: refused too
        err = capsys.readouterr().err.strip()
        assert f"PID {proc.pid}" in err and "--resume" not in err, err
        assert main(["eval", str(run), "--test-size", "20"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"PID {proc.pid}" in err and "--resume" not in err, err
    finally:
        proc.kill()
        proc.wait()
    assert main(["train", "--resume", str(run)]) == 0  # the kernel released the dead holder's lock


def test_train_out_refuses_a_directory_that_is_not_a_run(problem_file, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("weights.safetensors", "eval.csv", "metrics.jsonl", "result.json"):
        (mine / name).write_text("the user's own file")
    assert main(_args(problem_file, mine)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a run" in err
    assert sorted(p.name for p in mine.iterdir()) == ["eval.csv", "metrics.jsonl", "result.json",
                                                      "weights.safetensors"]
    assert all(p.read_text() == "the user's own file" for p in mine.iterdir())
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(_args(problem_file, afile)) == 2 and afile.read_text() == "x"


@pytest.fixture
def finished(reference, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(reference[0], run)
    return run


def _edit_json(path: Path, **changes) -> None:
    d = json.loads(path.read_text())
    for k, v in changes.items():
        node, *keys = k.split("__")
        target = d
        for key in [node, *keys][:-1]:
            target = target[key]
        target[[node, *keys][-1]] = v
    path.write_text(json.dumps(d))


def _one_line_error(argv: list[str], capsys, *words: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    out = capsys.readouterr().err
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in out, out
    err = errors[0]
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize("tamper, words", [
    (lambda r: _edit_json(r / "result.json", samples="many"), ["result.json", "samples"]),
    (lambda r: (r / "result.json").write_text("{not json"), ["result.json", "not valid JSON"]),
    (lambda r: (r / "result.json").write_text("[1, 2]"), ["result.json"]),
    (lambda r: _edit_json(r / "result.json", weights_sha256=None), ["weights_sha256"]),
    (lambda r: _edit_json(r / "config.json", options__lr_note=1), ["config.json was modified"]),
    (lambda r: _edit_json(r / "config.json", problem=None), ["problem record"]),
    (lambda r: shutil.copyfile(r / "weights.safetensors", r / "problem.npz"), ["problem.npz was modified"]),
])
def test_eval_of_tampered_files_is_one_line(finished, capsys, tamper, words):
    tamper(finished)
    _one_line_error(["eval", str(finished), "--test-size", "20"], capsys, *words)
    with pytest.raises(ur.UsageError):
        ur.load(finished)  # predict goes through load: the same checks


def _unfinished(problem_file: Path, run: Path, k: int = 16) -> Path:
    assert _killed_at(k, _args(problem_file, run)) == 75
    assert not (run / "result.json").exists()
    return run


def test_resume_refuses_a_changed_config_naming_the_fields(problem_file, tmp_path, capsys):
    run = _unfinished(problem_file, tmp_path / "run")
    cfg = json.loads((run / "config.json").read_text())
    _edit_json(run / "config.json", options__batch=64, model="alista-at")
    _one_line_error(["train", "--resume", str(run)], capsys, "options.batch", "model", "changed")
    (run / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    _edit_json(run / "config.json", options__seed=2)
    _one_line_error(["train", "--resume", str(run)], capsys, "options.seed")
    (run / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    _one_line_error(["train", "--resume", str(run), "--lr", "0.1", "--budget-samples", "999"], capsys,
                    "drop --budget-samples, --lr")
    assert main(["train", "--resume", str(run)]) == 0


def test_tampered_checkpoint_counters_and_metrics_are_one_line(problem_file, tmp_path, capsys):
    run = _unfinished(problem_file, tmp_path / "run")
    state = run / "state.safetensors"
    tensors, meta = read_safetensors(state)
    progress = json.loads(meta["progress"])
    meta["progress"] = json.dumps({**progress, "metrics_bytes": 10_000_000})
    save_safetensors(state, tensors, meta)
    _one_line_error(["train", "--resume", str(run)], capsys, "checksum")
    assert (run / "metrics.jsonl").stat().st_size < 10_000  # not extended with NUL bytes
    state.write_bytes(b"\0" * 100)
    _one_line_error(["train", "--resume", str(run)], capsys, "state.safetensors")


def test_no_write_goes_through_a_symbolic_link(problem_file, tmp_path, capsys):
    run = _unfinished(problem_file, tmp_path / "run")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n" * 1000)
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(victim)
    _one_line_error(["train", "--resume", str(run)], capsys, "symbolic link")
    assert victim.read_text() == "precious\n" * 1000
    # A fresh run into a directory whose tmp names point elsewhere: atomic writes replace links.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / ".problem.npz.tmp").symlink_to(victim)
    (fresh / "problem.npz").symlink_to(victim)
    assert main(_args(problem_file, fresh)) == 0
    assert victim.read_text() == "precious\n" * 1000
    assert not (fresh / "problem.npz").is_symlink()


def test_a_cuda_run_resumes_on_the_cpu_with_a_note(problem_file, tmp_path, capsys, monkeypatch):
    run = _unfinished(problem_file, tmp_path / "run")
    cfg = json.loads((run / "config.json").read_text())
    cfg["device"] = "cuda"
    (run / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    state = run / "state.safetensors"  # as if it had been started on cuda: the checkpoint agrees
    tensors, meta = read_safetensors(state)
    meta["config"] = (run / "config.json").read_text()
    meta["digest"] = io.tensors_digest(tensors, meta["progress"] + meta["config"])
    save_safetensors(state, tensors, meta)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    assert "continues on the CPU" in capsys.readouterr().err


def _as_v1(run: Path) -> None:
    """Rewrite a run in the previous format: counters in progress.json, no config hash."""
    cfg = json.loads((run / "config.json").read_text())
    cfg["format"] = "unrolled-run-v1"
    write_json(run / "config.json", cfg)
    tensors, meta = read_safetensors(run / "state.safetensors")
    progress = json.loads(meta["progress"])
    for k in ("good/", "good-optim/"):
        tensors = {n: v for n, v in tensors.items() if not n.startswith(k)}
    sha = save_safetensors(run / "state.safetensors", tensors, {"format": "unrolled-run-v1"})
    progress.pop("stage_rollbacks", None)
    write_json(run / "progress.json", {**progress, "state_sha256": sha})
    if (run / "result.json").exists():
        _edit_json(run / "result.json")
        result = json.loads((run / "result.json").read_text())
        result.pop("config_sha256")
        write_json(run / "result.json", result)


def test_runs_of_the_previous_format_load_and_resume(reference, problem_file, tmp_path, capsys):
    ref = reference[0]
    done = tmp_path / "done"
    shutil.copytree(ref, done)
    _as_v1(done)
    run = ur.load(done)
    assert run.predict(torch.zeros(2, 23, dtype=torch.float64)).shape == (2, 41)
    assert main(["eval", str(done), "--test-size", "20"]) == 0
    half = _unfinished(problem_file, tmp_path / "half")
    _as_v1(half)
    assert main(["train", "--resume", str(half)]) == 0
    _same(ref, half)
    # A v1 checkpoint killed between its two files: explained as an interrupted checkpoint.
    half2 = _unfinished(problem_file, tmp_path / "half2")
    _as_v1(half2)
    tensors, _ = read_safetensors(half2 / "state.safetensors")
    save_safetensors(half2 / "state.safetensors", {**tensors, "generator": tensors["generator"].flip(0)},
                     {"format": "unrolled-run-v1"})
    _one_line_error(["train", "--resume", str(half2)], capsys, "interrupted")
    capsys.readouterr()


@pytest.mark.skipif(not BASE_RUNS.is_dir(), reason="no runs of the previous release here")
def test_runs_written_by_the_previous_release_still_evaluate(tmp_path):
    for src in sorted(BASE_RUNS.iterdir())[:3]:
        run = ur.load(shutil.copytree(src, tmp_path / src.name))
        rows = ur.evaluate(run, test_size=20, baselines=(), oracle=False)
        assert rows and all(r["method"] == run.config["model"] for r in rows)


def test_an_infinite_learning_rate_is_refused_before_any_work(problem_file, tmp_path, capsys):
    _one_line_error(_args(problem_file, tmp_path / "run", "--lr", "inf"), capsys, "--lr", "finite")
    assert not (tmp_path / "run").exists()


def test_a_divergence_ends_on_the_best_weights_not_done(problem_file, tmp_path, capsys):
    run = tmp_path / "run"
    argv = _args(problem_file, run, "--lr", "1e30")
    argv[argv.index("--budget-samples") + 1] = str(32 * 120)
    err = _one_line_error(argv, capsys, "diverged", "20 rollbacks", "best weights", "weights.safetensors")
    assert "--lr" not in err
    result = json.loads((run / "result.json").read_text())
    assert "diverged" in result
    loaded = ur.load(run)  # the kept best weights: finite, and as good as the best validation
    assert all(torch.isfinite(p).all() for p in loaded.model.parameters())
    assert sha256(run / "weights.safetensors") == result["weights_sha256"]


def _cli(argv: list[str], kill_at: int | None = None) -> int:
    """``unrolled ARGV`` in a fresh process; ``kill_at``: it dies at that fault point ($UNROLLED_FAULT_AT)."""
    env = {**os.environ, io.FAULT_ENV: str(kill_at)} if kill_at else {
        k: v for k, v in os.environ.items() if k != io.FAULT_ENV}
    return subprocess.run([sys.executable, "-m", "unrolled", *argv], env=env, capture_output=True).returncode


def test_the_fault_environment_variable_kills_a_real_process(reference, problem_file, tmp_path):
    ref, points = reference
    run = tmp_path / "run"
    k = points.index("state.safetensors: synced, not renamed") + 1 + 5  # inside the second checkpoint
    assert _cli(_args(problem_file, run), kill_at=k) == 75
    assert _cli(["train", "--resume", str(run)]) == 0
    _same(ref, run)


@pytest.mark.slow
def test_random_kills_never_leave_an_unresumable_run(reference, problem_file, tmp_path, capsys):
    """200 random kills (of trainings and of their resumes, in forked processes), every run then
    resumed until it finishes bit-identically (the real-process path: the test above)."""
    import random

    ref, points = reference
    rng = random.Random(0)
    kills, runs = 0, 0
    while kills < 200:
        runs += 1
        run = tmp_path / f"r{runs}"
        while not (run / "result.json").exists():
            cmd = ["train", "--resume", str(run)] if (run / "config.json").exists() else _args(problem_file, run)
            if rng.random() < 0.8:
                rc = _killed_at(rng.randint(1, len(points)), cmd)
                assert rc in (0, 75)
                kills += rc == 75
            else:
                assert main(cmd) == 0
        _same(ref, run)
    capsys.readouterr()
    with capsys.disabled():
        print(f"\n{kills} kills over {runs} runs, every one resumed bit-identically")
