"""``unrolled repro``: the reproduction harness (list | summary | NAME)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..errors import check
from ..repro import BUDGETS, CONFIG_DIR, list_experiments, run_experiment, summary


def cmd_repro(a: argparse.Namespace) -> None:
    configs = Path(a.configs) if a.configs else None
    if a.target == "list":
        print(list_experiments(configs))
        return
    if a.target == "summary":
        path = summary(Path(a.runs), Path(a.docs), Path(a.reports), configs=configs)
        print(f"wrote {path} and the reports in {a.reports}")
        return
    check(a.device in ("cpu", "cuda") or a.device.startswith("cuda:"), f"unknown device {a.device!r}; valid: cpu, cuda")
    check(not a.device.startswith("cuda") or torch.cuda.is_available(),
          "--device cuda requested but PyTorch sees no CUDA device; use --device cpu")
    if a.target == "design-search":  # the architecture search, then the tables' searched column (unrolled/search)
        from .search import _need_optuna
        _need_optuna()
        from ..search.repro import run

        run(a.budget, Path(a.out) if a.out else Path("runs/repro"), device=a.device, finished_only=a.finished_only)
    else:
        run_experiment(a.target, a.budget, a.out, a.device, configs, finished_only=a.finished_only)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("repro", help="reproduce a table or figure of the seed papers (list | summary | NAME)")
    p.add_argument("target", help="an experiment NAME (see `unrolled repro list`), a .toml file, 'list' or 'summary'")
    p.add_argument("--budget", choices=BUDGETS, default="quick", help="smoke | quick | paper (default %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--out", default=None, help="output directory (default runs/repro/BUDGET/NAME)")
    p.add_argument("--finished-only", action="store_true",
                   help="evaluate the trainings finished so far (any experiment's); train nothing")
    p.add_argument("--configs", default=None, help=f"experiments directory (default {CONFIG_DIR})")
    p.add_argument("--runs", default="runs/repro", help="summary: where the result tables are")
    p.add_argument("--docs", default="docs/reproduction.md", help="summary: the page to write")
    p.add_argument("--reports", default="docs/repro", help="summary: where the per-experiment reports go")
    p.set_defaults(func=cmd_repro)
