"""A search study: its settings (stored in the study), one trial (train a candidate from scratch),
the worker loop, and N local worker processes.

The settings live in the study's user attributes (``unrolled``), so a worker joining from
another machine with the same ``--storage`` needs only the study's name: the problem (its spec,
regenerated and checked against the SHA-256 of A), the space, the searcher, the per-candidate
budget and recipe. A trial asks the sampler for every decision, trains that ``lwa`` network
with the project's trainer in memory, and returns the **negative validation NMSE in dB** (the
study maximises it; the test set is never touched). With a pruner, every validation is reported
to Optuna and a losing candidate stops early (``optuna.TrialPruned``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import multiprocessing as mp
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from .. import api
from ..errors import UsageError, check, choice
from ..models.design_space import extra_connections
from ..problem import Problem, ProblemSpec
from ..training.trainer import Diverged
from .samplers import SAMPLERS, make_sampler
from .space import Space
from .storage import GRACE_S, HEARTBEAT_S, Lease, is_journal, open_storage, requeue_stale

PRUNERS = ("none", "halving", "hyperband")
ATTR = "unrolled"


@dataclass
class Settings:
    """Everything a worker needs to run trials of a study (stored in the study)."""

    problem: dict = field(default_factory=dict)  # ProblemSpec record
    problem_sha256: str = ""  # of A, checked by every worker
    space: dict = field(default_factory=lambda: Space().record())
    sampler: str = "random"
    trials: int = 50  # completed candidates the study stops at
    samples: int = 100_000  # training samples per candidate
    schedule: str = "end-to-end"
    lr: float = 1e-3
    batch: int = 128
    eval_every: int = 25
    seed: int = 0
    pruner: str = "none"
    population: int = 20
    tournament: int = 5

    def __post_init__(self) -> None:
        choice(self.sampler, SAMPLERS, "sampler")
        choice(self.pruner, PRUNERS, "pruner")
        check(self.trials >= 1 and self.samples >= self.batch >= 1,
              f"trials={self.trials} must be >= 1 and samples={self.samples} at least one batch ({self.batch})")
        check(self.population >= 2 and 1 <= self.tournament <= self.population,
              f"population={self.population} must be >= 2 and tournament={self.tournament} in 1..population")

    @property
    def Space(self) -> Space:  # noqa: N802 (the space object of the record)
        return Space.from_record(self.space)

    def make_problem(self) -> Problem:
        problem = Problem(ProblemSpec.from_dict(self.problem))
        check(a_sha256(problem) == self.problem_sha256,
              "this machine's problem differs from the study's (A's SHA-256); same torch and numpy versions?")
        return problem


def a_sha256(problem: Problem) -> str:
    return hashlib.sha256(np.ascontiguousarray(problem.A.numpy()).tobytes()).hexdigest()


def settings_for(problem: Problem, **kw) -> Settings:
    check(problem.spec.a_file is None, "a search regenerates its problem from the spec on every worker; "
                                       "a problem read from a matrix file (--a-file) is not supported yet")
    return Settings(problem=problem.spec.record(), problem_sha256=a_sha256(problem), **kw)


def stored_settings(study: optuna.Study) -> Settings:
    rec = study.user_attrs.get(ATTR)
    check(rec is not None, f"study {study.study_name} was not made by `unrolled search`")
    return Settings(**rec)


def load_study(name: str, storage) -> optuna.Study:
    """Study ``name`` of ``storage``; a missing one fails in one line naming those there are."""
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False))
        raise UsageError(f"no study {name!r} in this storage; there are: {', '.join(names) or 'none'}") from None


def create_or_join(name: str, storage, settings: Settings | None, given: dict | None = None) -> optuna.Study:
    """Open study ``name``; create it with ``settings`` when new. Joining, the ``given`` settings
    (those set on the command line) must equal the stored ones."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        check(settings is not None, f"no study {name!r} in this storage; create it with --problem FILE")
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize", load_if_exists=True)
        if ATTR not in study.user_attrs:  # two workers creating at once: the first record stays
            study.set_user_attr(ATTR, dataclasses.asdict(settings))
        return study
    stored = dataclasses.asdict(stored_settings(study))
    differ = [k for k, v in (given or {}).items() if v is not None and stored.get(k) != v]
    check(not differ, f"study {name} exists with other settings ({', '.join(differ)}: "
                      f"{', '.join(f'{stored[k]!r}' for k in differ)}); drop them to join it, or name a new study")
    return study


def make_pruner(name: str, settings: Settings) -> optuna.pruners.BasePruner:
    steps = max(1, settings.samples // settings.batch)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=max(1, steps // 8), reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, steps // 8), max_resource=steps, reduction_factor=3)
    return optuna.pruners.NopPruner()


def train_candidate(problem: Problem, arch: dict, s: Settings, report=None, log=None,
                    samples: int | None = None) -> tuple[float, api.Run]:
    """Train one architecture from scratch; ``(validation NMSE dB at depth K, run)``.

    ``report(step, val_db)`` is called at every validation (it may raise ``optuna.TrialPruned``)."""
    training = api.prepare(problem, "lwa", dict(arch), {"name": s.schedule, "lr": s.lr}, samples or s.samples,
                           None, "cpu", log=log or (lambda _m: None), batch=s.batch, eval_every=s.eval_every,
                           seed=s.seed, val_size=problem.spec.val_size)
    t = training.trainer
    validate = t.validate
    if report is not None:
        def reported(stage):  # the trainer's own validation, also reported to the pruner
            v = validate(stage)
            report(t.c["total_steps"], v)
            return v
        t.validate = reported
    try:
        run = training.run()
    except Diverged:  # the best weights are kept in the model: a (poor) candidate, not an error
        run = api.Run(training.model.eval(), problem, training.config, {"diverged": True})
    with torch.no_grad():
        return validate(t.stages[-1]), run


def objective(study_settings: Settings, problem: Problem, journal: bool, heartbeat: float = HEARTBEAT_S):
    space = study_settings.Space

    def run(trial: optuna.Trial) -> float:
        arch = space.suggest(trial)
        trial.set_user_attr("extra_connections", extra_connections(arch["gates"]))

        reported: set[int] = set()

        def report(step: int, val: float) -> None:
            if math.isfinite(val) and step not in reported:
                reported.add(step)
                trial.report(-val, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}: validation {val:.2f} dB")

        start = time.perf_counter()
        try:
            if journal:
                with Lease(trial, heartbeat):
                    val, result = train_candidate(problem, arch, study_settings, report)
            else:
                val, result = train_candidate(problem, arch, study_settings, report)
        finally:  # a pruned candidate's training time counts in the search cost too
            trial.set_user_attr("seconds", round(time.perf_counter() - start, 2))
        trial.set_user_attr("samples", result.result.get("samples", study_settings.samples))
        if not math.isfinite(val):
            raise UsageError(f"candidate {trial.number} reached a non-finite validation NMSE")
        return -val

    return run


def counts(study: optuna.Study) -> dict[str, int]:
    c = {s.name.lower(): 0 for s in TrialState}
    for t in study.get_trials(deepcopy=False):
        c[t.state.name.lower()] += 1
    return c


def work(name: str, storage_url: str, index: int = 0, threads: int = 1, log=print,
         heartbeat: int = HEARTBEAT_S, grace: int = GRACE_S) -> int:
    """One worker: run trials of study ``name`` until it has its number of completed candidates
    (pruned ones count: they were decided); the number of trials this worker finished. N workers
    that start their last trials at the same moment may finish up to N - 1 candidates beyond the
    target (as Optuna's ``MaxTrialsCallback``); none is trained twice.
    ``heartbeat``/``grace``: seconds between heartbeats and before a silent trial is stale."""
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url, heartbeat, grace)
    study = load_study(name, storage)
    s = stored_settings(study)
    problem = s.make_problem()
    seed = s.seed * 7919 + len(study.get_trials(deepcopy=False)) * 101 + index  # new draws after a restart
    study.sampler = make_sampler(s.sampler, s.Space, seed, s.population, s.tournament)
    study.pruner = make_pruner(s.pruner, s)
    fn, done, ours = objective(s, problem, is_journal(storage), heartbeat), 0, []
    while True:
        for number in requeue_stale(study, storage, grace):
            log(f"worker {index}: trial {number} lost its worker; re-queued")
        if not is_journal(storage):  # RDB: Optuna's heartbeat check (its callback re-queues)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        c = counts(study)
        if c["complete"] + c["pruned"] >= s.trials or (c["complete"] + c["pruned"] + c["running"] >= s.trials
                                                        and not c["waiting"]):
            return done
        study.optimize(fn, n_trials=1, catch=(UsageError,), callbacks=[lambda _s, t: ours.append(t)])
        done += 1
        last = ours[-1] if ours else None
        if last is not None and last.value is not None:
            log(f"worker {index}: trial {last.number} validation {-last.value:.2f} dB "
                f"({last.user_attrs.get('extra_connections')} extra, {last.user_attrs.get('seconds')} s)")


def _child(name: str, storage_url: str, index: int, threads: int) -> None:
    work(name, storage_url, index, threads)


def launch(name: str, storage_url: str, workers: int, threads: int = 1, start: str = "spawn") -> list[int]:
    """Run ``workers`` local worker processes (``start``: spawned, or forked) on one storage; their
    exit codes."""
    if workers == 1:
        work(name, storage_url, 0, threads)
        return [0]
    ctx = mp.get_context(start)
    procs = [ctx.Process(target=_child, args=(name, storage_url, i, threads)) for i in range(workers)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()
            p.join()
        raise
    return [p.exitcode for p in procs]
