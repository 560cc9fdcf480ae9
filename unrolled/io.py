"""Files: atomic writes, matrix and signal loading (never unpickled), safetensors checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import torch

from .errors import UsageError, check

MATRIX_KEYS = ("D", "A")
_UMASK = os.umask(0)
os.umask(_UMASK)


FAULT_ENV = "UNROLLED_FAULT_AT"
_fault_hook: Callable[[str], None] | None = None
_fault_count = 0


def fault_point(where: str) -> None:
    """An instant between two writes where a test may kill the process.

    Tests set ``_fault_hook``; ``$UNROLLED_FAULT_AT=N`` ends the process (``os._exit(75)``,
    no cleanup, like ``kill -9``) at the N-th such instant, counting from 1.
    """
    global _fault_count
    _fault_count += 1
    if _fault_hook is not None:
        _fault_hook(where)
    elif os.environ.get(FAULT_ENV) == str(_fault_count):
        os._exit(75)


def fsync_dir(path: str | Path) -> None:
    """Make the renames and creations inside directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_nofollow(path: str | Path, flags: int, mode: int = 0o666) -> int:
    """``os.open`` that refuses to follow a symbolic link at ``path`` (one line, not ELOOP)."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as e:
        if Path(path).is_symlink():
            raise UsageError(f"{path} is a symbolic link; refusing to write through it") from None
        raise UsageError(f"cannot open {path}: {e.strerror}") from None


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync, rename over ``path``, fsync
    the directory.

    A reader sees either the old file or the complete new one, never a half-written file; a
    symbolic link at ``path`` is replaced, never written through. A process killed part-way
    leaves at most a ``.NAME.*.tmp`` file, which :meth:`RunDir.lock` cleans.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            fault_point(f"{path.name}: written, not synced")
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        fault_point(f"{path.name}: synced, not renamed")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fault_point(f"{path.name}: renamed, directory not synced")
    fsync_dir(path.parent)


def check_writable(path: str | Path, what: str = "output file") -> Path:
    """Refuse, before any computing, an output ``path`` that is a directory or cannot be written."""
    path = Path(path)
    check(not path.is_dir(), f"{what} {path} is a directory; give a file name")
    parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    check(parent.is_dir() and os.access(parent, os.W_OK | os.X_OK), f"{what} {path}: cannot write into {parent}")
    check(not path.exists() or os.access(path, os.W_OK), f"{what} {path} is not writable")
    try:  # permission bits do not bind root, nor tell a read-only mount or a full disk: write a block
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".unrolled-probe-")
        try:
            os.write(fd, bytes(4096))
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise UsageError(f"{what} {path}: cannot write into {parent} ({e.strerror})") from None
    return path


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _half_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def _pick(found: list[str], keys: tuple[str, ...], key: str | None, path: Path, what: str, option: str) -> str:
    """The array to read: ``key`` if given, else the first of ``keys``, else the only one."""
    if key is not None:
        check(key in found, f"{path} has no array named {key!r} (keys found: {found})")
        return key
    pick = next((k for k in keys if k in found), found[0] if len(found) == 1 else None)
    check(pick is not None, f"{path} has no {what} named {' or '.join(keys)} (keys found: {found})"
                            + (f"; name the one to read with {option} NAME" if option else ""))
    return pick


def _read_array(path: Path, keys: tuple[str, ...], what: str, key: str | None = None,
                option: str = "--a-key") -> np.ndarray:
    """Read one 2-D float array from ``.npy``, ``.npz`` or ``.mat`` without unpickling.

    ``key`` names the array in an ``.npz`` / ``.mat`` file (default: the first of ``keys``, or
    the only array). A sparse ``.mat`` matrix is made dense if that fits in half the memory;
    a MATLAB v7.3 (HDF5) file is refused in one line.
    """
    check(path.exists(), f"{what} file {path} does not exist")
    check(path.is_file(), f"{what} file {path} is not a file")
    check(path.stat().st_size > 0, f"{what} file {path} is empty")
    suffix = path.suffix.lower()
    check(suffix in (".npy", ".npz", ".mat"), f"{what} file {path} must be .npy, .npz or .mat, got {suffix!r}")
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as e:
        raise UsageError(f"cannot read {what} file {path}: {e.strerror}") from None
    check(not (suffix == ".mat" and (head.startswith((b"MATLAB 7.3", b"\x89HDF")) or head[512:516] == b"\x89HDF")),
          f"{what} file {path} is a MATLAB v7.3 (HDF5) file, which is not read; save it in MATLAB with "
          f"save(FILE, NAME, '-v7') or as .npy")
    try:
        if suffix == ".npy":
            check(key is None, f"{option or 'a key'} names an array inside .npz or .mat files; {path} is .npy")
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                arr = f[_pick(list(f.files), keys, key, path, what, option)]
        else:
            import scipy.io
            import scipy.sparse

            d = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
            arr = d[_pick(sorted(d), keys, key, path, what, option)]
            if scipy.sparse.issparse(arr):
                rows, cols = arr.shape
                need = 8 * rows * cols
                check(need <= _half_memory(), f"{what} in {path} is a sparse {rows:,}x{cols:,} matrix; as a dense "
                                              f"matrix it needs {need / 2**30:,.1f} GiB, more than half of this "
                                              f"machine's memory")
                arr = arr.toarray()
    except UsageError:
        raise
    except Exception as e:  # truncated or foreign files: one line naming the file (never numpy's pickle advice)
        why = "" if "pickle" in str(e) else f": {e}"
        raise UsageError(f"cannot read {what} file {path} (truncated or not a valid {suffix} file){why}") from None
    check(arr.dtype.kind in "fiu", f"{what} in {path} has dtype {arr.dtype}; expected real numbers")
    check(arr.ndim == 2, f"{what} in {path} has shape {arr.shape}; expected a 2-D array")
    check(arr.size > 0, f"{what} in {path} is empty (shape {arr.shape})")
    arr = np.asarray(arr, dtype=np.float64)
    check(bool(np.isfinite(arr).all()), f"{what} in {path} contains NaN or Inf; clean the file")
    return arr


def load_matrix(path: str | Path, key: str | None = None) -> np.ndarray:
    """A measurement matrix ``(m, n)`` from ``.npy``, ``.npz`` or ``.mat`` (array ``key``;
    default ``D`` or ``A``, or the file's only array)."""
    path = Path(path)
    A = _read_array(path, MATRIX_KEYS, "matrix", key)
    zero = np.flatnonzero(np.linalg.norm(A, axis=0) == 0)
    check(zero.size == 0, f"matrix in {path} has {zero.size} zero column(s) (first: {zero[:3].tolist()})")
    return A


SIGNAL_KEYS = {"signal": ("x", "X"), "measurement": ("y", "Y")}


def load_signals(path: str | Path, n: int, what: str = "signal", key: str | None = None) -> np.ndarray:
    """Signals (or ``what="measurement"`` vectors) as ``(samples, n)``, from a file in either
    orientation (keys ``x``/``X`` or ``y``/``Y``, or the file's only array).

    The orientation is decided by which axis has length ``n``; a square ``n x n`` file is
    ambiguous and refused.
    """
    return read_vectors(path, n, what, key)[0]


def read_vectors(path: str | Path, n: int, what: str = "signal", key: str | None = None) -> tuple[np.ndarray, bool]:
    """:func:`load_signals` and whether the file held them as columns (``n x samples``)."""
    path = Path(path)
    X = _read_array(path, SIGNAL_KEYS[what], what, key, option="")
    rows, cols = X.shape
    check(not (rows == n and cols == n),
          f"{path} is {rows}x{cols}: both axes match n={n}, so the orientation is ambiguous; "
          f"save it with a different number of samples")
    check(bool((X != 0).any()), f"every {what} in {path} is zero" + (": the NMSE is undefined" if what == "signal"
                                                                      else ": nothing to learn from"))
    if cols == n:
        return X, False
    check(rows == n, f"{path} has shape {X.shape}, but neither axis matches "
                     f"{'n' if what == 'signal' else 'm'}={n}")
    return X.T.copy(), True


def save_array(path: str | Path, array: np.ndarray, key: str) -> Path:
    """Write ``array`` atomically: ``.mat`` with ``scipy.io.savemat`` (variable ``key``), ``.npz``
    with ``numpy.savez`` (array ``key``), anything else as ``.npy``."""
    path = Path(path)
    suffix = path.suffix.lower()
    array = np.asarray(array)
    if suffix == ".mat":
        import scipy.io

        atomic_write(path, lambda f: scipy.io.savemat(f, {key: array}, do_compression=False))
    elif suffix == ".npz":
        atomic_write(path, lambda f: np.savez(f, **{key: array}))
    else:
        check(suffix in (".npy", ""), f"output {path} must end in .npy, .npz or .mat")
        path = path if suffix else path.with_suffix(".npy")
        atomic_write(path, lambda f: np.save(f, array))
    return path


def save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """Write tensors atomically (shared storage is cloned) and return the file's SHA-256.

    The metadata travels as one JSON string under the key ``unrolled``: safetensors orders
    several keys at random, and the same content must give the same bytes.
    """
    from safetensors.torch import save

    meta = {"unrolled": json.dumps(metadata, sort_keys=True)}
    data = save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, metadata=meta)
    atomic_write(path, lambda f: f.write(data))
    return hashlib.sha256(data).hexdigest()


def tensors_digest(tensors: dict[str, torch.Tensor], text: str) -> str:
    """SHA-256 of ``text`` and every tensor's name, dtype, shape and bytes (in name order)."""
    h = hashlib.sha256(text.encode())
    for k in sorted(tensors):
        v = tensors[k].detach().cpu().contiguous()
        h.update(f"\0{k}\0{v.dtype}\0{tuple(v.shape)}\0".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def safetensors_metadata(path: str | Path, data: bytes) -> dict:
    """The ``unrolled`` metadata of safetensors bytes ``data`` (read from ``path``); ``{}`` if none."""
    try:
        n = int.from_bytes(data[:8], "little")
        check(8 + n <= len(data), "header runs past the end of the file")
        header = json.loads(data[8:8 + n])
        return json.loads(header.get("__metadata__", {}).get("unrolled", "{}"))
    except (UsageError, ValueError, AttributeError) as e:
        raise UsageError(f"weights file {path} is not a valid safetensors file: {e}") from None


def load_safetensors(path: str | Path, expect_sha256: str | None = None) -> dict[str, torch.Tensor]:
    """Read tensors, refusing a file whose hash differs from the one recorded when it was written."""
    return read_safetensors(path, expect_sha256)[0]


def read_safetensors(path: str | Path, expect_sha256: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """:func:`load_safetensors` and the file's ``unrolled`` metadata."""
    from safetensors.torch import load

    path = Path(path)
    check(path.exists(), f"weights file {path} does not exist")
    data = path.read_bytes()
    if expect_sha256 is not None and hashlib.sha256(data).hexdigest() != expect_sha256:
        raise UsageError(f"weights file {path} does not match its recorded checksum: it is corrupted or was modified")
    meta = safetensors_metadata(path, data)
    try:
        return load(data), meta
    except Exception as e:
        raise UsageError(f"weights file {path} is not a valid safetensors file: {e}") from None
