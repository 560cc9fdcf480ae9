"""Command line: every bad input is one line on stderr, exit code 2, and no output file."""

from __future__ import annotations

import argparse
import csv
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from unrolled.cli import build_parser, main
from unrolled.errors import UsageError

SMALL = ["--m", "23", "--n", "41", "--val-size", "40", "--test-size", "30"]


def fails(capsys, argv, *words, out=None):
    """Run ``argv``; expect exit code 2, one ``error:`` line naming the problem, and no ``out`` file."""
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])
    if out is not None:
        assert not out.exists()
    return lines[0]


@pytest.fixture(scope="module")
def prob(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "small.npz"
    assert main(["problem", "create", str(path), *SMALL, "--snr", "30"]) == 0
    return path


@pytest.fixture
def A():
    return np.random.default_rng(0).standard_normal((23, 41))


# -- bad matrix files (--a-file) --------------------------------------------------------------------


def bad_a_file(tmp_path, name, arr=None, raw=None):
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
    elif name.endswith(".mat"):
        scipy.io.savemat(path, arr)
    else:
        np.save(path, arr)
    return path


@pytest.mark.parametrize("case, words", [
    ("nan", ["NaN or Inf", "a.npy"]), ("inf", ["NaN or Inf"]), ("1d", ["(41,)", "2-D"]),
    ("3d", ["(2, 23, 41)", "2-D"]), ("zero-col", ["zero column", "[5]"]), ("empty", ["empty"]),
    ("truncated", ["truncated", "a.npy"]), ("transposed", ["m=41 > n=23"]),
])
def test_bad_a_file(tmp_path, capsys, A, case, words):
    if case == "nan":
        A[3, 4] = np.nan
    elif case == "inf":
        A[0, 0] = -np.inf
    elif case == "1d":
        A = A[0]
    elif case == "3d":
        A = np.stack([A, A])
    elif case == "zero-col":
        A[:, 5] = 0
    elif case == "transposed":
        A = A.T
    if case == "empty":
        path = bad_a_file(tmp_path, "a.npy", raw=b"")
    elif case == "truncated":
        np.save(tmp_path / "full.npy", A)
        data = (tmp_path / "full.npy").read_bytes()
        path = bad_a_file(tmp_path, "a.npy", raw=data[: len(data) // 2])
    else:
        path = bad_a_file(tmp_path, "a.npy", A)
    out = tmp_path / "out.npz"
    fails(capsys, ["problem", "create", out, "--a-file", path], *words, out=out)


def test_mat_without_matrix_key_lists_keys(tmp_path, capsys, A):
    path = bad_a_file(tmp_path, "a.mat", {"foo": A, "bar": np.ones(2)})
    out = tmp_path / "out.npz"
    fails(capsys, ["problem", "create", out, "--a-file", path], "no matrix named D or A", "'bar', 'foo'", out=out)


def test_missing_a_file(tmp_path, capsys):
    out = tmp_path / "out.npz"
    fails(capsys, ["problem", "create", out, "--a-file", tmp_path / "nope.mat"], "does not exist", out=out)


@pytest.mark.parametrize("key", ["D", "A"])
def test_good_mat_a_file(tmp_path, capsys, A, key):
    path = bad_a_file(tmp_path, "a.mat", {key: A})
    assert main(["problem", "create", str(tmp_path / "p.npz"), "--a-file", str(path)]) == 0
    from unrolled import Problem

    p = Problem.load(tmp_path / "p.npz")
    user = p.A.numpy() if p.scale is None else p.A.numpy() * p.scale.numpy()  # normalised, the scale kept
    assert p.spec.matrix == "file" and np.allclose(user, A, rtol=1e-14, atol=0)


# -- bad option values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("opts, words", [
    (["--p", "0"], ["p=0.0", "(0, 1]"]), (["--p", "1.5"], ["p=1.5", "(0, 1]"]),
    (["--m", "600"], ["m=600 > n=500"]), (["--m", "0"], ["--m", "0 must be >= 1"]),
    (["--n", "-3"], ["--n"]), (["--m", "2.5"], ["--m", "not an integer"]),
    (["--matrix", "foo"], ["--matrix", "'foo'", "gaussian", "dct", "toeplitz", "lowrank", "file"]),
    (["--signal", "foo"], ["--signal", "bernoulli", "fixed", "gamma"]),
    (["--test-noise", "foo"], ["salt-pepper"]), (["--p", "nan"], ["--p", "NaN"]),
    (["--p", "abc"], ["--p", "not a number"]), (["--snr=-inf"], ["--snr", "-inf dB"]),
    (["--kappa", "0.5"], ["kappa"]), (["--matrix", "lowrank", "--rank", "600"], ["rank"]),
    (["--matrix", "file"], ["--a-file"]),
    (["--sp-density", "2"], ["sp_density"]), (["--test-perturb", "-1"], ["test_perturb"]),
    (["--p", "0.1", "--s", "5"], ["--p or --s"]), (["--n", "512", "--s", "600"], ["--s 600", "n=512"]),
    (["--bogus"], ["unrecognized", "--bogus"]),
])
def test_bad_problem_options(tmp_path, capsys, opts, words):
    out = tmp_path / "out.npz"
    fails(capsys, ["problem", "create", out, *opts], *words, out=out)


def test_unknown_command_and_missing_command(capsys):
    fails(capsys, ["nosuch"], "nosuch", "problem", "solve")
    fails(capsys, [], "required")


def test_bad_solve_and_weights_options(tmp_path, capsys, prob):
    out = tmp_path / "o.csv"
    fails(capsys, ["solve", prob, "--algo", "foo", "--out", out], "'foo'", "ista, fista, oista, ista-bt", out=out)
    fails(capsys, ["solve", prob, "--algo", "ista,bogus", "--out", out], "'bogus'", out=out)
    fails(capsys, ["solve", prob, "--lam", "-1", "--out", out], "--lam", out=out)
    fails(capsys, ["solve", prob, "--iters", "0", "--out", out], "--iters", out=out)
    w = tmp_path / "W.npy"
    fails(capsys, ["weights", prob, "--method", "foo", "--out", w], "--method", "'foo'", "closed-form", "pgd", out=w)


def test_missing_and_corrupted_problem_files(tmp_path, capsys, prob):
    out, w = tmp_path / "o.csv", tmp_path / "W.npy"
    fails(capsys, ["solve", tmp_path / "nope.npz", "--out", out], "nope.npz", "does not exist", out=out)
    fails(capsys, ["weights", tmp_path / "nope.npz", "--out", w], "does not exist", out=w)
    data = prob.read_bytes()
    bad = tmp_path / "bad.npz"
    bad.write_bytes(data[: len(data) // 2])
    fails(capsys, ["solve", bad, "--out", out], "cannot read problem file", "bad.npz", out=out)
    fails(capsys, ["weights", bad, "--out", w], "cannot read problem file", out=w)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, A=np.ones((2, 3)))
    fails(capsys, ["solve", foreign, "--out", out], "not an unrolled problem file", out=out)


@pytest.mark.parametrize("case, words", [
    ("nan", ["NaN or Inf", "tx.npy"]), ("cols", ["(5, 40)", "neither axis matches n=41"]),
    ("1d", ["2-D"]), ("3d", ["2-D"]), ("square", ["ambiguous"]), ("empty", ["empty"]), ("missing", ["does not exist"]),
])
def test_bad_test_x(tmp_path, capsys, prob, case, words):
    tx = tmp_path / "tx.npy"
    arrays = {"nan": np.full((5, 41), np.nan), "cols": np.ones((5, 40)), "1d": np.ones(41),
              "3d": np.ones((2, 5, 41)), "square": np.ones((41, 41))}
    if case in arrays:
        np.save(tx, arrays[case])
    elif case == "empty":
        tx.write_bytes(b"")
    out = tmp_path / "o.csv"
    fails(capsys, ["solve", prob, "--test-x", tx, "--out", out, "--iters", "2"], *words, out=out)


# -- help and the happy path -----------------------------------------------------------------------------


def all_commands(parser: argparse.ArgumentParser, prefix=()):
    yield list(prefix)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from all_commands(sub, (*prefix, name))


def test_help_for_every_command(capsys):
    commands = list(all_commands(build_parser()))
    assert ["problem", "create"] in commands and ["solve"] in commands and ["weights"] in commands
    for cmd in commands:
        with pytest.raises(SystemExit) as e:
            main([*cmd, "--help"])
        assert e.value.code == 0, cmd
        assert "usage:" in capsys.readouterr().out


def test_happy_path(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["problem", "create", "p.npz", *SMALL, "--snr", "30"]) == 0
    assert "wrote p.npz" in capsys.readouterr().out
    assert main(["weights", "p.npz", "--out", "W.npy"]) == 0
    assert "objective" in capsys.readouterr().out
    from unrolled import Problem, analytic_weights

    p = Problem.load("p.npz")
    W = np.load("W.npy")
    assert W.shape == (23, 41)
    np.testing.assert_allclose(np.diag(W.T @ p.A.numpy()), 1.0, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(W, analytic_weights(p.A).W.numpy())

    np.save("tx.npy", p.test(dtype=torch.float64)[0].numpy().T[:, :12])  # n x samples
    for extra, size in (([], 30), (["--test-x", "tx.npy"], 12)):
        assert main(["solve", "p.npz", "--algo", "ista,fista,oista,ista-bt", "--iters", "5", "--tune-size", "20",
                     "--out", "s.csv", *extra]) == 0
        assert "wrote s.csv" in capsys.readouterr().out
        rows = list(csv.DictReader(open("s.csv")))
        for algo in ("ista", "fista", "oista", "ista-bt"):
            mine = [r for r in rows if r["method"] == algo]
            assert [int(r["layer"]) for r in mine] == list(range(6))
            assert float(mine[0]["nmse_db"]) == 0.0 and float(mine[-1]["nmse_db"]) < 0
            assert float(mine[0]["lam"]) > 0
        oracle = [r for r in rows if r["method"].startswith("oracle")]
        assert {r["method"] for r in oracle} == {"oracle-ls", "oracle-mmse"} and all(r["layer"] == "" for r in oracle)
        assert all(int(r["test_size"]) == size for r in rows)


def test_solve_default_output_name(tmp_path, capsys, monkeypatch, prob):
    monkeypatch.chdir(tmp_path)
    assert main(["solve", str(prob), "--algo", "fista", "--iters", "3", "--lam", "0.1", "--test-size", "10"]) == 0
    assert (tmp_path / "small-solve.csv").exists()


def test_solve_with_amp(tmp_path, capsys, prob):
    out = tmp_path / "amp.csv"
    assert main(["solve", str(prob), "--algo", "ista,amp", "--iters", "4", "--out", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert {r["method"] for r in rows} >= {"ista", "amp", "oracle-ls"}
    assert sum(r["method"] == "amp" for r in rows) == 5  # layers 0..4
    text = capsys.readouterr().out
    assert "ista: lambda" in text and "amp: lambda" not in text
    gamma = tmp_path / "gamma.npz"
    assert main(["problem", "create", str(gamma), *SMALL, "--signal", "gamma"]) == 0
    fails(capsys, ["solve", gamma, "--algo", "amp", "--out", tmp_path / "g.csv"], "signals without zero entries",
          out=tmp_path / "g.csv")


def documented_commands():
    """Every ``unrolled ...`` line of the shell blocks of the README and the user guide."""
    root = Path(__file__).resolve().parents[1]
    for doc in ("README.md", "docs/guide.md"):
        for block in re.findall(r"```sh\n(.*?)```", (root / doc).read_text(), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                words = shlex.split(line, comments=True)
                if words[:1] == ["unrolled"]:
                    yield doc, words[1:]


def test_documented_commands_parse():
    commands = list(documented_commands())
    assert len(commands) > 15
    for doc, words in commands:
        try:
            build_parser().parse_args(words)
        except UsageError as e:
            raise AssertionError(f"{doc}: unrolled {' '.join(words)}: {e}") from None
