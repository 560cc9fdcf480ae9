"""One training run on disk: the files of a run directory, their formats and their hashes.

Every file is written atomically (:mod:`unrolled.io`) and nothing is ever unpickled:

========================  ===================================================================
``config.json``           format tag, model name and config, schedule name and stages, training
                          options, the problem's source, SHA-256 and spec, device, torch version,
                          optional ``init_from`` (a warm start) and caller metadata (``repro``)
``problem.npz``           the problem, byte for byte as given (its SHA-256 is in ``config.json``)
``state.safetensors``     resume state: current and best parameters, Adam moments, the batch
                          generator; its counters and SHA-256 live in ``progress.json``
``metrics.jsonl``         one line per validation (no wall-clock times, so a resumed run's metrics
                          are byte-identical to an uninterrupted run's)
``weights.safetensors``   the trained model (best validated weights)
``result.json``           the weights' SHA-256, samples, steps, seconds, NaN rollbacks, device
``eval*.csv``             tables written by ``unrolled eval``
========================  ===================================================================

A run has *started* once ``progress.json`` exists and *finished* once ``result.json`` does.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError, check
from ..io import load_safetensors, save_safetensors, sha256, write_json
from ..models import UnrolledNet
from ..problem import Problem
from .schedule import Stage

FORMAT = "unrolled-run-v1"
WEIGHTS_FORMAT = "unrolled-weights-v1"
STALE = ("metrics.jsonl", "weights.safetensors", "result.json", "eval.csv")  # removed when a run starts afresh


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
        return self.progress_file.exists()

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
        self.path.mkdir(parents=True, exist_ok=True)
        for name in STALE:
            (self.path / name).unlink(missing_ok=True)
        if problem_file is not None:
            tmp = self.path / ".problem.npz.tmp"
            shutil.copyfile(problem_file, tmp)
            tmp.replace(self.problem_file)
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
        check(cfg.get("format") == FORMAT, f"{self.config_file} has format {cfg.get('format')!r}, expected {FORMAT}")
        return cfg

    def read_problem(self, config: dict | None = None) -> Problem:
        """The run's problem, refused when its SHA-256 differs from the one in ``config.json``."""
        cfg = config or self.read_config()
        check(self.problem_file.exists(), f"{self.path} has no problem.npz")
        check(sha256(self.problem_file) == cfg["problem"]["sha256"],
              f"{self.problem_file} was modified (its SHA-256 differs from the one in config.json)")
        return Problem.load(self.problem_file)

    @staticmethod
    def stages(config: dict) -> list[Stage]:
        return [Stage(**{**s, "layers": tuple(s["layers"])}) for s in config["stages"]]

    # -- training state -------------------------------------------------------------------------

    def save_state(self, tensors: dict[str, torch.Tensor], counters: dict) -> None:
        """The resume checkpoint: tensors first, then the counters that name their hash."""
        sha = save_safetensors(self.state_file, tensors, {"format": FORMAT})
        write_json(self.progress_file, {**counters, "state_sha256": sha})

    def read_progress(self) -> dict:
        check(self.started, f"{self.path} has no progress.json: nothing to resume")
        return json.loads(self.progress_file.read_text())

    def load_state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        """``(counters, tensors)`` of the last checkpoint, the tensors verified by hash."""
        counters = self.read_progress()
        tensors = load_safetensors(self.state_file, counters.pop("state_sha256"))
        return counters, tensors

    def append_metrics(self, row: dict) -> int:
        """Append one validation row; returns the bytes written."""
        line = (json.dumps(row, sort_keys=True) + "\n").encode()
        with open(self.metrics_file, "ab") as f:
            f.write(line)
        return len(line)

    def truncate_metrics(self, size: int) -> None:
        """Drop lines written after the checkpoint that recorded ``size`` bytes."""
        if self.metrics_file.exists():
            with open(self.metrics_file, "r+b") as f:
                f.truncate(size)

    # -- results --------------------------------------------------------------------------------

    def finish(self, trainer) -> dict:
        """Write the trained weights of a :class:`~unrolled.training.Trainer` and ``result.json``."""
        sha = save_weights(trainer.model, self.weights_file)
        result = {"weights_sha256": sha, "samples": trainer.c["samples"], "steps": trainer.c["total_steps"],
                  "seconds": trainer.seconds, "nan_events": trainer.c["nan_events"], "device": str(trainer.device)}
        write_json(self.result_file, result)
        return result

    def read_result(self) -> dict:
        check(self.finished, f"{self.path} has not finished training (no result.json); continue it with --resume")
        return json.loads(self.result_file.read_text())

    def load_weights(self, model: UnrolledNet, result: dict | None = None) -> None:
        load_weights(model, self.weights_file, (result or self.read_result())["weights_sha256"])

    def eval_csv(self, split: str = "test", overrides: dict | None = None) -> Path:
        return self.path / eval_csv_name(split, overrides or {})
