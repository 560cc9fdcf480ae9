"""The Python API: train, load (hash-checked), predict (numpy or torch, any float dtype), evaluate."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import unrolled as ur
from unrolled import UsageError
from unrolled.cli import main
from unrolled.models import build
from unrolled.training import end_to_end

QUIET = dict(log=lambda line: None)
TINY = dict(budget=64 * 20, batch=64, eval_every=5, seed=1)


def tiny_problem() -> ur.Problem:
    return ur.Problem(ur.ProblemSpec(m=23, n=41, p=0.15, snr=40.0, val_size=100, test_size=150, seed=3))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished ALISTA run (K = 3) trained through the API from a problem file."""
    root = tmp_path_factory.mktemp("api")
    path = tiny_problem().save(root / "p.npz")
    run = ur.train(path, "alista", {"K": 3, "ss": "count"}, out=root / "run", **TINY, **QUIET)
    return run, root


def test_train_writes_a_run_that_loads_to_the_same_model(trained):
    run, root = trained
    assert run.dir.finished and run.config["model"] == "alista" and run.config["model_config"]["K"] == 3
    assert run.config["schedule"] == "end-to-end" and run.result["samples"] == TINY["budget"]
    loaded = ur.load(root / "run")
    for (k, a), (_, b) in zip(run.model.state_dict().items(), loaded.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    assert loaded.result == run.result and loaded.config == run.config


@pytest.mark.parametrize("kind", ["numpy64", "numpy32", "torch32", "torch64", "row"])
def test_predict_takes_numpy_or_torch_and_returns_the_same_kind(trained, kind):
    run, _ = trained
    _, y = run.problem.test(37, torch.float64)
    with torch.no_grad():
        expect = run.model(y.float()).double()
    inp = {"numpy64": y.numpy(), "numpy32": y.float().numpy(), "torch32": y.float(), "torch64": y,
           "row": y[5].numpy()}[kind]
    out = run.predict(inp)
    assert type(out) is type(inp) and out.dtype == inp.dtype and out.shape == (*inp.shape[:-1], 41)
    got = torch.as_tensor(np.asarray(out) if isinstance(out, np.ndarray) else out).double()
    want = expect[5] if kind == "row" else expect
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)  # float32 model; float32 rounding of the input
    if isinstance(out, torch.Tensor):
        assert not out.requires_grad


def test_predict_in_chunks_equals_one_batch(trained):
    run, _ = trained
    _, y = run.problem.test(50)
    # rows are independent; only the float32 rounding of the products may depend on the batch size
    torch.testing.assert_close(run.predict(y, chunk=7), run.predict(y, chunk=1000), rtol=1e-6, atol=1e-6)
    assert run.predict(y[:0]).shape == (0, 41)


@pytest.mark.parametrize("bad, words", [
    (np.ones((4, 22)), ["(4, 22)", "(batch, 23)"]), (np.ones((2, 3, 23)), ["(2, 3, 23)"]),
    (np.ones((4, 23), dtype=np.int64), ["int64", "floating"]), (torch.ones(4, 23, dtype=torch.int32), ["int32"]),
    ([[0.0] * 23], ["numpy array or a torch tensor", "list"]), (np.full((2, 23), np.nan), ["NaN"]),
])
def test_predict_refuses_bad_input_in_one_line(trained, bad, words):
    run, _ = trained
    with pytest.raises(UsageError) as e:
        run.predict(bad)
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def test_evaluate_equals_the_cli_table(trained, capsys):
    run, root = trained
    rows = ur.evaluate(run, test_size=100)
    assert main(["eval", str(root / "run"), "--test-size", "100"]) == 0
    cli = list(csv.DictReader(open(root / "run" / "eval.csv")))
    assert [(r["method"], str(r["layer"])) for r in rows] == [(r["method"], r["layer"]) for r in cli]
    assert [r["nmse_db"] for r in rows] == [float(c["nmse_db"]) for c in cli]
    methods = {r["method"] for r in rows}
    assert {"alista", "ista", "fista", "amp", "oracle-ls", "oracle-mmse"} <= methods
    assert [r["layer"] for r in rows if r["method"] == "ista"] == [0, 1, 2, 3]  # the baseline at the same depth
    assert rows[0]["run"] == str(root / "run") and rows[0]["test_size"] == 100


def test_evaluate_a_model_or_without_baselines(trained):
    run, _ = trained
    rows = ur.evaluate(run.model, run.problem, baselines=(), oracle=False, split="validation")
    assert {r["method"] for r in rows} == {"alista"} and rows[0]["split"] == "validation"
    assert rows[0]["test_size"] == run.problem.spec.val_size
    with pytest.raises(UsageError, match="needs the problem"):
        ur.evaluate(run.model)
    with pytest.raises(UsageError, match="unknown baseline 'nope'"):
        ur.evaluate(run, baselines=("nope",))
    with pytest.raises(UsageError, match="validation split"):
        ur.evaluate(run, split="validation", test_size=10)


def test_load_refuses_tampered_weights_and_a_swapped_problem(trained, tmp_path):
    _, root = trained
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    w = run / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-3] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="checksum"):
        ur.load(run)
    shutil.copyfile(root / "run" / "weights.safetensors", w)
    ur.load(run)
    other = ur.Problem(ur.ProblemSpec(m=23, n=41, p=0.15, snr=40.0, val_size=100, test_size=150, seed=4))
    other.save(run / "problem.npz")  # same sizes, another matrix: the weights would load and mean nothing
    with pytest.raises(UsageError, match="problem.npz was modified"):
        ur.load(run)
    with pytest.raises(UsageError, match="not a run directory"):
        ur.load(tmp_path)
    (tmp_path / "config.json").write_text((run / "config.json").read_text())
    with pytest.raises(UsageError, match="was modified|no problem.npz"):
        ur.load(tmp_path)


def test_train_in_memory_and_with_a_built_model():
    problem = tiny_problem()
    run = ur.train(problem, "lista", {"K": 2}, **TINY, **QUIET)
    assert run.dir is None and run.result["weights_sha256"] is None and run.config["model"] == "lista"
    assert run.predict(problem.test(5)[1]).shape == (5, 41)
    model = build("alista", problem, {"K": 2})
    stages = end_to_end(2, samples=64 * 4, batch=64, fine=())
    again = ur.train(problem, model, schedule=stages, batch=64, **QUIET)
    assert again.model is model and again.config["schedule"] == "custom"


def test_bad_arguments_fail_in_one_line(trained, tmp_path):
    problem = tiny_problem()
    cases = [
        (dict(model="alisa"), "unknown model 'alisa'"),
        (dict(model="alista", config={"K": 2, "nope": 1}), "unknown config field"),
        (dict(model="alista", bacth=64), "unknown training option(s) bacth; valid: batch"),
        (dict(model="alista", schedule="fast"), "unknown schedule 'fast'"),
        (dict(model="alista", schedule={"name": "end-to-end", "sampels": 5}), "unknown key(s) sampels"),
        (dict(model="alista", schedule={"name": "end-to-end", "samples": 5}, budget=6), "contradicts"),
        (dict(model=build("alista", problem, {"K": 2}), config={"K": 2}), "a built model"),
        (dict(model="alista", out=trained[1] / "run"), "already holds a run"),
        (dict(model="alista", meta={"stages": 1}), "meta may not set stages"),
    ]
    for kw, words in cases:
        with pytest.raises(UsageError) as e:
            ur.train(problem, **{"budget": 64, "batch": 64, **kw})
        assert words in str(e.value) and "\n" not in str(e.value), (kw, str(e.value))


def test_resume_true_returns_a_finished_run_and_refuses_other_settings(trained, tmp_path):
    run, root = trained
    path = root / "p.npz"
    again = ur.train(path, "alista", {"K": 3, "ss": "count"}, out=root / "run", resume=True, **TINY, **QUIET)
    assert again.result == run.result  # nothing trained: the run on disk, loaded
    for change in ({"K": 3}, {"K": 3, "ss": "count", "lam": 0.3}):
        with pytest.raises(UsageError, match="other settings .*model_config"):
            ur.train(path, "alista", change, out=root / "run", resume=True, **TINY)
    with pytest.raises(UsageError, match="other settings .*stages"):
        ur.train(path, "alista", {"K": 3, "ss": "count"}, out=root / "run", resume=True, **{**TINY, "budget": 640})


@pytest.mark.parametrize("name", ["alista", "na-alista"])
def test_no_global_random_numbers(name):
    """Same seed, same bits, whatever the global generator's state: the library never reads it."""
    problem = tiny_problem()
    weights = []
    for global_seed in (0, 12345):
        torch.manual_seed(global_seed)
        run = ur.train(problem, name, {"K": 2}, budget=64 * 6, batch=64, eval_every=3, **QUIET)
        weights.append({k: v.clone() for k, v in run.model.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def readme_python_example() -> str:
    text = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 1, "the README has one Python example"
    return blocks[0]


def test_the_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python_example(), "README.md", "exec"), {})
    assert (tmp_path / "runs" / "readme" / "weights.safetensors").exists()
