"""``unrolled repro design-search --budget smoke|quick|paper``: search, average, then the "searched"
column of the design-space tables (configs/search/design-search.toml says how, per budget).

1. The search: one Optuna study per sampler in ``runs/repro/BUDGET/_search/search.journal`` on
   the noiseless problem of design-table1 row [b] at the budget's scale and depth (resumable:
   a rerun continues each study to its number of candidates).
2. The average architecture of the pooled top-k: ``_search/report/average.json`` with the
   search report (:mod:`.report`), the search cost included.
3. Each table experiment run by the harness with its pending ``searched`` model replaced by
   the ``lwa`` model with that architecture: trained with the table's own recipe and budget,
   like LISTA, LFISTA and Dense-LISTA beside it.
"""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import torch

from .. import repro
from ..errors import UsageError, check
from ..problem import Problem
from ..repro import report as repro_report
from ..repro.config import CONFIG_DIR, ModelEntry, load, tomllib
from .report import write_report
from .space import Space, describe, load_arch
from .storage import open_storage
from .study import create_or_join, launch, settings_for

SEARCH_CONFIG = CONFIG_DIR / "search" / "design-search.toml"


def read_config(path: Path | None = None) -> dict:
    path = path or SEARCH_CONFIG
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"cannot read {path}: {e}") from None


def search(budget: str, out: Path, workers: int = 1, log=print, finished_only: bool = False) -> tuple[dict, Path]:
    """Run (or resume) the search at ``budget``; the average architecture and the report's path.
    A budget may override the config's ``samplers`` and ``neurons``. ``finished_only``: report the
    candidates finished so far, run none."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = read_config()
    check(budget in cfg["budget"], f"{SEARCH_CONFIG.name} has no [budget.{budget}]")
    b = cfg["budget"][budget]
    check(not finished_only or (out / "search.journal").exists(),
          f"no search at budget {budget} in {out} yet: run `unrolled repro design-search --budget {budget}` "
          f"without --finished-only first")
    exp = load(cfg["experiment"])
    eb = exp.budget(budget)
    cells = [c for c in exp.cells(eb) if c.tags.get("row") == "b"] or exp.cells(eb)
    problem = Problem(cells[0].spec)
    storage_url = str(out / "search.journal")
    space = Space(eb.K, tuple(b.get("neurons", cfg.get("neurons", ["soft", "relu", "leaky"]))))
    names = []
    for sampler in b.get("samplers", cfg["samplers"]):
        name = f"{exp.name}-{budget}-{sampler}"
        settings = settings_for(problem, space=space.record(), sampler=sampler, trials=b["trials"],
                                samples=b["samples"], batch=b["batch"], eval_every=b["eval_every"], seed=exp.seed,
                                population=b["population"], tournament=b["tournament"])
        create_or_join(name, open_storage(storage_url), settings)
        log(f"search {name}: {b['trials']} candidates of {b['samples']:,} samples")
        if not finished_only:
            launch(name, storage_url, workers)
        names.append(name)
    path = write_report(names, storage_url, out / "report", top=b["top"], log=log)
    return load_arch(out / "report" / "average.json"), path


def run(budget: str = "quick", out_root: str | Path = "runs/repro", workers: int = 1, device: str = "cpu",
        log=print, finished_only: bool = False) -> list[Path]:
    """Search, then every table of the config with its ``searched`` column filled; the reports.
    ``finished_only``: the search and the trainings finished so far, nothing run or trained."""
    root = Path(out_root) / budget
    start = time.perf_counter()
    arch, search_report = search(budget, root / "_search", workers, log, finished_only)
    log(f"search done ({time.perf_counter() - start:.0f} s): {search_report}")
    reports = [search_report]
    for name in read_config()["tables"]:
        exp = load(name)
        entries = [m for m in exp.models if m.label == "searched"]
        check(entries, f"{name} has no model labelled 'searched'")
        fields = {k: v for k, v in arch.items() if k != "K"}
        exp.models = [ModelEntry("lwa", "searched", {**m.config, **fields}, m.schedule) if m.label == "searched"
                      else m for m in exp.models]
        cost = [line for line in search_report.read_text().splitlines() if line.startswith("Search cost")]
        exp.notes += (f"\nThe searched column: the average architecture of `unrolled repro design-search --budget "
                      f"{budget}` ({search_report}; {describe(arch)}), re-trained here with the table's recipe and "
                      f"budget. {' '.join(cost)}")
        b = exp.budget(budget)
        out = root / name
        rows = repro.Runner(exp, b, out, torch.device(device), log, finished_only=finished_only).run()
        params = list(dict.fromkeys(k for c in exp.cells(b) for k in c.params))
        table = out / "results.csv"
        repro_report.write_table(rows, table, params)
        reports.append(repro_report.write_report(exp, table, budget, out))
        log(f"wrote {reports[-1]}")
    return reports
