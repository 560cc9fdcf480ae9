"""Dictionaries: the 256x512 patch dictionary and convolutional filter banks.

* Patch dictionary: scikit-learn's :class:`~sklearn.decomposition.MiniBatchDictionaryLearning`
  (online dictionary learning, Mairal et al. 2009; the paper used Xu & Yin 2013) on random
  16x16 training patches, each with its mean removed and divided by 255 (the reference's
  scaling); atoms of unit norm, saved as a problem file (``A`` = ``D``, 256 x 512).
* Convolutional dictionary ``(M, h, w)``: read from ``.npy``/``.npz``/``.mat`` in MATLAB layout
  ``(h, w, M)`` or PyTorch layout ``(M, h, w)`` (also ``(M, 1, h, w)``), array chosen by ``key``;
  or learned by sporco's convolutional BPDN dictionary learning (Wohlberg's ADMM,
  :class:`sporco.dictlrn.cbpdndl.ConvBPDNDictLearn`) on mean-removed training crops.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import UsageError, check, choice
from ..problem import Problem, ProblemSpec
from . import patches as P
from .data import require

LAYOUTS = ("auto", "matlab", "torch")


def training_patches(images: list[np.ndarray], count: int, size: int, seed: int) -> np.ndarray:
    """``count`` random mean-removed patches on the 0-1 scale, ``(count, size * size)``."""
    raw = P.random_patches(images, count, size, np.random.default_rng(seed))
    return P.remove_mean(raw)[0] / 255.0


def learn_patch_dictionary(images: list[np.ndarray], atoms: int = 512, size: int = 16, count: int = 50_000,
                           alpha: float = 0.1, epochs: int = 2, seed: int = 0) -> np.ndarray:
    """A ``(size^2, atoms)`` dictionary with unit-norm columns learned from ``count`` training patches
    (``alpha``: the l1 weight of scikit-learn's objective; ``epochs``: passes over the patches)."""
    decomposition = require("sklearn.decomposition")
    X = training_patches(images, count, size, seed)
    X = X[np.linalg.norm(X, axis=1) > 1e-3]  # flat patches carry no structure
    learner = decomposition.MiniBatchDictionaryLearning(n_components=atoms, alpha=alpha, batch_size=256,
                                                        max_iter=epochs, random_state=seed, fit_algorithm="lars")
    D = learner.fit(X).components_.T.astype(np.float64)
    return D / np.linalg.norm(D, axis=0, keepdims=True)


def save_dictionary(path: str | Path, D: np.ndarray, source: str) -> Path:
    """``D`` as an unrolled problem file (``A = D``; ``a_file`` records where it came from)."""
    m, n = D.shape
    spec = ProblemSpec(m=m, n=n, p=0.1, matrix="file", a_file=f"dictionary:{source}", val_size=1, test_size=1)
    return Problem(spec, D).save(path)


def load_dictionary(path: str | Path, size: int = 16) -> np.ndarray:
    """The ``(size^2, atoms)`` dictionary of a problem file written by :func:`save_dictionary` (or any
    problem file whose A has ``size^2`` rows)."""
    D = Problem.load(path).A.numpy()
    check(D.shape[0] == size * size, f"{path} holds a {D.shape[0]}x{D.shape[1]} matrix; a dictionary of "
                                     f"{size}x{size} patches needs {size * size} rows")
    return D


# -- convolutional dictionaries ------------------------------------------------------------------


def _read_nd(path: Path, key: str | None) -> np.ndarray:
    check(path.is_file(), f"dictionary file {path} does not exist")
    suffix = path.suffix.lower()
    check(suffix in (".npy", ".npz", ".mat"), f"dictionary file {path} must be .npy, .npz or .mat, got {suffix!r}")
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        else:
            arrays = {k: v for k, v in require("scipy.io").loadmat(path).items() if not k.startswith("__")}
    except UsageError:
        raise
    except Exception as e:
        why = "" if "pickle" in str(e) else f": {type(e).__name__}"
        raise UsageError(f"cannot read dictionary file {path} (truncated, MATLAB v7.3, or not a {suffix} file){why}") \
            from None
    if key is None:
        key = "D" if "D" in arrays else (next(iter(arrays)) if len(arrays) == 1 else None)
        check(key is not None, f"{path} holds {', '.join(sorted(arrays))}; choose one with key NAME (--key)")
    check(key in arrays, f"{path} has no array named {key!r} (keys found: {', '.join(sorted(arrays)) or 'none'})")
    return arrays[key]


def conv_filters(array: np.ndarray, layout: str = "auto", name: str = "dictionary") -> np.ndarray:
    """Filters ``(M, h, w)`` float64 from a MATLAB ``(h, w, M)`` or PyTorch ``(M, h, w)`` / ``(M, 1, h, w)`` array.

    ``auto`` reads ``(h, h, M)`` with ``M != h`` as MATLAB and ``(M, h, h)`` with ``M != h`` as PyTorch;
    anything else needs ``layout`` given."""
    choice(layout, LAYOUTS, "dictionary layout")
    a = np.asarray(array)
    check(a.dtype.kind in "fiu", f"{name} has dtype {a.dtype}; expected real numbers")
    if a.ndim == 4:
        check(a.shape[1] == 1, f"{name} has shape {a.shape}; a 4-D filter bank must be (M, 1, h, w)")
        a, layout = a[:, 0], "torch" if layout == "auto" else layout
    check(a.ndim == 3, f"{name} has shape {a.shape}; expected filters (h, w, M) (MATLAB) or (M, h, w) (PyTorch)")
    if layout == "auto":
        matlab, torch_ = a.shape[0] == a.shape[1] != a.shape[2], a.shape[1] == a.shape[2] != a.shape[0]
        check(matlab != torch_, f"{name} has shape {a.shape}, which could be (h, w, M) or (M, h, w); "
                                f"say which with layout matlab|torch (--layout)")
        layout = "matlab" if matlab else "torch"
    f = np.moveaxis(a, 2, 0) if layout == "matlab" else a
    f = np.ascontiguousarray(f, dtype=np.float64)
    check(f.shape[1] <= 64 and f.shape[2] <= 64 and f.shape[0] >= 1,
          f"{name}: filters of {f.shape[1]}x{f.shape[2]} pixels ({f.shape[0]} of them) are not a filter bank; "
          f"check the layout (--layout)")
    check(bool(np.isfinite(f).all()), f"{name} contains NaN or Inf")
    norms = np.sqrt((f ** 2).sum(axis=(1, 2)))
    check(bool((norms > 0).all()), f"{name} has an all-zero filter")
    return f


def load_conv_dictionary(path: str | Path, key: str | None = None, layout: str = "auto") -> np.ndarray:
    """Filters ``(M, h, w)`` from a file (see :func:`conv_filters`)."""
    path = Path(path)
    return conv_filters(_read_nd(path, key), layout, str(path))


def learn_conv_dictionary(images: list[np.ndarray], filters: int = 100, size: int = 3, lam: float = 0.05,
                          iterations: int = 100, crop: int = 64, crops: int = 16, seed: int = 0) -> np.ndarray:
    """``(filters, size, size)`` unit-norm filters learned by sporco on ``crops`` random ``crop x crop``
    mean-removed training crops (0-1 scale), ``lam`` the l1 weight, ``iterations`` ADMM iterations."""
    cbpdndl = require("sporco.dictlrn.cbpdndl")
    rng = np.random.default_rng(seed)
    S = P.random_patches(images, crops, crop, rng).reshape(crops, crop, crop) / 255.0
    S = S - S.mean(axis=(1, 2), keepdims=True)
    D0 = rng.standard_normal((size, size, filters))
    opt = cbpdndl.ConvBPDNDictLearn.Options({"Verbose": False, "MaxMainIter": iterations,
                                             "CBPDN": {"rho": 50.0 * lam + 0.5}, "CCMOD": {"rho": 10.0}},
                                            dmethod="cns")
    learner = cbpdndl.ConvBPDNDictLearn(D0, np.moveaxis(S, 0, 2), lam, opt, dmethod="cns")
    D = np.asarray(learner.solve()).reshape(size, size, filters)
    f = np.moveaxis(D, 2, 0)
    return f / np.sqrt((f ** 2).sum(axis=(1, 2), keepdims=True))


def save_conv_dictionary(path: str | Path, filters: np.ndarray, meta: dict) -> Path:
    """Filters ``(M, h, w)`` as ``.npz`` (array ``D``, PyTorch layout, and ``meta`` as JSON), atomically."""
    from ..io import atomic_write

    path = Path(path)
    atomic_write(path, lambda f: np.savez(f, D=filters, meta=np.array(json.dumps(meta))))
    return path


def describe(filters: np.ndarray) -> str:
    M, h, w = filters.shape
    return f"{M} filters of {h}x{w} (||d|| in [{math.sqrt(min((filters**2).sum((1, 2)))):.3g}, " \
           f"{math.sqrt(max((filters**2).sum((1, 2)))):.3g}])"
