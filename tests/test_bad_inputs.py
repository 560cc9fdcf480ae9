"""Bad input through the command line, as a table: each case exits 2 with one line on stderr,
no traceback, and writes nothing. A new case is one line of ``CASES``."""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.io
import scipy.sparse

from unrolled.cli import main
from unrolled.problem import Problem, ProblemSpec

TRAIN = ["train", "p.npz", "--model", "alista", "--layers", "3", "--budget-samples", "64", "--batch", "32"]

# (id, argv, words the error line must contain)
CASES = [
    ("kappa-inf", ["problem", "create", "o.npz", "--kappa", "inf"], ["--kappa", "finite"]),
    ("seed-negative", ["problem", "create", "o.npz", "--seed", "-1"], ["--seed", "[0, 2^63)"]),
    ("snr-huge-negative", ["problem", "create", "o.npz", "--snr=-1e308"], ["--snr", "dB must be in"]),
    ("gamma-rate-inf", ["problem", "create", "o.npz", "--signal", "gamma", "--gamma-rate", "inf"], ["--gamma-rate"]),
    ("sparse-mat-too-big", ["problem", "create", "o.npz", "--a-file", "sparse.mat"], ["sparse 1,000,000x100,000",
                                                                                          "GiB"]),
    ("v73-mat", ["problem", "create", "o.npz", "--a-file", "v73.mat"], ["v7.3"]),
    ("complex-a-file", ["problem", "create", "o.npz", "--a-file", "cplx.npy"], ["complex128"]),
    ("huge-matrix", ["problem", "create", "o.npz", "--m", "100000", "--n", "1000000"], ["GiB", "A (100,000"]),
    ("huge-val-set", ["problem", "create", "o.npz", "--val-size", "1000000000000"], ["validation set", "GiB"]),
    ("out-is-a-directory", ["problem", "create", "adir"], ["is a directory"]),
    ("all-zero-test-x", ["solve", "p.npz", "--test-x", "zero.npy", "--out", "s.csv"], ["zero", "undefined"]),
    ("random-bytes-problem", ["solve", "rand.npz", "--out", "s.csv"], ["not an .npz archive"]),
    ("complex-problem", ["solve", "cplxprob.npz", "--out", "s.csv"], ["complex128"]),
    ("solve-iters-beyond-memory", ["solve", "p.npz", "--iters", "1000000000", "--out", "s.csv"], ["--iters", "GiB"]),
    ("solve-out-is-a-directory", ["solve", "p.npz", "--out", "adir"], ["is a directory"]),
    ("set-K-inf", [*TRAIN, "--out", "r", "--set", "K=inf"], ["--layers"]),
    ("layers-huge", [*TRAIN, "--out", "r", "--layers", "100000000"], ["K=100000000", "1..1000"]),
    ("budget-below-a-batch", [*TRAIN, "--out", "r", "--batch", "5000", "--budget-samples", "100"], ["one batch"]),
    ("seed-negative-train", [*TRAIN, "--out", "r", "--seed", "-1"], ["--seed"]),
    ("lr-inf", [*TRAIN, "--out", "r", "--lr", "inf"], ["--lr", "finite"]),
    ("lr-zero", [*TRAIN, "--out", "r", "--lr", "0"], ["--lr", "> 0"]),
    ("lstm-beyond-memory", ["train", "p.npz", "--model", "na-alista", "--out", "r", "--set", "H=10000000"],
     ["H=10,000,000", "GiB"]),
    # /proc takes no new files, for root too (permission bits would not stop root): a read-only place
    ("problem-into-read-only-dir", ["problem", "create", "/proc/unrolled.npz"], ["cannot write into /proc"]),
    ("solve-into-read-only-dir", ["solve", "p.npz", "--out", "/proc/unrolled.csv"], ["cannot write into /proc"]),
    ("train-into-read-only-dir", [*TRAIN, "--out", "/proc/unrolled-run"], ["run directory /proc/unrolled-run",
                                                                           "--out"]),
    ("a-key-not-in-file", ["problem", "create", "o.npz", "--a-file", "keyed.mat", "--a-key", "B"],
     ["no array named 'B'", "Phi"]),
    ("a-key-without-a-file", ["problem", "create", "o.npz", "--a-key", "Phi"], ["--a-key", "--a-file"]),
    ("a-key-on-npy", ["problem", "create", "o.npz", "--a-file", "zero.npy", "--a-key", "Phi"], ["inside .npz or .mat"]),
    ("weights-out-not-an-array-file", ["weights", "p.npz", "--out", "W.txt"], ["--out W.txt", ".mat"]),
    ("train-y-without-lasso", [*TRAIN, "--out", "r", "--train-y", "y.npy"], ["measurements alone", "--loss lasso"]),
    ("train-x-wrong-length", [*TRAIN, "--out", "r", "--train-x", "y.npy"], ["neither axis matches n=41"]),
    ("val-fraction-one", [*TRAIN, "--out", "r", "--train-x", "x.npy", "--val-fraction", "1"], ["val_fraction=1"]),
    ("pool-and-train-x", [*TRAIN, "--out", "r", "--train-x", "x.npy", "--pool", "100"], ["not both"]),
    ("predict-out-not-an-array-file", ["predict", "r", "--y", "y.npy", "--out", "x.csv"], ["--out x.csv", ".mat"]),
    ("predict-not-a-run", ["predict", "adir", "--y", "y.npy", "--out", "x.npy"], ["not a run directory"]),
    ("plot-not-a-results-csv", ["plot", "notes.csv", "--out", "f.png"], ["not a results CSV", "method"]),
    ("non-utf8-problem-name", ["train", os.fsdecode(b"\xff.npz"), "--model", "alista", "--out", "r"],
     ["does not exist"]),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    Problem(ProblemSpec(m=23, n=41, p=0.15, val_size=100, test_size=100, seed=3)).save(d / "p.npz")
    np.save(d / "zero.npy", np.zeros((10, 41)))
    big = scipy.sparse.csc_matrix(([1.0, 2.0], ([0, 7], [0, 3])), shape=(10**6, 10**5))  # 800 GB dense
    scipy.io.savemat(d / "sparse.mat", {"A": big})
    (d / "v73.mat").write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64" + b"\0" * 500 + b"\x89HDF\r\n\x1a\n")
    np.save(d / "cplx.npy", np.ones((23, 41)) * (1 + 1j))
    (d / "rand.npz").write_bytes(np.random.default_rng(0).bytes(2000))
    with np.load(d / "p.npz") as f:
        arrays = dict(f)
    np.savez(d / "cplxprob.npz", **{**arrays, "A": arrays["A"].astype(complex)})
    (d / "adir").mkdir()
    rng = np.random.default_rng(1)
    scipy.io.savemat(d / "keyed.mat", {"Phi": rng.standard_normal((23, 41))})
    np.save(d / "x.npy", rng.standard_normal((10, 41)))
    np.save(d / "y.npy", rng.standard_normal((10, 23)))
    (d / "notes.csv").write_text("a,b\n1,2\n")
    return d


def _listing(d):
    return sorted((str(p.relative_to(d)), p.stat().st_mtime_ns) for p in d.rglob("*"))


@pytest.mark.parametrize("argv, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(files, monkeypatch, capsys, argv, words):
    monkeypatch.chdir(files)
    before = _listing(files)
    capsys.readouterr()
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    assert _listing(files) == before, "a refused command wrote something"
