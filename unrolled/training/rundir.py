"""One training run on disk: the files of a run directory, their formats and their hashes.

Every file is written atomically (:mod:`unrolled.io`) and nothing is ever unpickled:

========================  ===================================================================
``config.json``           format tag, model name and config, schedule name and stages, training
                          options, the problem's source, SHA-256 and spec, device, torch version,
                          optional ``init_from`` (a warm start) and caller metadata (``repro``)
``problem.npz``           the problem, byte for byte as given (its SHA-256 is in ``config.json``)
``state.safetensors``     the resume checkpoint, one file replaced atomically: current, best and
                          last-good parameters, Adam moments, the batch generator, and in its
                          metadata the counters, the config it was written under and a SHA-256
                          over all of it (format v1 kept the counters in ``progress.json``)
``.lock``                 the PID of the process writing the run, ``flock``-ed for its life
``metrics.jsonl``         one line per validation (no wall-clock times, so a resumed run's metrics
                          are byte-identical to an uninterrupted run's)
``weights.safetensors``   the trained model (best validated weights)
``result.json``           the weights' SHA-256, samples, steps, seconds, NaN rollbacks, device
``eval*.csv``             tables written by ``unrolled eval``
========================  ===================================================================

A run has *started* once ``state.safetensors`` exists and *finished* once ``result.json`` does.

A checkpoint is one rename: the metrics line is appended and synced first, then the state
file (which records how many metrics bytes belong to it) replaces the old one and the
directory is synced. Killed at any instant, the run resumes from the last complete
checkpoint (metrics written after it are cut off); a killed ``.tmp`` file is removed.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError, check
from ..io import (
    atomic_write,
    fault_point,
    fsync_dir,
    load_safetensors,
    open_nofollow,
    read_safetensors,
    save_safetensors,
    sha256,
    tensors_digest,
    write_json,
)
from ..models import UnrolledNet
from ..problem import Problem
from .schedule import Stage

FORMAT = "unrolled-run-v2"
FORMATS = ("unrolled-run-v1", FORMAT)  # readable; v1 kept the checkpoint counters in progress.json
WEIGHTS_FORMAT = "unrolled-weights-v1"
STALE = ("metrics.jsonl", "weights.safetensors", "result.json", "eval.csv", "progress.json", "state.safetensors")
OWN = ("problem.npz", ".lock", "train.log")  # what a directory holds before its config.json (a killed start)
RESULT = {"weights_sha256": str, "samples": int, "steps": int, "seconds": (int, float), "nan_events": int,
          "device": str}
_held: dict[str, int] = {}  # run directory -> file descriptor of its .lock held by this process


def _read_json(path: Path, what: str) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{path} is not valid JSON ({e}); it was edited or damaged") from None
    check(isinstance(obj, dict), f"{path} holds {type(obj).__name__}, expected the {what} object")
    return obj


def _check_fields(obj: dict, fields: dict, path: Path) -> None:
    for k, t in fields.items():
        v = obj.get(k)
        check(isinstance(v, t) and not isinstance(v, bool) and (not isinstance(v, float) or math.isfinite(v)),
              f"{path}: field {k!r} is {v!r}; it was edited or damaged")


def save_weights(model: UnrolledNet, path: str | Path) -> str:
    """Write ``model``'s state dict to a safetensors file; returns its SHA-256."""
    meta = {"format": WEIGHTS_FORMAT, "model": model.name,
            "config": json.dumps(dataclasses.asdict(model.config), sort_keys=True)}
    return save_safetensors(path, dict(model.state_dict()), meta)


def load_weights(model: UnrolledNet, path: str | Path, sha256: str | None) -> None:
    """Load weights into ``model``, refusing a file whose hash or tensors do not fit it."""
    state = load_safetensors(path, sha256)
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    check(not missing and not extra, f"{path} does not fit model {model.name!r} (missing {missing[:3]}, "
                                     f"unexpected {extra[:3]})")
    for k, v in state.items():
        check(v.shape == own[k].shape, f"{path}: tensor {k} has shape {tuple(v.shape)}, "
                                       f"model expects {tuple(own[k].shape)}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})


def eval_csv_name(split: str, overrides: dict[str, Any]) -> str:
    """``eval.csv`` for the plain test evaluation; otherwise a name that says what differs."""
    if split == "test" and not overrides:
        return "eval.csv"
    tag = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", f"eval-{split}" + (f"-{tag}" if tag else "")) + ".csv"


def with_later_fields(cfg: dict) -> dict:
    """``cfg`` with the model-config fields added after it was written set to the values that give
    the model it was trained as (``recipes.LATER_FIELDS``, e.g. ``bound = false``): a run from before
    a default changed loads as it was trained."""
    from ..models import MODELS
    from ..recipes import LATER_FIELDS

    model, mc = cfg.get("model"), cfg.get("model_config")
    if model in MODELS and isinstance(mc, dict):
        fields = {f.name for f in dataclasses.fields(MODELS[model].Config)}
        cfg["model_config"] = {**{k: v for k, v in LATER_FIELDS.items() if k in fields}, **mc}
    return cfg


class RunDir:
    """The run directory at ``path``: the one place that knows its file names and formats."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config_file = self.path / "config.json"
        self.problem_file = self.path / "problem.npz"
        self.state_file = self.path / "state.safetensors"
        self.progress_file = self.path / "progress.json"
        self.metrics_file = self.path / "metrics.jsonl"
        self.weights_file = self.path / "weights.safetensors"
        self.result_file = self.path / "result.json"

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def started(self) -> bool:
        return self.state_file.exists() or self.progress_file.exists()

    # -- the writer's lock ----------------------------------------------------------------------

    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    def lock(self) -> None:
        """Become the run's only writer for this process's life (the kernel releases the
        ``flock`` when it dies), then remove ``.tmp`` files a killed writer left."""
        key = str(self.path.resolve())
        if key in _held:
            return
        check(not self.path.exists() or self.path.is_dir(), f"{self.path} exists and is not a directory")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = open_nofollow(self.lock_file, os.O_RDWR | os.O_CREAT)
        except OSError as e:
            raise UsageError(f"run directory {self.path}: cannot write there ({e.strerror}); "
                             f"give --out a writable place") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(f"{self.path} is being written by another process (PID {pid}); "
                             f"wait for it to end or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = fd
        for tmp in self.path.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)

    def unlock(self) -> None:
        fd = _held.pop(str(self.path.resolve()), None)
        if fd is not None:
            os.close(fd)

    def writer(self) -> str | None:
        """The PID of another process writing this run, or ``None``."""
        if str(self.path.resolve()) in _held or not self.lock_file.is_file():
            return None
        try:
            fd = os.open(self.lock_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:  # not ours (a link, unreadable): nobody holds a lock through it
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            return os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)

    @property
    def finished(self) -> bool:
        return self.result_file.exists()

    # -- config and problem ---------------------------------------------------------------------

    def create(self, problem: Problem, problem_file: str | Path | None, config: dict) -> dict:
        """Start a fresh run: write ``problem.npz`` and ``config.json`` (``config`` plus the
        format tag and the problem's record); returns what was written.

        ``problem_file``: the file ``problem`` was loaded from, copied byte for byte (so its
        hash is the source's); ``None`` saves ``problem`` itself.
        """
        if not self.config_file.exists() and self.path.is_dir():
            foreign = sorted(p.name for p in self.path.iterdir() if p.name not in OWN and not p.name.endswith(".tmp"))
            check(not foreign, f"{self.path} is a non-empty directory that is not a run (it holds "
                               f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}); "
                               f"choose a new or empty directory")
        self.lock()
        check(not self.started, f"{self.path} already holds a run; continue it with --resume {self.path}")
        for name in STALE:
            (self.path / name).unlink(missing_ok=True)
        if problem_file is not None:
            data = Path(problem_file).read_bytes()
            atomic_write(self.problem_file, lambda f: f.write(data))
        else:
            problem.save(self.problem_file)
        source = str(Path(problem_file).resolve()) if problem_file is not None else "python"
        record = dict(source=source, sha256=sha256(self.problem_file), spec=json.loads(problem.spec.to_json()))
        write_json(self.config_file, {"format": FORMAT, **config, "problem": record})
        return self.read_config()

    def read_config(self) -> dict:
        check(self.config_file.exists(), f"{self.path} is not a run directory (no config.json)")
        try:
            cfg = json.loads(self.config_file.read_text())
        except json.JSONDecodeError as e:
            raise UsageError(f"{self.config_file} is not valid JSON: {e}") from None
        check(isinstance(cfg, dict) and cfg.get("format") in FORMATS,
              f"{self.config_file} has format {cfg.get('format') if isinstance(cfg, dict) else cfg!r}, "
              f"expected {FORMAT}")
        problem = cfg.get("problem")
        check(isinstance(problem, dict) and isinstance(problem.get("sha256"), str),
              f"{self.config_file} has no problem record; it was edited or damaged")
        return with_later_fields(cfg)

    def read_problem(self, config: dict | None = None) -> Problem:
        """The run's problem, refused when its SHA-256 differs from the one in ``config.json``."""
        cfg = config or self.read_config()
        check(self.problem_file.is_file(), f"{self.path} has no problem.npz")
        check(sha256(self.problem_file) == cfg["problem"]["sha256"],
              f"{self.problem_file} was modified (its SHA-256 differs from the one in config.json)")
        return Problem.load(self.problem_file)

    @staticmethod
    def stages(config: dict) -> list[Stage]:
        return [Stage(**{**s, "layers": tuple(s["layers"])}) for s in config["stages"]]

    # -- training state -------------------------------------------------------------------------

    def save_state(self, tensors: dict[str, torch.Tensor], counters: dict) -> None:
        """The resume checkpoint, one atomic file: ``tensors``, and in the metadata ``counters``,
        the config the run was started with and a SHA-256 over all of it."""
        progress = json.dumps(counters, sort_keys=True, allow_nan=True)
        config = self.config_file.read_text() if self.config_file.exists() else ""  # a bare Trainer's directory
        digest = tensors_digest(tensors, progress + config)
        save_safetensors(self.state_file, tensors, {"format": FORMAT, "progress": progress, "config": config,
                                                    "digest": digest})
        self.progress_file.unlink(missing_ok=True)  # a run of format v1 continued: its counters are here now

    def read_progress(self) -> dict:
        return self.load_state()[0]

    def load_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """``(counters, tensors)`` of the last complete checkpoint, verified: its SHA-256, the
        config it was written under against ``config.json``, its metrics against ``metrics.jsonl``."""
        check(self.started, f"{self.path} has no checkpoint (state.safetensors): nothing to resume")
        if self.progress_file.exists() and not self.state_file.exists():
            raise UsageError(f"{self.path} has progress.json but no state.safetensors; it was damaged")
        tensors, meta = read_safetensors(self.state_file)
        if "progress" not in meta:  # format v1: the counters and the state's hash in progress.json
            counters = _read_json(self.progress_file, "progress")
            if sha256(self.state_file) != counters.pop("state_sha256", None):
                raise UsageError(f"the last checkpoint of {self.path} was interrupted (state.safetensors is newer "
                                 f"than progress.json); this run (format v1) cannot be resumed, start it afresh")
        else:
            text = meta["progress"] + meta.get("config", "")
            check(meta.get("digest") == tensors_digest(tensors, text),
                  f"{self.state_file} does not match its recorded checksum: it is corrupted or was modified")
            counters = json.loads(meta["progress"])
            if meta.get("config"):
                self._check_config(json.loads(meta["config"]))
        check(isinstance(counters.get("metrics_bytes"), int), f"{self.state_file}: damaged counters")
        size = self.metrics_file.stat().st_size if self.metrics_file.exists() else 0
        check(size >= counters["metrics_bytes"],
              f"{self.metrics_file} has {size} bytes but its checkpoint recorded {counters['metrics_bytes']}; "
              f"it was truncated or edited")
        return counters, tensors

    def _check_config(self, started_with: dict) -> None:
        now = self.read_config()

        def flat(d: dict, prefix: str = "") -> dict:
            out = {}
            for k, v in d.items():
                out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
            return out

        a, b = flat(started_with), flat(now)
        changed = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k != "device")
        check(not changed, f"{self.config_file} was changed after the run started ({', '.join(changed[:6])}); "
                           f"restore it, or train a new run with the new settings")

    def append_metrics(self, row: dict) -> int:
        """Append one validation row and sync it (before the checkpoint that counts it); returns
        the bytes written."""
        line = (json.dumps(row, sort_keys=True) + "\n").encode()
        fd = open_nofollow(self.metrics_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line)
            fault_point("metrics.jsonl: appended, not synced")
            os.fsync(fd)
        finally:
            os.close(fd)
        fault_point("metrics.jsonl: synced")
        return len(line)

    def truncate_metrics(self, size: int) -> None:
        """Drop lines written after the checkpoint that recorded ``size`` bytes."""
        if self.metrics_file.exists() and self.metrics_file.stat().st_size != size:
            fd = open_nofollow(self.metrics_file, os.O_WRONLY)
            try:
                os.ftruncate(fd, size)
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(self.path)

    # -- results --------------------------------------------------------------------------------

    def finish(self, trainer, **extra) -> dict:
        """Write the trained weights of a :class:`~unrolled.training.Trainer` and ``result.json``
        (last: it names the weights' hash); ``extra`` entries go into ``result.json``."""
        sha = save_weights(trainer.model, self.weights_file)
        result = {"weights_sha256": sha, "samples": trainer.c["samples"], "steps": trainer.c["total_steps"],
                  "seconds": trainer.seconds, "nan_events": trainer.c["nan_events"], "device": str(trainer.device),
                  **({"config_sha256": sha256(self.config_file)} if self.config_file.exists() else {}),
                  **{k: trainer.c[k] for k in ("retried", "failed") if trainer.c.get(k)}, **extra}
        write_json(self.result_file, result)
        return result

    def read_result(self) -> dict:
        """``result.json``, checked field by field and against ``config.json``'s hash."""
        if not self.finished:
            pid = self.writer()
            check(pid is None, f"{self.path} is being trained by another process (PID {pid}); "
                               f"evaluate it once that has finished")
            raise UsageError(f"{self.path} has not finished training (no result.json); continue it with --resume")
        result = _read_json(self.result_file, "result")
        _check_fields(result, RESULT, self.result_file)
        check(result.get("config_sha256", sha256(self.config_file)) == sha256(self.config_file),
              f"{self.config_file} was modified after training (its SHA-256 differs from the one in result.json)")
        return result

    def load_weights(self, model: UnrolledNet, result: dict | None = None) -> None:
        load_weights(model, self.weights_file, (result or self.read_result())["weights_sha256"])

    def eval_csv(self, split: str = "test", overrides: dict | None = None) -> Path:
        return self.path / eval_csv_name(split, overrides or {})
