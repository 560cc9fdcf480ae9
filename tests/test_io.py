"""Files (io.py): matrix and signal loading, orientation, atomic writes, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch

from unrolled import UsageError
from unrolled.io import atomic_write, load_matrix, load_safetensors, load_signals, save_safetensors, write_json


@pytest.fixture
def X():
    return np.random.default_rng(0).standard_normal((7, 41))


def test_signals_either_orientation(tmp_path, X):
    np.save(tmp_path / "rows.npy", X)
    np.save(tmp_path / "cols.npy", X.T)
    a, b = load_signals(tmp_path / "rows.npy", 41), load_signals(tmp_path / "cols.npy", 41)
    assert a.shape == (7, 41) and np.array_equal(a, X) and np.array_equal(b, X)


def test_signals_from_npz_and_mat(tmp_path, X):
    np.savez(tmp_path / "x.npz", x=X)
    scipy.io.savemat(tmp_path / "x.mat", {"X": X.T})
    assert np.array_equal(load_signals(tmp_path / "x.npz", 41), X)
    assert np.array_equal(load_signals(tmp_path / "x.mat", 41), X)


def test_square_signal_file_is_ambiguous(tmp_path):
    np.save(tmp_path / "sq.npy", np.ones((41, 41)))
    with pytest.raises(UsageError, match="ambiguous"):
        load_signals(tmp_path / "sq.npy", 41)


def test_signals_with_no_axis_n(tmp_path, X):
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(UsageError, match="neither axis matches n=40"):
        load_signals(tmp_path / "x.npy", 40)


@pytest.mark.parametrize("key", ["D", "A"])
def test_matrix_from_mat_key(tmp_path, key, X):
    scipy.io.savemat(tmp_path / "m.mat", {key: X})
    assert np.array_equal(load_matrix(tmp_path / "m.mat"), X)


def test_matrix_npz_prefers_D_then_A_then_single(tmp_path, X):
    np.savez(tmp_path / "two.npz", A=X, D=2 * X)
    assert np.array_equal(load_matrix(tmp_path / "two.npz"), 2 * X)
    np.savez(tmp_path / "one.npz", whatever=X)
    assert np.array_equal(load_matrix(tmp_path / "one.npz"), X)
    np.savez(tmp_path / "none.npz", u=X, v=X)
    with pytest.raises(UsageError, match=r"keys found: \['u', 'v'\]\); name the one to read with --a-key NAME"):
        load_matrix(tmp_path / "none.npz")


def test_integer_matrix_becomes_float64(tmp_path):
    np.save(tmp_path / "i.npy", np.arange(1, 13).reshape(3, 4))
    A = load_matrix(tmp_path / "i.npy")
    assert A.dtype == np.float64 and A[2, 3] == 12.0


@pytest.mark.parametrize("arr, words", [
    (np.ones(5), "2-D"), (np.ones((2, 3, 4)), "2-D"), (np.array([[1.0, np.nan], [2.0, 3.0]]), "NaN or Inf"),
    (np.array([[1.0, np.inf], [2.0, 3.0]]), "NaN or Inf"), (np.array([[1.0, 0.0], [2.0, 0.0]]), "zero column"),
    (np.ones((2, 2), dtype=complex), "real numbers"), (np.zeros((0, 3)), "empty"),
    (np.array(["a", "b"]), "real numbers"),
])
def test_bad_matrices(tmp_path, arr, words):
    np.save(tmp_path / "a.npy", arr)
    with pytest.raises(UsageError, match=words):
        load_matrix(tmp_path / "a.npy")


def test_bad_files(tmp_path, X):
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(UsageError, match="is empty"):
        load_matrix(tmp_path / "empty.npy")
    np.save(tmp_path / "full.npy", X)
    data = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="truncated"):
        load_matrix(tmp_path / "cut.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UsageError, match="cannot read"):  # never unpickled
        load_matrix(tmp_path / "obj.npy")
    (tmp_path / "a.txt").write_text("1 2\n3 4\n")
    with pytest.raises(UsageError, match=r"\.npy, \.npz or \.mat"):
        load_matrix(tmp_path / "a.txt")
    with pytest.raises(UsageError, match="does not exist"):
        load_matrix(tmp_path / "nope.npy")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "f.json"
    write_json(path, {"a": 1})

    def broken(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]  # no temporary left behind


def test_safetensors_round_trip_and_checksum(tmp_path):
    t = {"W": torch.randn(3, 5, dtype=torch.float64), "theta": torch.arange(4.0)}
    t["view"] = t["W"][0]  # shared storage is cloned, not refused
    digest = save_safetensors(tmp_path / "w.safetensors", t, {"model": "x"})
    back = load_safetensors(tmp_path / "w.safetensors", digest)
    assert all(torch.equal(back[k], t[k]) for k in t)
    data = bytearray((tmp_path / "w.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "w.safetensors").write_bytes(bytes(data))
    with pytest.raises(UsageError, match="checksum"):
        load_safetensors(tmp_path / "w.safetensors", digest)
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(UsageError, match="not a valid safetensors"):
        load_safetensors(tmp_path / "junk.safetensors")
