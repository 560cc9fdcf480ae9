"""The one runner: every cell of an experiment's grid, resumable, into one long-format table.

A *cell* is a problem of the grid times one method entry (the classical baselines with the
oracle floor, one learned model, or a problem-only analysis). A finished cell keeps its
rows in ``OUT/cells/*.json`` and is never recomputed. Trainings live in a content-addressed
store beside the experiment (``OUT/../_train/<model>-<hash>``): an ordinary trainer run
directory (``unrolled eval RUN`` reads it), shared by every experiment of the same budget
that needs the same training, and resumed from its last checkpoint when interrupted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import api
from .. import evaluation as E
from ..errors import UsageError, check
from ..io import open_nofollow, write_json
from ..models import MODELS, build, make_config
from ..problem import Problem, _stream
from ..recipes import config_record, reproduction_config
from ..training import RunDir, make_schedule
from ..training.trainer import Diverged
from . import analyses
from .config import PROBLEM_KEYS, TEST_ONLY, Budget, Cell, Experiment, ModelEntry, train_options


class NotFinished(Exception):
    """A training that ``--finished-only`` may not start or continue."""


class PooledProblem(Problem):
    """A problem whose training batches come from a fixed pool of ``size`` samples (with replacement).

    The pool is drawn once from a stream of its own (validation and test sets are untouched);
    it models the papers' finite training sets (design-space Table 1 rows [j], [k]).
    """

    def __init__(self, problem: Problem, size: int) -> None:
        super().__init__(problem.spec, problem.A.numpy(), None if problem.scale is None else problem.scale.numpy())
        g = _stream(problem.spec.seed, 6)
        self.px, self.py = problem.sample(size, g, torch.float32)

    def sample(self, batch: int, generator: torch.Generator, dtype: torch.dtype = torch.float32, snr=None):
        idx = torch.randint(0, len(self.px), (batch,), generator=generator)
        return self.px[idx].to(dtype), self.py[idx].to(dtype)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=_+-]+", "_", text)[:80]


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, allow_nan=True, default=str).encode()).hexdigest()[:16]


def model_overrides(exp: Experiment, entry: ModelEntry, cell: Cell, K: int) -> tuple[dict, dict, list[int]]:
    """Config overrides of ``entry`` in ``cell``, extra row columns, and the pruned layers."""
    cfg = {**entry.config, **cell.model, "K": K}
    extra: dict = {}
    if "arch" in cell.tags:
        neurons = exp.architectures.get("neurons", ["soft"])
        cfg["gates"], cfg["neurons"], extra["extra_connections"] = analyses.random_architecture(
            K, exp.seed, int(cell.tags["arch"]), neurons)
    prune = []
    if "pruned" in cell.tags:
        prune = analyses.pruned_layers(K, exp.seed, int(cell.tags["pruned"]), int(cell.tags.get("draw", 0)))
        extra["side_connections"] = K - len(prune)
    return cfg, extra, prune


class Runner:
    """Runs ``exp`` at ``budget`` into ``out``; ``log`` receives one line per cell."""

    def __init__(self, exp: Experiment, budget: Budget, out: Path, device: torch.device,
                 log: Callable[[str], None] = print, finished_only: bool = False) -> None:
        self.exp, self.budget, self.out, self.device, self.log = exp, budget, Path(out), device, log
        self.finished_only = finished_only  # evaluate finished trainings only; train nothing
        self.store = self.out.parent / "_train"
        self.counts = dict(computed=0, reused=0, missing=0, trained=0, resumed=0, failed=0)

    # -- cells ---------------------------------------------------------------------------------

    def run(self) -> list[dict]:
        exp, budget = self.exp, self.budget
        cells = exp.cells(budget)
        models = exp.active_models(budget)
        self.validate(cells, models)
        per_model = exp.analysis and analyses.ANALYSES[exp.analysis["name"]].per_model
        first = list({c.problem_key: c for c in reversed(cells)}.values())  # one cell per distinct problem
        jobs = [(c, "classical") for c in first if exp.baselines or exp.oracle]
        jobs += [(c, "analysis") for c in first if exp.analysis and not per_model]
        jobs += [(c, m) for c in cells for m in models]
        jobs.sort(key=lambda j: cells.index(j[0]))
        rows: list[dict] = []
        problems: dict[str, Problem] = {}
        for i, (cell, what) in enumerate(jobs, start=1):
            label = what if isinstance(what, str) else what.label
            key = cell.key if isinstance(what, ModelEntry) else cell.problem_key
            path = self.out / "cells" / f"{slug(key)}__{slug(label)}-{self.fingerprint(cell, what)}.json"
            head = f"[{i}/{len(jobs)}] {key} {label}:"
            if path.exists():
                rows += json.loads(path.read_text())
                self.counts["reused"] += 1
                self.log(f"{head} reused (finished earlier)")
                continue
            spec = cell.spec.to_json()
            if spec not in problems:
                problems.clear()  # one problem (and its test set) in memory at a time
                problems[spec] = Problem(cell.spec)
            start = time.perf_counter()
            try:
                new = self.compute(cell, what, problems[spec])
            except NotFinished:
                self.counts["missing"] += 1
                self.log(f"{head} training not finished (left out of the tables)")
                continue
            seconds = time.perf_counter() - start
            meta = {**self.meta(cell, key != cell.key), "cell": f"{key}|{label}", "cell_seconds": round(seconds, 2)}
            new = [{**meta, **r} for r in new]
            write_json(path, new)
            rows += new
            self.counts["computed"] += 1
            final = [r for r in new if r.get("final")]
            summary = f"final {final[-1]['nmse_db']:.2f} dB" if final else f"{len(new)} rows"
            self.log(f"{head} {new[0].get('status', 'ok') if new else 'ok'}, {summary} ({seconds:.1f} s)")
        c = self.counts
        self.log(f"{len(jobs)} cells: {c['computed']} computed, {c['reused']} reused, {c['missing']} not finished; "
                 f"{c['trained']} trainings run, {c['resumed']} resumed, {c['failed']} failed")
        return rows

    def fingerprint(self, cell: Cell, what) -> str:
        """What a cell's rows depend on: editing the experiment or the budget invalidates the cell."""
        exp, b = self.exp, self.budget
        ident = dict(spec=cell.spec.record(), K=b.K, what=what if isinstance(what, str) else
                     dataclasses.asdict(what), analysis=exp.analysis, budget_analysis=b.analysis)
        if what == "classical":
            ident.update(baselines=exp.baselines, oracle=exp.oracle)
        elif isinstance(what, ModelEntry):
            ident.update(train_size=cell.train_size, model=cell.model, tags=cell.tags, seed=exp.seed,
                         schedule={**exp.schedule, **b.schedule}, arch=exp.architectures)
            if what.label in b.model_schedule:  # only then: other cells keep their fingerprints
                ident.update(model_schedule=b.model_schedule[what.label])
        return digest(ident)[:8]

    def meta(self, cell: Cell, problem_only: bool = False) -> dict:
        s = cell.spec
        params = {k: v for k, v in cell.params.items() if k in PROBLEM_KEYS or not problem_only}
        nominal = {k: v for k, v in cell.nominal.items() if k in ("m", "n", "p", "s", "snr") or k in params}
        return {"experiment": self.exp.name, "budget": self.budget.name, **nominal, **params, "size": f"{s.m}x{s.n}",
                "p_run": round(s.p, 6), "K": self.budget.K, "scale": self.budget.scale, "test_size": s.test_size,
                "seed": s.seed, "train_seed": self.exp.seed, "device": str(self.device), "torch": torch.__version__,
                "problem": s.to_json()}

    def compute(self, cell: Cell, what, problem: Problem) -> list[dict]:
        x, y = problem.test(dtype=torch.float64)
        if what == "classical":
            return self.classical(problem, x, y)
        if what == "analysis":
            return [dict(method=self.exp.analysis["name"], **r) for r in self.analyse(problem, x, y, None)]
        entry: ModelEntry = what
        if entry.pending:
            return [dict(method=entry.label, model=entry.model, status="pending", reason=entry.pending)]
        try:
            model, info = self.train(cell, entry, problem)
        except Diverged as e:  # a diverged training is a result too: it is reported, not hidden. Any
            # other error (a locked or damaged run) stops the experiment rather than be cached as a result
            self.counts["failed"] += 1
            return [dict(method=entry.label, model=entry.model, status="failed", reason=str(e))]
        rows = E.evaluate_model(model, x, y, entry.label)
        rows[-1]["final"] = 1
        names = self.exp.analysis.get("models", []) if self.exp.analysis else []
        if entry.label in names:
            rows += [dict(method=entry.label, **r) for r in self.analyse(problem, x, y, model)]
        return [{"model": entry.model, "status": "ok", **info, **r} for r in rows]

    def classical(self, problem: Problem, x, y) -> list[dict]:
        K, s = self.budget.K, problem.spec
        rows = E.baseline_rows(problem, x, y, K, self.exp.baselines)
        for r in rows:
            r["final"] = int(r["layer"] == K)
        if self.exp.oracle and s.signal != "gamma":  # no support oracle for signals without zeros
            snr = s.snr if s.test_snr is None else s.test_snr
            rows += E.oracle_rows(problem.test_matrix(), x, y, snr)
        return rows

    def analyse(self, problem: Problem, x, y, model) -> list[dict]:
        a = self.exp.analysis
        spec = analyses.ANALYSES[a["name"]]
        params = {**spec.defaults, **{k: v for k, v in a.items() if k not in ("name", "models")},
                  **self.budget.analysis}
        ctx = analyses.Context(problem=problem, x=x, y=y, model=model, params=params, scale=self.budget.scale,
                               seed=self.exp.seed, store=self.store)
        return spec.run(ctx)

    # -- training ------------------------------------------------------------------------------

    def plan(self, cell: Cell, entry: ModelEntry):
        """Everything about one training short of training: its config, schedule and options,
        each checked (so a bad value fails before the first training, not after many)."""
        exp, K = self.exp, self.budget.K
        check(1 <= K <= api.MAX_LAYERS, f"K={K} layers must be in 1..{api.MAX_LAYERS}")
        overrides, extra, prune = model_overrides(exp, entry, cell, K)
        config = make_config(MODELS[entry.model].Config, reproduction_config(entry.model, overrides))
        sched = {**exp.schedule, **self.budget.schedule, **entry.schedule,
                 **self.budget.model_schedule.get(entry.label, {})}
        kw, options = train_options(sched, exp.seed, cell.spec.val_size)
        check(kw.get("samples", options.batch) >= options.batch,
              f"samples={kw.get('samples')} is less than one batch ({options.batch})")
        stages = make_schedule(sched["name"], K, **kw)
        return overrides, extra, prune, config, sched, kw, options, stages

    def validate(self, cells: list[Cell], models: list[ModelEntry]) -> None:
        """Refuse an experiment that would fail part-way: no cells, or a training that cannot start."""
        check(cells, f"{self.exp.path.name}: the grid at budget {self.budget.name} has no cell; "
                     f"check the grid and the budget's filter")
        for cell in cells:
            for entry in models:
                if not entry.pending:
                    try:
                        self.plan(cell, entry)
                    except UsageError as e:
                        raise UsageError(f"{self.exp.path.name}, model {entry.label}: {e}") from None

    def train(self, cell: Cell, entry: ModelEntry, problem: Problem) -> tuple[torch.nn.Module, dict]:
        exp = self.exp
        overrides, extra, prune, config, sched, kw, options, stages = self.plan(cell, entry)
        spec = {k: v for k, v in cell.spec.record().items() if k not in TEST_ONLY}
        ident = dict(spec=spec, train_size=cell.train_size, model=entry.model, config=config_record(config),
                     stages=[s.to_dict() for s in stages], options=dataclasses.asdict(options), prune=prune)
        rd = RunDir(self.store / f"{entry.model}-{digest(ident)}")
        if self.finished_only and not rd.finished:
            raise NotFinished(rd.path)
        model = build(entry.model, problem, config)
        if prune:
            analyses.prune_side_connections(model, prune)
        info = dict(extra, train_run=str(rd), config=json.dumps(overrides, sort_keys=True), schedule=sched["name"])
        logfile, train_problem = rd.path / "train.log", problem
        if not rd.finished:
            train_problem = PooledProblem(problem, cell.train_size) if cell.train_size else problem
            rd.path.mkdir(parents=True, exist_ok=True)
            if rd.started:
                progress = rd.read_progress()
                self.counts["resumed"] += 1
                self.log(f"  resuming {rd.path.name} at stage {progress['stage'] + 1}/{len(stages)}, "
                         f"{progress['samples']:,} samples")
            self.counts["trained"] += 1

        def log(line: str) -> None:
            fd = open_nofollow(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)

        run = api.train(train_problem, model, schedule={"name": sched["name"], **kw}, out=rd, device=self.device,
                        resume=True, log=log, meta=dict(repro=dict(experiment=exp.name, train_size=cell.train_size,
                                                                   prune=prune)), **dataclasses.asdict(options))
        r = run.result
        if "diverged" in r:  # finished earlier on its best weights after diverging: the same result as then
            raise Diverged(f"training diverged earlier ({r['diverged']}); best weights in {rd.weights_file}")
        info.update(samples=r["samples"], steps=r.get("steps"), seconds=round(r["seconds"], 1),
                    train_device=r["device"])
        return run.model, info
