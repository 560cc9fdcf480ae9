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


def _read_array(path: Path, keys: tuple[str, ...], what: str) -> np.ndarray:
    """Read one 2-D float array from ``.npy``, ``.npz`` or ``.mat`` without unpickling."""
    check(path.exists(), f"{what} file {path} does not exist")
    check(path.stat().st_size > 0, f"{what} file {path} is empty")
    suffix = path.suffix.lower()
    check(suffix in (".npy", ".npz", ".mat"), f"{what} file {path} must be .npy, .npz or .mat, got {suffix!r}")
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        raise UsageError(f"cannot read {what} file {path}: {e.strerror}") from None
    check(not (suffix == ".mat" and b"\x89HDF" in head or head.startswith(b"MATLAB 7.3")),
          f"{what} file {path} is a MATLAB v7.3 (HDF5) file; save it with save(..., '-v7') or as .npy")
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                found = list(f.files)
                key = next((k for k in keys if k in found), found[0] if len(found) == 1 else None)
                check(key is not None, f"{path} has no array named {' or '.join(keys)} (keys found: {found})")
                arr = f[key]
        else:
            import scipy.io
            import scipy.sparse

            d = {k: v for k, v in scipy.io.loadmat(path).items() if not k.startswith("__")}
            key = next((k for k in keys if k in d), None)
            check(key is not None, f"{path} has no matrix named {' or '.join(keys)} (keys found: {sorted(d)})")
            arr = d[key]
            check(not scipy.sparse.issparse(arr), f"{what} in {path} is a sparse matrix; save it as a full matrix")
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


def load_matrix(path: str | Path) -> np.ndarray:
    """A measurement matrix ``(m, n)`` from ``.npy``, ``.npz`` or ``.mat`` (key ``D`` or ``A``)."""
    path = Path(path)
    A = _read_array(path, MATRIX_KEYS, "matrix")
    zero = np.flatnonzero(np.linalg.norm(A, axis=0) == 0)
    check(zero.size == 0, f"matrix in {path} has {zero.size} zero column(s) (first: {zero[:3].tolist()})")
    return A


def load_signals(path: str | Path, n: int) -> np.ndarray:
    """Test signals as ``(samples, n)``, from a file in either orientation.

    The orientation is decided by which axis has length ``n``; a square ``n x n`` file is
    ambiguous and refused.
    """
    path = Path(path)
    X = _read_array(path, ("x", "X"), "signal")
    rows, cols = X.shape
    check(not (rows == n and cols == n),
          f"{path} is {rows}x{cols}: both axes match n={n}, so the orientation is ambiguous; "
          f"save it with a different number of samples")
    check(bool((X != 0).any()), f"every signal in {path} is zero: the NMSE is undefined")
    if cols == n:
        return X
    check(rows == n, f"{path} has shape {X.shape}, but neither axis matches n={n}")
    return X.T.copy()


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
