"""Training data: a finite pool of training pairs, generated or read from files.

By default the trainer draws fresh batches from the problem's generator every step. A
:class:`Pool` replaces that with a fixed set of ``N`` training pairs ``(x_i, y_i)`` (or
measurements ``y_i`` alone, for the unsupervised Lasso loss)::

    from unrolled.training.data import DataSpec, Pool
    pool = Pool.generated(problem, 102_400)              # the paper protocol's fixed pool
    ur.train(problem, "lista", data=DataSpec(pool=102_400), ...)   # the same, through the API
    ur.train(problem, "alista", data=DataSpec(train_x="X.npy"), ...)  # signals from a file

Exact rules:

* Batches walk through the pool without replacement, epoch after epoch; epoch ``e`` visits
  the pool in the order ``randperm(N)`` seeded by ``(seed, e)``. A batch that crosses the end
  of an epoch continues into the next one. The position is the number of samples drawn
  so far, i.e. the trainer's ``samples`` counter, which every checkpoint records: a resumed
  run draws the same batches as an uninterrupted one, bit for bit.
* A generated pool is drawn once from the problem's stream 6 (docs/spec.md §2) in blocks of
  4,096, measured with the problem's noise; it is stored in the model's dtype.
* Signals read from a file are in the user's units and are mapped to the problem's units
  (``x * scale`` where the problem normalised its columns, see :func:`to_problem_units`).
  Without a measurement file they are measured once, with the problem's training SNR and
  noise drawn from a stream seeded by the training seed.
* Validation: a pool from files gives up ``val_fraction`` (default 0.1) of its samples,
  chosen by a seeded permutation, unless validation files are given; a generated pool keeps
  all ``N`` samples for training and validates on the problem's own fixed validation set
  (independent of the pool), unless ``val_fraction`` is given. The test set is never used.
* Measurements alone (``train_y``): the loss must be ``lasso``; validation is then the Lasso
  objective on held-out measurements (split off, or ``val_y``).

Files are recorded in the run's ``config.json`` by absolute path and SHA-256; a resumed run
refuses files that changed.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import check
from ..io import load_signals, sha256
from ..problem import Problem, _stream, check_memory

DEFAULT_VAL_FRACTION = 0.1  # share of a pool from files split off for validation
_BLOCK = 4096  # a generated pool is drawn in blocks of this many samples (bounded temporaries)
_SHUFFLE, _NOISE, _SPLIT = 0x5EED_0001, 0x5EED_0002, 0x5EED_0003  # purposes of the derived seeds


def derived_seed(seed: int, purpose: int, index: int = 0) -> int:
    """A seed in [0, 2^63) for ``(seed, purpose, index)``, independent across its arguments."""
    return int(np.random.SeedSequence([seed, purpose, index]).generate_state(1, np.uint64)[0] >> 1)


def _generator(seed: int, purpose: int, index: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(derived_seed(seed, purpose, index))


# -- units -------------------------------------------------------------------------------------


def column_scale(problem: Problem) -> Tensor | None:
    """The column norms the problem divided out of the user's matrix (``A = A_user / scale``),
    or ``None`` when ``A`` is used as given. Read from ``problem.scale`` when the problem has it."""
    scale = getattr(problem, "scale", None)
    return None if scale is None else torch.as_tensor(scale, dtype=torch.float64).reshape(-1)


def to_problem_units(problem: Problem, x_user: Tensor) -> Tensor:
    """Signals in the user's units -> the problem's: ``x = x_user * scale`` (``A x = A_user x_user``)."""
    from_user = getattr(problem, "from_user", None)
    if from_user is not None:
        return from_user(x_user)
    scale = column_scale(problem)
    return x_user if scale is None else x_user * scale.to(x_user.dtype)


def to_user_units(problem: Problem, x: Tensor) -> Tensor:
    """Estimates in the problem's units -> the user's: ``x_user = x / scale``."""
    to_user = getattr(problem, "to_user", None)
    if to_user is not None:
        return to_user(x)
    scale = column_scale(problem)
    return x if scale is None else x / scale.to(x.device, x.dtype)


# -- the pool ----------------------------------------------------------------------------------


class Pool:
    """``N`` training pairs: ``y: (N, m)`` and ``x: (N, n)`` or ``None`` (measurements only).

    :meth:`batch` ``(start, size)`` returns samples ``start .. start + size`` of the endless
    sequence of seeded epoch permutations; it keeps no state of its own.
    """

    def __init__(self, y: Tensor, x: Tensor | None = None, seed: int = 0) -> None:
        check(y.ndim == 2 and len(y) >= 1, f"a pool needs measurements (N, m), got shape {tuple(y.shape)}")
        check(x is None or (x.ndim == 2 and len(x) == len(y)),
              f"a pool's signals {tuple(x.shape) if x is not None else ()} and measurements {tuple(y.shape)} "
              f"differ in number")
        self.x, self.y, self.seed = x, y, seed
        self._order: tuple[int, Tensor] | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def supervised(self) -> bool:
        return self.x is not None

    @classmethod
    def generated(cls, problem: Problem, size: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> Pool:
        """``size`` pairs from the problem's generator (its stream 6, docs/spec.md §2), in ``dtype``;
        ``seed`` seeds the epoch shuffles."""
        check(size >= 1, f"a training pool needs at least one sample, got {size}")
        check_memory(8 * size * (problem.m + problem.n) + 32 * _BLOCK * problem.n, "the training pool",
                     f"{size:,} x {problem.m + problem.n:,}")
        g = _stream(problem.spec.seed, 6)
        xs, ys = [], []
        for lo in range(0, size, _BLOCK):
            x, y = problem.sample(min(_BLOCK, size - lo), g, torch.float64)
            xs.append(x.to(dtype))
            ys.append(y.to(dtype))
        return cls(torch.cat(ys), torch.cat(xs), seed)

    def order(self, epoch: int) -> Tensor:
        """The visiting order of ``epoch`` (the last one is cached)."""
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, torch.randperm(len(self), generator=_generator(self.seed, _SHUFFLE, epoch)))
        return self._order[1]

    def indices(self, start: int, size: int) -> Tensor:
        """Pool indices of samples ``start .. start + size`` (crossing epochs as needed)."""
        check(start >= 0 and size >= 1, f"bad pool position {start} / batch {size}")
        n, parts = len(self), []
        while size > 0:
            epoch, offset = divmod(start, n)
            take = min(size, n - offset)
            parts.append(self.order(epoch)[offset:offset + take])
            start, size = start + take, size - take
        return torch.cat(parts)

    def batch(self, start: int, size: int) -> tuple[Tensor | None, Tensor]:
        """``(x or None, y)`` of samples ``start .. start + size`` (``start``: samples drawn so far)."""
        idx = self.indices(start, size)
        return (None if self.x is None else self.x[idx]), self.y[idx]

    def split(self, count: int, seed: int) -> tuple[Pool, Pool]:
        """``(rest, held_out)``: ``count`` samples chosen by a permutation seeded by ``seed``."""
        check(1 <= count < len(self), f"cannot hold out {count} of a pool of {len(self)} samples "
                                      f"(keep at least one for training)")
        perm = torch.randperm(len(self), generator=_generator(seed, _SPLIT))
        held, rest = perm[:count].sort().values, perm[count:].sort().values
        return self.subset(rest), self.subset(held)

    def subset(self, idx: Tensor) -> Pool:
        """The pool of samples ``idx`` (same shuffle seed)."""
        return Pool(self.y[idx], None if self.x is None else self.x[idx], self.seed)


# -- what a run trains on ----------------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """Where a run's training (and validation) data come from; the default is fresh samples.

    ``pool``: a pool of that many samples generated from the problem. ``train_x`` / ``train_y``:
    signal and measurement files (``.npy``, ``.npz``, ``.mat``, either orientation; keys ``x``/``X``,
    ``y``/``Y``). ``val_x`` / ``val_y``: validation files. ``val_fraction``: the share of the pool
    held out for validation (default 0.1 for files, none for a generated pool).
    """

    pool: int = 0
    train_x: str | None = None
    train_y: str | None = None
    val_x: str | None = None
    val_y: str | None = None
    val_fraction: float | None = None

    def __post_init__(self) -> None:
        files = self.train_x is not None or self.train_y is not None
        check(self.pool >= 0, f"pool={self.pool} must be >= 0 (0: fresh samples every step)")
        check(not (self.pool and files), "give a generated pool (pool=N) or training files (train_x/train_y), not both")
        check(files or (self.val_x is None and self.val_y is None),
              "validation files (val_x/val_y) go with training files (train_x/train_y)")
        check(self.val_fraction is None or (0 < self.val_fraction < 1 and math.isfinite(self.val_fraction)),
              f"val_fraction={self.val_fraction} must be in (0, 1)")
        check(self.val_fraction is None or (self.val_x is None and self.val_y is None),
              "give validation files or val_fraction, not both")
        check(self.val_fraction is None or self.pool or files,
              "val_fraction splits a pool: give pool or train_x/train_y")
        check(self.train_x is not None or self.val_x is None,
              "val_x needs train_x: training on measurements alone (train_y) validates on measurements (val_y)")

    @property
    def fresh(self) -> bool:
        return not self.pool and self.train_x is None and self.train_y is None

    @property
    def files(self) -> dict[str, str]:
        return {k: v for k in ("train_x", "train_y", "val_x", "val_y") if (v := getattr(self, k)) is not None}

    def _names(self, prefix: str) -> str:
        return " and ".join(v for k, v in self.files.items() if k.startswith(prefix))

    def record(self) -> dict:
        """What ``config.json`` keeps: the fields, with files as absolute paths and their SHA-256."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, 0)}
        for k, path in self.files.items():
            d[k] = str(Path(path).resolve())
            d[f"{k}_sha256"] = _file_sha256(path, k)
        return d

    @classmethod
    def from_record(cls, record: dict) -> DataSpec:
        """The spec of a ``config.json`` record, refusing files that changed since the run began."""
        spec = cls(**{k: v for k, v in record.items() if not k.endswith("_sha256")})
        for k, path in spec.files.items():
            check(_file_sha256(path, k) == record.get(f"{k}_sha256"),
                  f"{path} ({k.replace('_', '-')}) changed since the run began (its SHA-256 differs); "
                  f"restore it, or train a new run")
        return spec

    def build(self, problem: Problem, seed: int, loss: str, dtype: torch.dtype = torch.float32,
              val_size: int | None = None) -> TrainingData:
        """The pool and the validation set for ``problem``, a training ``seed`` and ``loss``; the
        validation set has at most ``val_size`` samples (the trainer's ``val_size``): a split
        holds out no more than that, and of longer validation files the first are used."""
        check(self.train_x is not None or self.train_y is None or loss == "lasso",
              f"training on measurements alone (train_y without train_x) needs the Lasso loss "
              f"(--loss lasso), not {loss!r}")
        if self.pool:
            pool = Pool.generated(problem, self.pool, seed, dtype)
            what = f"a pool of {self.pool:,} samples generated from the problem"
        else:
            pool = _read_pool(problem, self.train_x, self.train_y, seed, dtype)
            what = f"a pool of {len(pool):,} samples from {self._names('train')}"
        if self.val_x is not None or self.val_y is not None:
            val = _read_pool(problem, self.val_x, self.val_y, seed + 1, dtype)
            how = f"validation: {len(val):,} samples from {self._names('val')}"
        elif self.pool and self.val_fraction is None:
            x, y = problem.validation(torch.float64)
            val = Pool(y, x)
            how = f"validation: the problem's own {len(val):,} samples (independent of the pool)"
        else:
            fraction = DEFAULT_VAL_FRACTION if self.val_fraction is None else self.val_fraction
            count = max(1, min(round(fraction * len(pool)), val_size or len(pool)))
            check(count < len(pool), f"a pool of {len(pool)} sample(s) is too small to split off validation; "
                                     f"give more samples or validation files")
            pool, val = pool.split(count, seed)
            cap = f", at most val_size={val_size:,}" if val_size is not None and count == val_size else ""
            how = f"validation: {count:,} samples ({fraction:g}{cap}) split off the pool, permutation seeded by {seed}"
        if val_size is not None and len(val) > val_size:
            val = val.subset(torch.arange(val_size))
            how += f", the first {val_size:,} used (val_size)"
        check(loss != "semi" or pool.supervised, "the semi-supervised loss needs signals (train_x)")
        target = "the Lasso objective" if loss == "lasso" else "NMSE"
        return TrainingData(pool, val.x, val.y, f"training data: {what}, {len(pool):,} for training; {how} ({target})")


@dataclass
class TrainingData:
    """What the trainer draws from: ``pool`` and the validation set ``(x_val or None, y_val)``."""

    pool: Pool
    x_val: Tensor | None
    y_val: Tensor
    description: str

    @property
    def validation(self) -> tuple[Tensor | None, Tensor]:
        return self.x_val, self.y_val

    def batch(self, start: int, size: int) -> tuple[Tensor | None, Tensor]:
        return self.pool.batch(start, size)


def _file_sha256(path: str, what: str) -> str:
    check(Path(path).is_file(), f"{what.replace('_', '-')} file {path} does not exist")
    return sha256(path)


def _read_pool(problem: Problem, x_file: str | None, y_file: str | None, seed: int, dtype: torch.dtype) -> Pool:
    """Signals (user units -> problem units) and/or measurements from files; missing
    measurements are measured once with the problem's training SNR (noise seeded by ``seed``)."""
    x = y = None
    if x_file is not None:
        x = to_problem_units(problem, torch.from_numpy(load_signals(x_file, problem.n)))
    if y_file is not None:
        y = torch.from_numpy(load_signals(y_file, problem.m, what="measurement"))
    if x is not None and y is not None:
        check(len(x) == len(y), f"{x_file} holds {len(x)} signals but {y_file} holds {len(y)} measurement vectors")
    if y is None:
        y = problem.measure(x, _generator(seed, _NOISE))
    return Pool(y.to(dtype), None if x is None else x.to(dtype), seed)
