"""Image experiments as data: ``configs/images/NAME.toml`` with budgets, run resumably.

Two tasks: ``task = "cs"`` (:mod:`.run_cs`, design-space Table 3) and ``task = "denoise"``
(:mod:`.run_denoise`, the ALISTA repository's convolutional denoising). A file holds
``title``, ``reproduces``, ``notes``, ``task``, ``seed``, the tables ``[data]``, ``[dictionary]``,
``[train]``, ``[test]``, ``[[models]]`` (``model``, ``config``), ``[paper]`` (published numbers with
their ``source``) and ``[budgets.NAME]``, whose keys override those of the tables (``train.samples``,
``dictionary.count``, ...). Unknown keys fail with the valid ones. The files live in
``configs/images/`` rather than ``configs/`` because ``unrolled repro`` reads every ``configs/*.toml``
with its own synthetic-problem schema.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

from ..errors import check
from ..models import MODELS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "images"
TASKS = ("cs", "denoise")
TOP = ("title", "reproduces", "notes", "task", "seed", "data", "dictionary", "train", "test", "models", "paper",
       "budgets")
TABLES = {
    "data": {"training": "packaged", "patch": 16, "train_patches": 100_000, "val": 2000, "crop": 48, "sigma": 20.0,
             "val_crops": 32},
    "dictionary": {"file": "", "key": "", "layout": "auto", "atoms": 512, "count": 30_000, "epochs": 2,
                   "alpha": 0.05, "filters": 100, "size": 3, "lam": 0.05, "iterations": 100, "crop": 64,
                   "crops": 16},
    "train": {"samples": 50_000, "lr": 5e-4, "batch": 64, "eval_every": 50, "ratios": [0.1, 0.25, 0.5],
              "samples_per_ratio": {}},
    "test": {"folder": "", "strides": [16, 8], "fista_iters": [16, 200], "fista_iters_per_ratio": {},
             "figure": ["Parrots", "barbara"], "conv_fista_iters": 100, "images": []},
}


def names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def _merge(base: dict, name: str, given: dict) -> dict:
    unknown = sorted(set(given) - set(base))
    check(not unknown, f"unknown key(s) {', '.join(unknown)} in [{name}]; valid: {', '.join(base)}")
    return {**base, **given}


def load(name_or_path: str | Path, budget: str = "quick") -> dict[str, Any]:
    """The experiment with ``budget``'s overrides applied, every key checked."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = CONFIG_DIR / f"{name_or_path}.toml"
    check(path.is_file(), f"no image experiment {name_or_path!r}; available: {', '.join(names()) or 'none'}")
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    unknown = sorted(set(raw) - set(TOP))
    check(not unknown, f"{path.name}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(TOP)}")
    check(raw.get("task") in TASKS, f"{path.name}: task must be one of {', '.join(TASKS)}")
    exp = {k: raw.get(k, "") for k in ("title", "reproduces", "notes", "task")}
    exp.update(name=path.stem, seed=int(raw.get("seed", 0)), budget=budget, paper=raw.get("paper", {}))
    for table, defaults in TABLES.items():
        exp[table] = _merge(copy.deepcopy(defaults), table, raw.get(table, {}))
    budgets = raw.get("budgets", {})
    check(budget in budgets, f"{path.name} has no budget {budget!r}; available: {', '.join(budgets) or 'none'}")
    for key, value in budgets[budget].items():
        table, _, field = key.partition(".")
        check(table in TABLES and field in TABLES[table],
              f"{path.name}: budget key {key!r} must be TABLE.FIELD with TABLE one of {', '.join(TABLES)}")
        exp[table][field] = value
    exp["models"] = []
    for m in raw.get("models", []):
        bad = sorted(set(m) - {"model", "config", "label"})
        check(not bad, f"{path.name}: unknown [[models]] key(s) {', '.join(bad)}; valid: model, config, label")
        check(m.get("model") in MODELS, f"{path.name}: unknown model {m.get('model')!r}")
        exp["models"].append({"model": m["model"], "config": m.get("config", {}), "label": m.get("label", m["model"])})
    check(exp["models"], f"{path.name} lists no model")
    return exp


def run(exp: dict, out: str | Path, log=print, docs: Path | None = None) -> Path:
    """Run (or continue) an experiment into ``out``; write the report (and figures) under ``docs``."""
    if exp["task"] == "cs":
        from .run_cs import run_cs as runner
    else:
        from .run_denoise import run_denoise as runner
    return runner(exp, Path(out), log, docs)
