"""The Python API: train a model into a run, load a finished run, predict, evaluate.

::

    import unrolled as ur
    problem = ur.Problem(ur.ProblemSpec(m=250, n=500, p=0.1, snr=40, seed=0))
    run = ur.train(problem, "alista", {"K": 16}, budget=300_000, out="runs/a")
    x_hat = run.predict(y)          # numpy in, numpy out; torch in, torch out
    rows = ur.evaluate(run)         # per layer: the model, ISTA/FISTA/AMP at its depth, the oracle floor
    run = ur.load("runs/a")         # weights and problem verified by their SHA-256

A run directory (:class:`~unrolled.training.RunDir`) is what the command line writes and
reads too: ``unrolled eval runs/a`` and ``unrolled train --resume runs/a`` work on it.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import evaluation as E
from .errors import UsageError, check, choice
from .models import MODELS, Config, UnrolledNet, build, make_config
from .problem import Problem
from .solvers import SOLVERS
from .training import SCHEDULES, RunDir, Stage, Trainer, TrainOptions, load_weights, make_schedule
from .training.data import DataSpec, TrainingData, to_user_units

BASELINES = ("ista", "fista", "amp")
RESERVED = ("format", "model", "model_config", "schedule", "stages", "options", "problem", "device", "torch",
            "init_from", "data")
# what a resumed run must match
SETTINGS = ("model", "model_config", "schedule", "stages", "options", "init_from", "data")
MAX_LAYERS = 1000  # a documented cap on K, checked before any model is built
TEST_ONLY = ("test_noise", "test_snr", "sp_density", "test_perturb", "test_size")  # ProblemSpec fields
OPTIONS = [f.name for f in dataclasses.fields(TrainOptions)]


@dataclass
class Run:
    """A trained model with its problem, its ``config.json`` and ``result.json`` contents.

    ``dir`` is the run directory (``None`` for a run trained in memory); ``overrides`` are the
    model-config fields changed at load time (:func:`load`).
    """

    model: UnrolledNet
    problem: Problem
    config: dict
    result: dict
    dir: RunDir | None = None
    overrides: dict = field(default_factory=dict)

    def predict(self, y: np.ndarray | Tensor, chunk: int = 4096) -> np.ndarray | Tensor:
        """``x_hat`` for measurements ``y: (batch, m)`` or ``(m,)``, in chunks of ``chunk`` rows.

        ``y`` may also be ``(m, batch)`` (one column per measurement vector, as in MATLAB) when
        ``batch != m``; the result then is ``(n, batch)``. A square ``(m, m)`` array is read
        batch-first. Any floating dtype; the result has ``y``'s type, dtype and device: a numpy
        array for a numpy array, a tensor (detached) for a tensor. Estimates are in the user's
        units: where the problem normalised its columns they are mapped back (``x / scale``).
        """
        m = self.model.m
        is_numpy = isinstance(y, np.ndarray)
        check(is_numpy or isinstance(y, Tensor), f"y must be a numpy array or a torch tensor, got {type(y).__name__}")
        check(np.issubdtype(y.dtype, np.floating) if is_numpy else y.is_floating_point(),
              f"y has dtype {y.dtype}; expected floating point numbers (e.g. float32 or float64)")
        columns = y.ndim == 2 and y.shape[-1] != m and y.shape[0] == m
        check(y.ndim in (1, 2) and (y.shape[-1] == m or columns),
              f"y has shape {tuple(y.shape)}; expected (batch, {m}), ({m}, batch) or ({m},): "
              f"vectors of m={m} measurements each")
        if columns:
            return self.predict(y.T, chunk).T
        check(chunk >= 1, f"chunk={chunk} must be >= 1")
        t = torch.from_numpy(np.ascontiguousarray(y)) if is_numpy else y.detach()
        check(bool(torch.isfinite(t).all()), "y contains NaN or Inf")
        rows = t.reshape(-1, m)
        dev, dt = self.model.A.device, self.model.A.dtype
        with torch.no_grad():
            parts = [self.model(rows[lo:lo + chunk].to(dev, dt)) for lo in range(0, len(rows), chunk)]
            out = torch.cat(parts) if parts else self.model(rows.to(dev, dt))
        out = to_user_units(self.problem, out.double().cpu()).reshape(*t.shape[:-1], self.model.n).to(t.device, t.dtype)
        return out.numpy() if is_numpy else out


# -- training -----------------------------------------------------------------------------------


@dataclass
class Training:
    """A training set up by :func:`prepare` or :func:`reopen`, run by :meth:`run`.

    ``trainer`` is ``None`` when the run directory held the finished run already.
    """

    trainer: Trainer | None
    model: UnrolledNet
    problem: Problem
    config: dict
    dir: RunDir | None
    resumed: bool = False

    def run(self) -> Run:
        """Train through the remaining stages, write the weights and ``result.json``; the run.

        The run directory stays locked (:meth:`RunDir.lock`) until this returns or fails."""
        try:
            if self.trainer is None:
                result = self.dir.read_result()
                self.dir.load_weights(self.model, result)
            else:
                t = self.trainer
                t.run()
                result = self.dir.finish(t) if self.dir is not None else dict(
                    weights_sha256=None, samples=t.c["samples"], steps=t.c["total_steps"], seconds=t.seconds,
                    nan_events=t.c["nan_events"], device=str(t.device))
        finally:
            if self.dir is not None:
                self.dir.unlock()
        return Run(self.model.eval(), self.problem, self.config, result, self.dir)


def train(problem: Problem | str | Path, model: str | UnrolledNet, config: dict | Config | None = None,
          schedule: str | dict | Sequence[Stage] = "end-to-end", budget: int | None = None,
          out: str | Path | RunDir | None = None, device: str | torch.device = "cpu", *, lr: float | None = None,
          patience: int | None = None, init_from: str | Path | None = None, resume: bool = False,
          log: Callable[[str], None] | None = None, meta: dict | None = None, data: DataSpec | dict | None = None,
          **options: Any) -> Run:
    """Train ``model`` on ``problem`` and return the :class:`Run`.

    - ``problem``: a :class:`Problem` or a ``.npz`` file from ``unrolled problem create``.
    - ``model``: a registry name (``unrolled list``) with ``config`` (a dict of its fields, CLI
      strings accepted, or its config dataclass), or a built :class:`UnrolledNet` (then no config).
    - ``schedule``: ``"end-to-end"`` or ``"stagewise"``, a table ``{"name": ..., **its keywords}``
      (docs/spec.md §7), or a list of :class:`Stage`. ``budget`` (training samples), ``lr`` and
      ``patience`` fill the named schedule's keywords; ``None`` keeps the schedule's defaults.
    - ``out``: the run directory (resumable, loadable by :func:`load`); ``None`` trains in memory
      (no checkpoints, ``result["weights_sha256"]`` is ``None``). An ``out`` that holds a run is
      refused unless ``resume``: then a run with the same settings is continued, or returned
      when finished; one with other settings is refused.
    - ``init_from``: a finished run whose weights start this one (a warm start).
    - ``data``: a :class:`~unrolled.training.data.DataSpec` (or a dict of its fields): a finite
      pool generated from the problem (``pool=N``) or read from files (``train_x``, ``train_y``,
      ``val_x``, ``val_y``, ``val_fraction``); ``None`` draws fresh samples every step.
    - ``options``: :class:`~unrolled.training.TrainOptions` fields (``batch=512, loss="mse",
      loss_lam=0.1, eval_every=50, seed=0, ...``); ``meta``: extra ``config.json`` entries.
    - ``log``: receives the stage summaries (default: stderr, with a progress bar).

    With no ``config`` a named model trains with its recipe (:mod:`unrolled.recipes`, what
    ``unrolled train`` does with no option): the recipe's config fields and, unless given, its
    learning rate, batch, budget and schedule options.
    """
    if isinstance(model, str) and config is None and model in MODELS:
        from . import recipes

        config = recipes.config(model)
        r = recipes.recipe(model)
        lr = r.lr if lr is None and schedule == r.schedule else lr
        schedule = recipes.schedule(model, schedule) if isinstance(schedule, str) else schedule
        options.setdefault("batch", r.batch)
        budget = r.budget if budget is None else budget
    return prepare(problem, model, config, schedule, budget, out, device, lr=lr, patience=patience,
                   init_from=init_from, resume=resume, log=log, meta=meta, data=data, **options).run()


def resume(run_dir: str | Path | RunDir, device: str | torch.device | None = None,
           log: Callable[[str], None] | None = None) -> Run:
    """Continue an interrupted run as configured (on ``device``, default the run's own)."""
    return reopen(run_dir, device, log).run()


def prepare(problem: Problem | str | Path, model: str | UnrolledNet, config: dict | Config | None = None,
            schedule: str | dict | Sequence[Stage] = "end-to-end", budget: int | None = None,
            out: str | Path | RunDir | None = None, device: str | torch.device = "cpu", *, lr: float | None = None,
            patience: int | None = None, init_from: str | Path | None = None, resume: bool = False,
            log: Callable[[str], None] | None = None, meta: dict | None = None, data: DataSpec | dict | None = None,
            **options: Any) -> Training:
    """:func:`train` up to the first step: checks everything, writes the run directory, and
    returns the :class:`Training` (for callers that report what they start)."""
    rd = out if isinstance(out, RunDir) or out is None else RunDir(out)
    if rd is not None and rd.started and not resume:
        pid = rd.writer()
        check(pid is None, f"{rd} already holds a run, being trained by another process (PID {pid})")
        raise UsageError(f"{rd} already holds a run; continue it with --resume {rd}")
    problem_file = None
    if not isinstance(problem, Problem):
        problem_file, problem = Path(problem), Problem.load(problem)
    net = _model(model, config, problem)
    unknown = sorted(set(options) - set(OPTIONS))
    check(not unknown, f"unknown training option(s) {', '.join(unknown)}; valid: {', '.join(OPTIONS)}")
    opts = TrainOptions(**options)
    init = _init_from(Path(init_from), net) if init_from is not None else None
    spec = data if isinstance(data, DataSpec) or data is None else DataSpec(**data)
    spec = None if spec is None or spec.fresh else spec
    pool = spec.build(problem, opts.seed, opts.loss, net.A.dtype, opts.val_size) if spec is not None else None
    name, stages = _schedule(schedule, net.K, opts.batch, samples=budget, lr=lr, patience=patience)
    cfg = dict(model=net.name, model_config=dataclasses.asdict(net.config), schedule=name,
               stages=[s.to_dict() for s in stages], options=dataclasses.asdict(opts), device=str(device),
               torch=torch.__version__, **({"init_from": init} if init else {}),
               **({"data": spec.record()} if spec is not None else {}))
    clash = sorted(set(meta or {}) & set(RESERVED))
    check(not clash, f"meta may not set {', '.join(clash)}: those entries of config.json are the run's own")
    cfg.update(meta or {})
    net = net.to(device)
    trainer = Trainer(net, problem, stages, opts, rd, log, pool)  # its checks come before anything is written
    if rd is None:
        return Training(trainer, net, problem, json.loads(json.dumps(cfg, allow_nan=True)), rd)
    try:
        if rd.started:
            rd.read_config()  # a run directory, before its .lock is made
            rd.lock()
            stored = rd.read_config()
            _check_same(rd, stored, cfg, problem)
            if rd.finished:
                return Training(None, net, problem, stored, rd)
            trainer.resume()
            return Training(trainer, net, problem, stored, rd, resumed=True)
        return Training(trainer, net, problem, rd.create(problem, problem_file, cfg), rd)  # create locks
    except BaseException:
        rd.unlock()
        raise


def reopen(run_dir: str | Path | RunDir, device: str | torch.device | None = None,
           log: Callable[[str], None] | None = None) -> Training:
    """The :class:`Training` of the run in ``run_dir``, at its last checkpoint if it has one."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    rd.read_config()  # a run directory, before its .lock is made
    rd.lock()
    try:
        cfg = rd.read_config()
        problem = rd.read_problem(cfg)
        model = build(cfg["model"], problem, cfg["model_config"])
        if "init_from" in cfg:  # a warm start: the parameters of another run
            init = cfg["init_from"]
            load_weights(model, Path(init["run"]) / "weights.safetensors", init["weights_sha256"])
        model = model.to(_device(cfg, device, log))
        opts = TrainOptions(**cfg["options"])
        pool = _pool(cfg, problem, opts, model)
        trainer = Trainer(model, problem, RunDir.stages(cfg), opts, rd, log, pool)
        started = rd.started
        if started:
            trainer.resume()
        else:  # killed before its first checkpoint: metrics of that attempt are dropped
            rd.truncate_metrics(0)
    except BaseException:
        rd.unlock()
        raise
    return Training(trainer, model, problem, cfg, rd, resumed=started)


def _pool(cfg: dict, problem: Problem, opts: TrainOptions, model: UnrolledNet) -> TrainingData | None:
    """The training pool a run's ``config.json`` records (its files checked by SHA-256), or ``None``."""
    if "data" not in cfg:
        return None
    check(isinstance(cfg["data"], dict), "config.json has a damaged data record; it was edited")
    return DataSpec.from_record(cfg["data"]).build(problem, opts.seed, opts.loss, model.A.dtype, opts.val_size)


def _device(cfg: dict, device: str | torch.device | None, log: Callable[[str], None] | None) -> torch.device:
    """``device``, or the run's own; a CUDA run continues on the CPU (with a note) where there is no GPU."""
    if device is not None:
        return torch.device(device)
    try:
        own = torch.device(cfg.get("device", "cpu"))
    except (RuntimeError, TypeError):
        raise UsageError(f"config.json has device {cfg.get('device')!r}; it was edited or damaged") from None
    if own.type == "cuda" and not torch.cuda.is_available():
        (log or Trainer._default_log)(f"note: the run was trained on {own}; this machine has no CUDA device, "
                                      f"so it continues on the CPU")
        return torch.device("cpu")
    return own


def _model(model: str | UnrolledNet, config: dict | Config | None, problem: Problem) -> UnrolledNet:
    if isinstance(model, UnrolledNet):
        check(config is None, "give config with a model name; a built model carries its own")
        return model
    check(isinstance(model, str) and model in MODELS, f"unknown model {model!r}; valid: {', '.join(sorted(MODELS))}")
    if not isinstance(config, Config):
        config = make_config(MODELS[model].Config, dict(config or {}))
    check(1 <= config.K <= MAX_LAYERS, f"K={config.K} layers must be in 1..{MAX_LAYERS}")
    return build(model, problem, config)


def _init_from(init: Path, model: UnrolledNet) -> dict:
    """The warm-start record ``{run, model, weights_sha256}`` of a finished run whose weights fit
    ``model`` (the same family, or one with the same parameters: ALISTA -> ALISTA-AT), loaded into it."""
    rd = RunDir(init)
    src = rd.read_config()
    check(rd.finished, f"--init-from {init} has not finished training (no result.json)")
    result = rd.read_result()
    rd.load_weights(model, result)  # refuses a misfit in one line
    return dict(run=str(init.resolve()), model=src["model"], weights_sha256=result["weights_sha256"])


def _schedule(schedule: str | dict | Sequence[Stage], K: int, batch: int, **given: Any) -> tuple[str, list[Stage]]:
    """``(name, stages)``: a named schedule or a table built for depth ``K``, or a list as given."""
    given = {k: v for k, v in given.items() if v is not None}
    if not isinstance(schedule, str | dict):
        stages = list(schedule)
        check(stages and all(isinstance(s, Stage) for s in stages), "schedule must be a name, a table or Stages")
        check(not given, f"a list of stages carries its own {', '.join(given)}; give them to its Stages")
        return "custom", stages
    table = {"name": schedule} if isinstance(schedule, str) else dict(schedule)
    check("name" in table, f"a schedule table needs name = one of {', '.join(SCHEDULES)}")
    name = choice(table.pop("name"), SCHEDULES, "schedule")
    valid = [p for p in inspect.signature(SCHEDULES[name]).parameters if p != "K"]
    unknown = sorted(set(table) - set(valid))
    check(not unknown, f"unknown key(s) {', '.join(unknown)} of schedule {name}; valid: {', '.join(valid)}")
    for k, v in given.items():
        check(table.get(k, v) == v, f"schedule {k}={table.get(k)} contradicts {k}={v}; give it once")
    check(table.get("batch", batch) == batch, f"schedule batch={table.get('batch')} contradicts batch={batch}")
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in {**table, **given, "batch": batch}.items()}
    return name, make_schedule(name, K, **kw)


def _check_same(rd: RunDir, stored: dict, new: dict, problem: Problem) -> None:
    """Refuse to continue (or return) a run whose settings or problem differ from the ones given."""
    def canonical(cfg: dict) -> dict:
        cfg = {k: cfg.get(k) for k in SETTINGS}
        if cfg["model"] in MODELS:  # configs of older versions (flat support-selection keys) compare alike
            cfg["model_config"] = dataclasses.asdict(make_config(MODELS[cfg["model"]].Config, cfg["model_config"]))
        return json.loads(json.dumps(cfg, sort_keys=True, allow_nan=True, default=str))

    a, b = canonical(stored), canonical(new)
    differ = [k for k in SETTINGS if a[k] != b[k]]
    theirs = rd.read_problem(stored)
    test_only = {k: getattr(theirs.spec, k) for k in TEST_ONLY}  # the training never sees the test set
    if dataclasses.replace(problem.spec, **test_only) != theirs.spec or not torch.equal(theirs.A, problem.A):
        differ.append("problem")
    check(not differ, f"{rd} holds a run with other settings ({', '.join(differ)}); use another directory")


# -- loading and evaluation -------------------------------------------------------------------------


def load(run_dir: str | Path | RunDir, device: str | torch.device = "cpu", overrides: dict | None = None) -> Run:
    """The finished run in ``run_dir``, its weights and problem verified by their recorded SHA-256.

    ``overrides`` change model-config fields that leave the weights' shapes alone (e.g. the
    support-selection ramp ``ss.ramp``); anything else fails to load with a one-line error.
    """
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    cfg = rd.read_config()
    problem = rd.read_problem(cfg)
    result = rd.read_result()
    model = build(cfg["model"], problem, {**cfg["model_config"], **(overrides or {})})
    rd.load_weights(model, result)
    return Run(model.to(device).eval(), problem, cfg, result, rd, dict(overrides or {}))


def evaluate(source: Run | UnrolledNet, problem: Problem | None = None, *, split: str = "test",
             test_x: str | Path | None = None, test_size: int | None = None, snr: float | None = None,
             baselines: Sequence[str] = BASELINES, oracle: bool = True) -> list[dict]:
    """Per-layer rows (``method, layer, nmse_db, nmse_db_sample, fp, fn, f1`` and metadata) of a
    run or a model, then ``baselines`` at the same depth (Lasso solvers with lambda tuned on the
    validation set; AMP with the problem's prior) and the support-oracle floor (``layer`` empty).

    ``problem`` defaults to the run's own. The data: the problem's test set (its first
    ``test_size`` vectors; ``snr`` changes the noise), the signals of the file ``test_x``, or
    ``split="validation"``: the fixed validation set, to choose inference settings.
    """
    if isinstance(source, Run):
        model, method = source.model, source.config["model"]
        problem = problem or source.problem
    else:
        check(isinstance(source, UnrolledNet), f"evaluate needs a Run or a model, got {type(source).__name__}")
        check(problem is not None, "evaluate(model) needs the problem it was built for")
        model, method = source, source.name
    for name in baselines:
        choice(name, [*SOLVERS, *E.FIXED_NETWORKS, *E.baselines.NAMES], "baseline")
    x, y = E.evaluation_set(problem, split, test_x, test_size, snr)
    meta = dict(split=split, test_size=len(x), torch=torch.__version__)
    if isinstance(source, Run):
        r, cfg = source.result, source.config
        meta = dict(run=str(source.dir) if source.dir else "", samples=r["samples"], seconds=round(r["seconds"], 1),
                    device=r["device"], seed=cfg["options"]["seed"], schedule=cfg["schedule"], split=split,
                    overrides=json.dumps(source.overrides, sort_keys=True) if source.overrides else "",
                    test_size=len(x), torch=torch.__version__)
    rows = E.evaluate_model(model, x, y, method)
    if baselines:
        rows += E.baseline_rows(problem, x, y, model.K, baselines)
    if oracle:
        rows += E.oracle_rows(problem.A, x, y, E.evaluation_snr(problem, snr))
    return [{**meta, **r} for r in rows]
