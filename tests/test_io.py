"""Files (io.py): matrix and signal loading, orientation, atomic writes, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch

from unrolled import UsageError
from unrolled.io import (
    atomic_write,
    load_matrix,
    load_safetensors,
    load_signals,
    read_vectors,
    save_array,
    save_safetensors,
    write_json,
)


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


def test_a_key_names_the_array_in_mat_and_npz(tmp_path, X):
    scipy.io.savemat(tmp_path / "m.mat", {"Phi": X, "other": np.ones((2, 2))})
    np.savez(tmp_path / "m.npz", Phi=X, D=2 * X)
    assert np.array_equal(load_matrix(tmp_path / "m.mat", "Phi"), X)
    assert np.array_equal(load_matrix(tmp_path / "m.npz", "Phi"), X)  # the key wins over the default D
    with pytest.raises(UsageError, match=r"no array named 'B' \(keys found: \['Phi', 'other'\]\)"):
        load_matrix(tmp_path / "m.mat", "B")
    with pytest.raises(UsageError, match="no matrix named D or A.*--a-key NAME"):
        load_matrix(tmp_path / "m.mat")
    scipy.io.savemat(tmp_path / "one.mat", {"Phi": X})
    assert np.array_equal(load_matrix(tmp_path / "one.mat"), X), "a file's only matrix is read without a key"
    np.save(tmp_path / "m.npy", X)
    with pytest.raises(UsageError, match="inside .npz or .mat"):
        load_matrix(tmp_path / "m.npy", "Phi")


def test_sparse_mat_is_read_dense_and_refused_when_too_big(tmp_path, X):
    import scipy.sparse

    dense = np.where(np.abs(X) > 1, X, 0.0)
    dense[0] = 1.0  # no zero column
    scipy.io.savemat(tmp_path / "s.mat", {"A": scipy.sparse.csc_matrix(dense)})
    A = load_matrix(tmp_path / "s.mat")
    assert isinstance(A, np.ndarray) and A.dtype == np.float64 and np.array_equal(A, dense)
    big = scipy.sparse.csc_matrix(([1.0], ([0], [0])), shape=(10**6, 10**6))
    scipy.io.savemat(tmp_path / "big.mat", {"A": big})
    with pytest.raises(UsageError, match=r"sparse 1,000,000x1,000,000 matrix; as a dense matrix it needs 7,450\.6 GiB"):
        load_matrix(tmp_path / "big.mat")


def test_mat_v73_is_refused_by_its_header(tmp_path):
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan 1 HDF5 schema 1.00 ."
    (tmp_path / "a.mat").write_bytes(header.ljust(512, b" ") + b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    (tmp_path / "b.mat").write_bytes(b"\0" * 512 + b"\x89HDF\r\n\x1a\n" + b"\0" * 100)  # no text header
    for name in ("a.mat", "b.mat"):
        with pytest.raises(UsageError, match=r"MATLAB v7\.3 \(HDF5\) file, which is not read; save it in MATLAB "
                                             r"with save\(FILE, NAME, '-v7'\)") as e:
            load_matrix(tmp_path / name)
        assert "truncated" not in str(e.value)


@pytest.mark.parametrize("name", ["W.mat", "W.npz", "W.npy", "W"])
def test_save_array_writes_what_the_name_says(tmp_path, X, name):
    path = save_array(tmp_path / name, X, "W")
    if name.endswith(".mat"):
        assert path.read_bytes()[:10] == b"MATLAB 5.0" and np.array_equal(scipy.io.loadmat(path)["W"], X)
    elif name.endswith(".npz"):
        with np.load(path) as f:
            assert list(f.files) == ["W"] and np.array_equal(f["W"], X)
    else:
        assert path.name == "W.npy" and np.array_equal(np.load(path), X)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    with pytest.raises(UsageError, match=r"\.npy, \.npz or \.mat"):
        save_array(tmp_path / "W.txt", X, "W")


def test_measurement_files_either_orientation(tmp_path, X):
    scipy.io.savemat(tmp_path / "y.mat", {"Y": X.T})
    Y, columns = read_vectors(tmp_path / "y.mat", 41, "measurement")
    assert columns and np.array_equal(Y, X)
    np.save(tmp_path / "z.npy", np.zeros((3, 41)))
    with pytest.raises(UsageError, match="every measurement in .* is zero"):
        load_signals(tmp_path / "z.npy", 41, what="measurement")
