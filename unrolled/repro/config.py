"""Experiment definitions: one TOML file per paper table or figure, validated on load.

An experiment is data: a problem, a grid (a dict of lists run as a Cartesian product, or
a list of such dicts whose cells are united), models with config overrides, a training
schedule, budgets (``smoke``, ``quick``, ``paper``) that shrink or filter it, the paper's
numbers with their provenance, claims to check, and the figure to draw from the table.
Every table rejects unknown keys and lists the valid ones.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError, check, choice
from ..evaluation import FIXED_NETWORKS
from ..problem import ProblemSpec
from ..solvers import SOLVERS
from ..training import SCHEDULES, TrainOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BUDGETS = ("smoke", "quick", "paper")
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
PROBLEM_KEYS = [f.name for f in dataclasses.fields(ProblemSpec)] + ["s", "train_size"]
TAG_KEYS = ["row", "arch", "pruned", "draw"]  # grid labels read by the runner's model hooks
SCALED = ("m", "n", "rank", "s")  # problem sizes multiplied by a budget's scale
TEST_ONLY = ("test_noise", "test_snr", "sp_density", "test_perturb", "test_size")
OPTION_KEYS = ["loss", "loss_lam", "labelled", "semi_weight", "eval_every"]

TOP_KEYS = ["title", "reproduces", "notes", "seed", "metric", "baselines", "oracle", "problem", "grid", "models",
            "schedule", "analysis", "architectures", "budget", "paper", "claims", "plot"]
MODEL_KEYS = ["model", "label", "config", "schedule", "pending"]
BUDGET_KEYS = ["about", "scale", "K", "problem", "schedule", "grid", "models", "model_schedule", "analysis"]
PAPER_KEYS = ["source", "metric", "layer", "pm", "keys", "methods", "rows"]
CLAIM_KEYS = ["text", "source", "a", "op", "b", "column", "how", "per", "tol"]
PLOT_KEYS = ["kind", "x", "y", "series", "panels", "where", "final", "err", "logx", "logy", "lines", "title", "xlabel",
             "ylabel"]
FLOATS = {f.name for f in dataclasses.fields(ProblemSpec) if "float" in str(f.type)}
METRICS = ("nmse_db", "nmse_db_sample")


def schedule_keys(name: str | None = None) -> list[str]:
    """Keys a ``[schedule]`` table accepts (all schedules, or one)."""
    fns = [SCHEDULES[name]] if name else SCHEDULES.values()
    keys = {p for fn in fns for p in inspect.signature(fn).parameters if p != "K"}
    return ["name", *sorted(keys), *OPTION_KEYS]


def known(d: Any, valid: list[str], where: str) -> dict:
    """``d`` as a dict whose keys are all in ``valid``; otherwise a one-line error listing them."""
    check(isinstance(d, dict), f"{where} must be a table, got {type(d).__name__}")
    unknown = sorted(set(d) - set(valid))
    check(not unknown, f"unknown key(s) {', '.join(unknown)} in {where}; valid: {', '.join(valid)}")
    return d


def as_list(v: Any) -> list:
    return list(v) if isinstance(v, list | tuple) else [v]


def same(a: Any, b: Any) -> bool:
    """Grid-value equality that treats ``500`` and ``500.0`` (and ``inf`` strings) alike."""
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9) or (float(a) == float(b))
    except (TypeError, ValueError):
        return str(a) == str(b)


@dataclass
class ModelEntry:
    model: str
    label: str
    config: dict = field(default_factory=dict)
    schedule: dict = field(default_factory=dict)
    pending: str | None = None


@dataclass
class Budget:
    name: str
    about: str
    scale: float = 1.0
    K: int = 16
    problem: dict = field(default_factory=dict)
    schedule: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    models: list[str] | None = None
    model_schedule: dict[str, dict] = field(default_factory=dict)  # per model label, over everything else
    analysis: dict = field(default_factory=dict)


@dataclass
class Cell:
    """One problem of the grid: nominal parameters (as the paper names them) and the actual spec."""

    params: dict  # grid values, flattened (model keys without prefix)
    nominal: dict  # nominal problem fields (experiment + budget + grid)
    spec: ProblemSpec  # the problem actually run (sizes scaled)
    train_size: int | None
    model: dict  # model-config overrides from the grid
    tags: dict  # row / arch / pruned / draw

    @property
    def key(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.params.items()) or "default"

    @property
    def problem_key(self) -> str:
        """The cell's problem alone (what the classical baselines and problem analyses depend on)."""
        return ",".join(f"{k}={v}" for k, v in self.params.items() if k in PROBLEM_KEYS) or "default"


@dataclass
class Experiment:
    name: str
    path: Path
    title: str
    reproduces: str
    notes: str
    seed: int
    metric: str
    baselines: list[str]
    oracle: bool
    problem: dict
    grids: list[dict]
    models: list[ModelEntry]
    schedule: dict
    analysis: dict | None
    architectures: dict
    budgets: dict[str, Budget]
    paper: list[dict]
    claims: list[dict]
    plots: list[dict]

    def budget(self, name: str) -> Budget:
        check(name in self.budgets, f"unknown budget {name!r}; valid: {', '.join(BUDGETS)}")
        return self.budgets[name]

    def active_models(self, budget: Budget) -> list[ModelEntry]:
        if budget.models is None:
            return self.models
        return [m for m in self.models if m.label in budget.models]

    def cells(self, budget: Budget) -> list[Cell]:
        """The grid's cells at ``budget`` (its filter applied, sizes scaled), without duplicates."""
        out, seen = [], set()
        for grid in self.grids:
            flat = {k: as_list(v) for k, v in grid.items() if k != "model"}
            flat.update({k: as_list(v) for k, v in grid.get("model", {}).items()})
            for k, allowed in {**budget.grid, **budget.grid.get("model", {})}.items():
                if k in flat:
                    flat[k] = [v for v in flat[k] if any(same(v, a) for a in as_list(allowed))]
            model_keys = set(grid.get("model", {}))
            for values in itertools.product(*flat.values()):
                params = dict(zip(flat, values))
                sig = tuple((k, str(v)) for k, v in params.items())
                if sig in seen:
                    continue
                seen.add(sig)
                out.append(self._cell(budget, params, model_keys))
        return out

    def _cell(self, budget: Budget, params: dict, model_keys: set) -> Cell:
        nominal = {**self.problem, **budget.problem}
        nominal.update({k: v for k, v in params.items() if k in PROBLEM_KEYS})
        fields = {k: float(v) if k in FLOATS and isinstance(v, int) else v for k, v in nominal.items()}
        fields.setdefault("m", ProblemSpec.m)
        fields.setdefault("n", ProblemSpec.n)
        for k in SCALED:
            if fields.get(k) is not None:
                fields[k] = max(1, round(fields[k] * budget.scale))
        s, train_size = fields.pop("s", None), fields.pop("train_size", None)
        if s is not None:
            check("p" not in fields, f"{self.path.name}: give p or s, not both")
            fields["p"] = min(1.0, s / fields["n"])
        spec = ProblemSpec.from_dict(fields)
        return Cell(params=params, nominal=nominal, spec=spec, train_size=train_size or None,
                    model={k: v for k, v in params.items() if k in model_keys},
                    tags={k: v for k, v in params.items() if k in TAG_KEYS})


# -- loading -----------------------------------------------------------------------------------


def experiment_path(name: str, configs: Path | None = None) -> Path:
    """``NAME`` in the configs directory, or a path to a ``.toml`` file."""
    if name.endswith(".toml"):
        path = Path(name)
        check(path.exists(), f"experiment file {path} does not exist")
        return path
    names = experiment_names(configs)
    check(name in names, f"unknown experiment {name!r}; valid: {', '.join(names) or '(none found)'}")
    return (configs or CONFIG_DIR) / f"{name}.toml"


def experiment_names(configs: Path | None = None) -> list[str]:
    d = configs or CONFIG_DIR
    check(d.is_dir(), f"configs directory {d} not found; pass --configs DIR")
    return sorted(p.stem for p in d.glob("*.toml"))


def load(name: str, configs: Path | None = None) -> Experiment:
    path = experiment_path(name, configs)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{path} is not valid TOML: {e}") from None
    where = path.name
    known(raw, TOP_KEYS, where)
    for k in ("title", "reproduces", "problem", "budget") + (("schedule",) if raw.get("models") else ()):
        check(k in raw, f"{where} lacks the required key {k!r}")
    problem = known(raw["problem"], PROBLEM_KEYS, f"[problem] of {where}")
    grids = [_grid(g, f"[grid] of {where}") for g in as_list(raw.get("grid", {}))]
    models = [_model(m, f"[[models]] of {where}") for m in raw.get("models", [])]
    labels = [m.label for m in models]
    check(len(set(labels)) == len(labels), f"{where}: model labels must be unique, got {labels}")
    schedule = _schedule(raw.get("schedule", {"name": "end-to-end"}), f"[schedule] of {where}")
    budgets = {}
    known(raw["budget"], list(BUDGETS), f"[budget] of {where}")
    for b in BUDGETS:
        check(b in raw["budget"], f"{where} lacks [budget.{b}] (every experiment has smoke, quick and paper)")
        budgets[b] = _budget(b, raw["budget"][b], grids, labels, schedule, f"[budget.{b}] of {where}")
    metric = raw.get("metric", "nmse_db")
    check(metric in METRICS, f"{where}: metric {metric!r} must be one of {', '.join(METRICS)}")
    analysis = raw.get("analysis")
    if analysis is not None:
        from .analyses import ANALYSES

        check(isinstance(analysis, dict) and analysis.get("name") in ANALYSES,
              f"{where}: [analysis] needs name = one of {', '.join(ANALYSES)}")
        ANALYSES[analysis["name"]].check(analysis, where)
    baselines = [choice(b, [*SOLVERS, *FIXED_NETWORKS], f"baseline in {where}")
                 for b in raw.get("baselines", ["ista", "fista"])]
    return Experiment(
        name=path.stem, path=path, title=raw["title"], reproduces=raw["reproduces"], notes=raw.get("notes", ""),
        seed=int(raw.get("seed", 0)), metric=metric, baselines=baselines,
        oracle=bool(raw.get("oracle", True)), problem=problem, grids=grids, models=models, schedule=schedule,
        analysis=analysis,
        architectures=known(raw.get("architectures", {}), ["neurons"], f"[architectures] of {where}"),
        budgets=budgets, paper=[_paper(p, f"[[paper]] of {where}") for p in raw.get("paper", [])],
        claims=[_claim(c, f"[[claims]] {i + 1} of {where}", grids, [*labels, *baselines, *ORACLES], analysis is None)
                for i, c in enumerate(raw.get("claims", []))],
        plots=[known(p, PLOT_KEYS, f"[plot] of {where}") for p in as_list(raw.get("plot", []))])


def _grid(g: Any, where: str) -> dict:
    known(g, PROBLEM_KEYS + TAG_KEYS + ["model"], where)
    if "model" in g:
        check(isinstance(g["model"], dict), f"{where}: model = {{...}} must be a table of config fields")
        clash = sorted(set(g["model"]) & set(PROBLEM_KEYS + TAG_KEYS))
        check(not clash, f"{where}: model keys {clash} clash with problem or tag keys")
    return g


def _model(m: Any, where: str) -> ModelEntry:
    from ..models import MODELS

    known(m, MODEL_KEYS, where)
    check("model" in m, f"{where}: every entry needs model = one of {', '.join(sorted(MODELS))}")
    check(m["model"] in MODELS, f"{where}: unknown model {m['model']!r}; valid: {', '.join(sorted(MODELS))}")
    return ModelEntry(model=m["model"], label=m.get("label", m["model"]), config=dict(m.get("config", {})),
                      schedule=_schedule(m.get("schedule", {}), f"{where} schedule", partial=True),
                      pending=m.get("pending"))


def _schedule(s: Any, where: str, partial: bool = False) -> dict:
    known(s, schedule_keys(), where)
    if not partial:
        check(s.get("name") in SCHEDULES, f"{where}: name must be one of {', '.join(SCHEDULES)}")
        known(s, schedule_keys(s["name"]), where)
    return dict(s)


def _budget(name: str, b: Any, grids: list[dict], labels: list[str], schedule: dict, where: str) -> Budget:
    known(b, BUDGET_KEYS, where)
    check("about" in b, f"{where} needs about = '...' (what this budget runs and what it reduces)")
    known(b.get("problem", {}), PROBLEM_KEYS, f"{where} problem")
    merged = {**schedule, **b.get("schedule", {})}
    check(merged.get("name") in SCHEDULES, f"{where}: schedule name must be one of {', '.join(SCHEDULES)}")
    known(merged, schedule_keys(merged["name"]), f"{where} schedule (merged with [schedule])")
    values: dict[str, list] = {}
    for g in grids:
        for k, v in [*((k, v) for k, v in g.items() if k != "model"), *g.get("model", {}).items()]:
            values.setdefault(k, []).extend(as_list(v))
    flt = dict(b.get("grid", {}))
    for k, allowed in [*((k, v) for k, v in flt.items() if k != "model"), *flt.get("model", {}).items()]:
        check(k in values, f"{where}: grid filter on {k!r}, which is not a grid key; valid: {', '.join(values)}")
        for v in as_list(allowed):
            check(any(same(v, a) for a in values[k]),
                  f"{where}: grid value {k}={v!r} is not in the experiment's grid; valid: {values[k]}")
    models = b.get("models")
    for m in models or []:
        check(m in labels, f"{where}: unknown model label {m!r}; valid: {', '.join(labels)}")
    model_schedule = b.get("model_schedule", {})
    check(isinstance(model_schedule, dict), f"{where}: model_schedule must be a table of model label -> schedule")
    for label, s in model_schedule.items():
        check(isinstance(s, dict), f"{where} model_schedule.{label} must be a table of schedule keys")
        check(label in labels, f"{where} model_schedule: unknown model label {label!r}; valid: {', '.join(labels)}")
        known({**merged, **s}, schedule_keys(merged["name"]), f"{where} model_schedule.{label}")
    scale, K = float(b.get("scale", 1.0)), b.get("K", 16)
    check(0 < scale <= 1, f"{where}: scale={scale} must be in (0, 1]")
    check(isinstance(K, int) and K >= 1, f"{where}: K={K} must be an integer >= 1")
    return Budget(name=name, about=b["about"], scale=scale, K=K, problem=dict(b.get("problem", {})),
                  schedule=dict(b.get("schedule", {})), grid=flt, models=models,
                  model_schedule={k: dict(v) for k, v in model_schedule.items()}, analysis=dict(b.get("analysis", {})))


ORACLES = ("oracle-ls", "oracle-mmse")  # the oracle floor's method names (evaluation.oracle_rows)
CLAIM_OPS, CLAIM_HOWS = ("<", ">", "within"), ("median", "mean", "all")
ROW_COLUMNS = ("nmse_db", "nmse_db_sample", "fp", "fn", "f1")


def _claim(c: Any, where: str, grids: list[dict], methods: list[str], strict: bool = True) -> dict:
    """A claim checked before any training: its groups name grid keys and methods that exist, so a
    typo fails now instead of reading "not evaluated" after hours of training. An experiment with an
    ``[analysis]`` has its own row columns (``quantity``, ``value``, ...): only the form is checked."""
    known(c, CLAIM_KEYS, where)
    for k in ("text", "a", "op", "b"):
        check(k in c, f"{where} needs {k!r} (claims compare group a with group b or a number)")
    check(c["op"] in CLAIM_OPS, f"{where}: op={c['op']!r} must be one of {', '.join(CLAIM_OPS)}")
    check(c.get("how", "median") in CLAIM_HOWS, f"{where}: how must be one of {', '.join(CLAIM_HOWS)}")
    check(not strict or c.get("column", "nmse_db") in ROW_COLUMNS,
          f"{where}: column must be one of {', '.join(ROW_COLUMNS)}")
    tol = c.get("tol", 1.0)
    check(isinstance(tol, int | float) and math.isfinite(tol) and tol > 0, f"{where}: tol={tol!r} must be a number > 0")
    b = c["b"]
    check(isinstance(c["a"], dict) and (isinstance(b, dict) or isinstance(b, int | float) and math.isfinite(b)),
          f"{where}: a must be a table like {{ method = \"alista\" }}, b a table or a finite number")
    keys = {k for g in grids for k in g if k != "model"} | {k for g in grids for k in g.get("model", {})}
    per = as_list(c.get("per", []))
    for group in (c["a"], b if isinstance(b, dict) else {}, dict.fromkeys(per)):
        for k in group:
            check(not strict or k == "method" or k in keys,
                  f"{where}: {k!r} is not a grid key; valid: method, {', '.join(sorted(keys))}")
        for m in as_list(group.get("method") or []):
            check(m in methods, f"{where}: method {m!r} is not in the experiment; valid: {', '.join(methods)}")
    return c


def _paper(p: Any, where: str) -> dict:
    known(p, PAPER_KEYS, where)
    for k in ("source", "keys", "methods", "rows"):
        check(k in p, f"{where} needs {k!r}")
    width = len(p["keys"]) + len(p["methods"])
    for row in p["rows"]:
        check(len(row) == width, f"{where}: row {row} has {len(row)} values, expected {width} (keys then methods)")
    check(p.get("metric", "nmse_db") in METRICS, f"{where}: metric must be one of {', '.join(METRICS)}")
    return p


def train_options(schedule: dict, seed: int, val_size: int) -> tuple[dict, TrainOptions]:
    """Split a resolved schedule table into ``make_schedule`` keyword arguments and :class:`TrainOptions`."""
    kw = {k: v for k, v in schedule.items() if k not in OPTION_KEYS and k != "name"}
    opts = {k: v for k, v in schedule.items() if k in OPTION_KEYS}
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()}
    return kw, TrainOptions(batch=kw.get("batch", 512), val_size=val_size, seed=seed, **opts)
