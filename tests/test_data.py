"""Bring your own data: finite pools (generated or from files), validation split off the pool,
unsupervised training from measurements, bit-identical resume inside an epoch, predictions."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from faults import killed_at

import unrolled as ur
from unrolled import UsageError
from unrolled.cli import main
from unrolled.io import save_array
from unrolled.metrics import nmse_db
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
    assert torch.equal(to_problem_units(problem, x), x) and torch.equal(to_user_units(problem, x), x)
    A_user = problem.A.numpy() * np.linspace(0.5, 2.0, 41)  # columns of norms 0.5 .. 2
    scaled = Problem(small_spec(), A_user)
    if getattr(scaled, "scale", None) is None:
        pytest.skip("this Problem keeps A as given (no column normalisation)")
    x_model = to_problem_units(scaled, x)
    torch.testing.assert_close(x_model @ scaled.A.T, x @ torch.from_numpy(A_user).T)  # the same measurements
    torch.testing.assert_close(to_user_units(scaled, x_model), x, rtol=1e-15, atol=0)


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


# -- files on the command line -------------------------------------------------------------------

TRAIN = ["--model", "alista", "--layers", "3", "--batch", "32", "--eval-every", "2", "--seed", "2"]


@pytest.fixture(scope="module")
def files(tmp_path_factory, problem):
    """A problem file and signals/measurements from its generator, in both orientations."""
    d = tmp_path_factory.mktemp("own")
    problem.save(d / "p.npz")
    g = torch.Generator().manual_seed(11)
    x, y = problem.sample(300, g, torch.float64)
    np.save(d / "X.npy", x.numpy())
    np.save(d / "Y.npy", y.numpy())
    scipy.io.savemat(d / "Xt.mat", {"X": x[:120].numpy().T})
    scipy.io.savemat(d / "Yt.mat", {"meas": y[:50].numpy().T})
    return d


def _run(capsys, argv) -> str:
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_train_on_signals_from_a_file_splits_validation_off_the_pool(files, tmp_path, capsys):
    out = _run(capsys, ["train", files / "p.npz", "--train-x", files / "Xt.mat", "--out", tmp_path / "r",
                        "--budget-samples", 32 * 8, *TRAIN])
    assert "a pool of 120 samples from" in out and "108 for training" in out
    assert "12 samples (0.1) split off the pool, permutation seeded by 2" in out and "(NMSE)" in out
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["data"]["train_x"] == str((files / "Xt.mat").resolve()) and len(cfg["data"]["train_x_sha256"]) == 64
    # the same data from the other orientation and format gives the same bits
    _run(capsys, ["train", files / "p.npz", "--train-x", files / "X.npy", "--out", tmp_path / "s",
                  "--budget-samples", 32 * 8, *TRAIN])
    spec = DataSpec(train_x=str(files / "X.npy"))
    a = spec.build(Problem.load(files / "p.npz"), 2, "mse")
    b = DataSpec(train_x=str(files / "Xt.mat")).build(Problem.load(files / "p.npz"), 2, "mse")
    assert len(a.pool) == 270 and len(b.pool) == 108
    x = torch.from_numpy(np.load(files / "X.npy"))[:120].float()
    assert torch.equal(torch.cat([b.pool.x, b.x_val]).sort(0).values, x.sort(0).values), "split, not altered"


def test_a_file_pool_resumes_bit_identically_and_refuses_a_changed_file(files, tmp_path, capsys):
    argv = ["train", files / "p.npz", "--train-x", files / "Xt.mat", "--budget-samples", 32 * 10, *TRAIN]
    _run(capsys, [*argv, "--out", tmp_path / "ref"])
    run = tmp_path / "run"
    assert killed_at(30, lambda: main([str(a) for a in [*argv, "--out", run]])) == 75
    assert (run / "state.safetensors").exists() and not (run / "result.json").exists()
    _run(capsys, ["train", "--resume", run])
    assert (tmp_path / "ref" / "weights.safetensors").read_bytes() == (run / "weights.safetensors").read_bytes()
    assert (tmp_path / "ref" / "metrics.jsonl").read_bytes() == (run / "metrics.jsonl").read_bytes()
    # a resume whose training file changed is refused in one line
    moved = tmp_path / "X.npy"
    np.save(moved, np.load(files / "X.npy"))
    argv = ["train", files / "p.npz", "--train-x", moved, "--budget-samples", 32 * 10, *TRAIN]
    assert killed_at(30, lambda: main([str(a) for a in [*argv, "--out", tmp_path / "k"]])) == 75
    np.save(moved, 2 * np.load(files / "X.npy"))
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "k")]) == 2
    assert "changed since the run began" in capsys.readouterr().err


def test_validation_files_and_supervised_pairs(files, tmp_path, capsys):
    out = _run(capsys, ["train", files / "p.npz", "--train-x", files / "X.npy", "--train-y", files / "Y.npy",
                        "--val-x", files / "Xt.mat", "--out", tmp_path / "r", "--budget-samples", 64, *TRAIN])
    assert "a pool of 300 samples" in out and "300 for training" in out and "validation: 120 samples from" in out
    problem = Problem.load(files / "p.npz")
    d = DataSpec(train_x=str(files / "X.npy"), train_y=str(files / "Y.npy")).build(problem, 0, "mse", torch.float64)
    x, y = d.pool.batch(0, 270)
    torch.testing.assert_close(y, x @ problem.A.T + (y - x @ problem.A.T), rtol=0, atol=0)
    assert not torch.allclose(y, x @ problem.A.T), "the given measurements are used, with their noise"


def test_unsupervised_training_from_measurements_beats_zero_and_its_start(files, tmp_path, capsys):
    problem = Problem.load(files / "p.npz")
    out = _run(capsys, ["train", files / "p.npz", "--train-y", files / "Y.npy", "--loss", "lasso",  # lambda 0.1
                        "--out", tmp_path / "r", "--budget-samples", 32 * 60, "--lr", "5e-3", *TRAIN])
    assert "30 samples (0.1) split off the pool" in out and "(the Lasso objective)" in out
    run = ur.load(tmp_path / "r")
    assert run.config["options"]["loss"] == "lasso" and "train_x" not in run.config["data"]
    x, y = problem.test(200, torch.float64)  # held out: neither the pool nor its validation part
    start = ur.models.build("alista", problem, run.config["model_config"])
    with torch.no_grad():
        x_start = start(y.float()).double()
    x_hat = torch.as_tensor(run.predict(y.numpy()))
    lasso = [float(ur.ops.lasso_objective(v, y, problem.A, 0.1).mean()) for v in (x_start, x_hat)]
    print(f"unsupervised: test Lasso objective {lasso[0]:.4f} -> {lasso[1]:.4f}, NMSE "
          f"{nmse_db(x_start, x):.4f} -> {nmse_db(x_hat, x):.4f} dB")
    assert lasso[1] < 0.95 * lasso[0], "training did not lower the objective it trains on (on held-out data)"
    assert nmse_db(x_hat, x) < min(-3.0, nmse_db(x_start, x) - 0.5), "no better than x_hat = 0 or than its start"


def test_training_data_options_are_checked_in_one_line(files, tmp_path, capsys):
    base = ["train", str(files / "p.npz"), *TRAIN, "--out", str(tmp_path / "r"), "--budget-samples", "64"]
    for extra, words in [
        (["--train-y", files / "Y.npy"], ["needs the Lasso loss", "--loss lasso"]),
        (["--train-x", files / "Y.npy"], ["neither axis matches n=41"]),
        (["--pool", "100", "--train-x", files / "X.npy"], ["not both"]),
        (["--train-x", files / "X.npy", "--val-fraction", "1.5"], ["val_fraction=1.5", "(0, 1)"]),
        (["--val-x", files / "X.npy"], ["go with training files"]),
        (["--train-y", files / "Y.npy", "--loss", "lasso", "--val-x", files / "X.npy"], ["val_y"]),
    ]:
        capsys.readouterr()
        assert main([*base, *map(str, extra)]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words), (extra, err)
        assert not (tmp_path / "r").exists()
    capsys.readouterr()


# -- predict, eval --out, plot ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "r"
    assert main(["train", str(files / "p.npz"), "--train-x", str(files / "X.npy"), "--out", str(out),
                 "--budget-samples", "320", *TRAIN]) == 0
    return out


@pytest.mark.parametrize("name, columns", [("xh.npy", False), ("xh.mat", True), ("xh.npz", False)])
def test_predict_round_trips_through_files_in_the_orientation_given(files, trained, tmp_path, capsys, name,
                                                                   columns):
    y = np.load(files / "Y.npy")[:50]
    src = tmp_path / ("y.mat" if columns else "y.npy")
    scipy.io.savemat(src, {"Y": y.T}) if columns else np.save(src, y)
    out = _run(capsys, ["predict", trained, "--y", src, "--out", tmp_path / name])
    assert f"wrote {tmp_path / name}" in out and ("n x samples" if columns else "samples x n") in out
    if name.endswith(".mat"):
        got = scipy.io.loadmat(tmp_path / name)["x_hat"]
    elif name.endswith(".npz"):
        got = np.load(tmp_path / name)["x_hat"]
    else:
        got = np.load(tmp_path / name)
    want = ur.load(trained).predict(y)
    assert got.shape == ((41, 50) if columns else (50, 41))
    np.testing.assert_array_equal(got.T if columns else got, want)
    assert not list(tmp_path.glob(".*.tmp"))


def test_predict_python_takes_either_orientation(trained, files):
    run = ur.load(trained)
    y = np.load(files / "Y.npy")[:30]
    rows = run.predict(y)
    np.testing.assert_array_equal(run.predict(y.T), rows.T)
    torch.testing.assert_close(run.predict(torch.from_numpy(y.T)), torch.from_numpy(rows).T)
    with torch.no_grad():
        np.testing.assert_allclose(rows, run.model(torch.from_numpy(y).float()).double().numpy(), rtol=1e-6, atol=1e-6)


def test_predict_maps_estimates_to_the_users_units(files, tmp_path):
    base = Problem.load(files / "p.npz")
    A_user = base.A.numpy() * np.linspace(0.5, 2.0, 41)
    problem = Problem(small_spec(), A_user)
    if getattr(problem, "scale", None) is None:
        pytest.skip("this Problem keeps A as given (no column normalisation)")
    run = ur.train(problem, "alista", {"K": 3}, budget=64, batch=32, log=lambda s: None)
    x_user = torch.from_numpy(np.load(files / "X.npy")[:20])
    y = (x_user @ torch.from_numpy(A_user).T).numpy()
    with torch.no_grad():
        x_model = run.model(torch.from_numpy(y).float()).double()
    np.testing.assert_allclose(run.predict(y), (x_model / problem.scale).numpy(), rtol=1e-6, atol=1e-7)


def test_predict_refuses_a_tampered_run_and_bad_files(files, trained, tmp_path, capsys):
    bad = tmp_path / "run"
    shutil.copytree(trained, bad)
    problem = Problem.load(bad / "problem.npz")
    Problem(dataclasses.replace(problem.spec, seed=4)).save(bad / "problem.npz")
    for argv, words in [
        (["predict", bad, "--y", files / "Y.npy", "--out", tmp_path / "a.npy"], ["problem.npz", "SHA-256"]),
        (["predict", trained, "--y", files / "X.npy", "--out", tmp_path / "a.npy"], ["neither axis matches m=23"]),
        (["predict", trained, "--y", files / "Y.npy", "--out", tmp_path / "a.csv"], [".npy, .npz or .mat"]),
        (["predict", trained, "--y", files / "Yt.mat", "--key", "nope", "--out", tmp_path / "a.npy"],
         ["no array named 'nope'", "meas"]),
    ]:
        capsys.readouterr()
        assert main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words), err
        assert not (tmp_path / "a.npy").exists()
    _run(capsys, ["predict", trained, "--y", files / "Yt.mat", "--key", "meas", "--out", tmp_path / "k.npy"])
    assert np.load(tmp_path / "k.npy").shape == (41, 50)


def _table(path) -> list[tuple]:
    """A results CSV without its timings: (method, layer, NMSE) rows."""
    with open(path, newline="") as f:
        return [(r["method"], r["layer"], r["nmse_db"]) for r in csv.DictReader(f)]


def test_eval_out_and_default_names_never_overwrite(files, trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    _run(capsys, ["eval", run])
    plain = (run / "eval.csv").read_bytes()
    out = _run(capsys, ["eval", run, "--test-x", files / "Xt.mat"])
    assert (run / "eval.csv").read_bytes() == plain, "--test-x overwrote eval.csv"
    assert f"wrote {run / 'eval-test-test-x=Xt.csv'}" in out
    _run(capsys, ["eval", run, "--test-x", files / "Xt.mat", "--out", tmp_path / "mine.csv"])
    assert _table(tmp_path / "mine.csv") == _table(run / "eval-test-test-x=Xt.csv")
    assert _table(tmp_path / "mine.csv") != _table(run / "eval.csv")
    _run(capsys, ["eval", run, "--snr", "20", "--test-size", "50"])
    assert (run / "eval-test-snr=20.csv").exists() and (run / "eval.csv").read_bytes() == plain


def test_plot_draws_a_results_csv_and_a_runs_training_curves(files, trained, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    _run(capsys, ["eval", run, "--out", tmp_path / "e.csv"])
    out = _run(capsys, ["plot", tmp_path / "e.csv", "--out", tmp_path / "layers.png"])
    assert "alista" in out and "fista" in out
    out = _run(capsys, ["plot", run, "--out", tmp_path / "train.png"])
    assert "training curves" in out and "5 validations" in out
    for png in ("layers.png", "train.png"):
        data = (tmp_path / png).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_plot_without_matplotlib_and_bad_sources_say_so_in_one_line(trained, tmp_path, capsys, monkeypatch):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    for argv, words in [(["plot", tmp_path / "x.csv", "--out", tmp_path / "f.png"], ["not a results CSV"]),
                        (["plot", tmp_path / "nope.csv", "--out", tmp_path / "f.png"], ["does not exist"]),
                        (["plot", trained, "--out", tmp_path / "f.txt"], [".png, .pdf or .svg"])]:
        capsys.readouterr()
        assert main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    assert main(["plot", str(trained), "--out", str(tmp_path / "f.png")]) == 2
    assert "pip install 'unrolled[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()


# -- the guide's walk-through ----------------------------------------------------------------------

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide.md"
WALKTHROUGH = "## 8. Your own matrix and your own data"


def walkthrough_blocks() -> list[tuple[str, str]]:
    """``(language, code)`` of every python and sh block of the guide's section, in order."""
    text = GUIDE.read_text()
    start = text.index(WALKTHROUGH)
    end = text.find("\n## ", start + len(WALKTHROUGH))
    return re.findall(r"```(python|sh)\n(.*?)```", text[start:end if end > 0 else None], flags=re.S)


def test_the_guide_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    blocks = walkthrough_blocks()
    commands = [shlex.split(line, comments=True) for lang, code in blocks if lang == "sh"
                for line in code.replace("\\\n", " ").splitlines() if line.strip()]
    assert [c[1] for c in commands] == ["problem", "train", "eval", "predict", "plot", "plot", "train", "eval"]
    namespace: dict = {}
    printed = []
    for lang, code in blocks:
        if lang == "python":
            exec(compile(code, f"{GUIDE}:{WALKTHROUGH}", "exec"), namespace)
            printed.append(capsys.readouterr().out)
            continue
        for line in code.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                assert words[0] == "unrolled"
                assert main(words[1:]) == 0, f"{line}: {capsys.readouterr().err}"
                printed.append(capsys.readouterr().out)
    out = "".join(printed)
    text = " ".join(GUIDE.read_text().split())
    quoted = re.search(r"it prints `(training data: .*?)`", text).group(1)
    assert quoted in " ".join(out.split()), "the guide quotes a line the command no longer prints"
    assert "wrote x_hat.mat: x_hat 160x200 (n x samples, as Y.mat)" in out
    for f in ("own-test.csv", "own-lasso-test.csv", "runs/own-lasso/weights.safetensors", "x_hat.mat"):
        assert (tmp_path / f).exists(), f
    for png in ("own-layers.png", "own-training.png"):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")
    nmse = float(re.search(r"NMSE of the predictions: (-?[\d.]+) dB", out).group(1))
    assert nmse < -5, f"the walk-through's predictions are poor: {nmse} dB"


def test_validation_is_capped_at_val_size_and_says_so(problem):
    pool_spec = DataSpec(pool=500, val_fraction=0.5)
    d = pool_spec.build(problem, 0, "mse", torch.float64, val_size=40)
    assert len(d.pool) == 460 and len(d.y_val) == 40, "the split holds out no more than val_size"
    assert "40 samples (0.5, at most val_size=40) split off" in d.description
    d = DataSpec(pool=500).build(problem, 0, "mse", torch.float64, val_size=30)  # the problem's own 100
    assert len(d.pool) == 500 and len(d.y_val) == 30 and "the first 30 used (val_size)" in d.description
    torch.testing.assert_close(d.x_val, problem.validation(torch.float64)[0][:30], rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".npy", ".mat"])
def test_predict_python_round_trip_through_files(trained, files, tmp_path, suffix):
    """What a MATLAB or NumPy user does by hand: read y, ``Run.predict``, write x_hat, read it back."""
    run = ur.load(trained)
    y = scipy.io.loadmat(files / "Yt.mat")["meas"]  # m x 50, as MATLAB stores it
    x_hat = run.predict(y)
    assert x_hat.shape == (41, 50)
    path = save_array(tmp_path / f"x_hat{suffix}", x_hat, "x_hat")
    back = scipy.io.loadmat(path)["x_hat"] if suffix == ".mat" else np.load(path)
    np.testing.assert_array_equal(back, x_hat)
    np.testing.assert_array_equal(back.T, run.predict(np.ascontiguousarray(y.T)))
