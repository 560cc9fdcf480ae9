"""Each model's best general recipe: the one table the CLI, the API, the demo and the repro harness read.

A :class:`Recipe` is what ``unrolled train PROBLEM --model NAME --out RUN`` does with no other
option: the schedule, its base learning rate, the batch, the sample budget and the config
fields that differ from the model's own defaults. ``ur.train`` fills the same values where it
is given ``None``; ``unrolled demo`` trains its two models with their recipes at the smaller
``demo_budget``. The initialisations a recipe relies on are derived from the problem by the
models themselves (docs/spec.md §6.5, §11.7): ALISTA's ``gamma0 = min(1, 1.9 / rho(W^T A))``
(NA-ALISTA's and AGLISTA's steps clamped to ``2 / rho_S``, ``bound=True``), the LISTA family's
``1 / (1.001 L)``, count-form support selection from the expected sparsity ``s = p n``.

Where the values come from (docs/results.md): ALISTA and NA-ALISTA end to end with count-form
selection and the ``|z| > theta`` condition are the demo's settings, measured on the standard
250x500 problem (what mattered there: end to end over stage-wise at the same budget, count
over percentage selection, lr 2e-3 / 1e-3, the reference head for NA-ALISTA). ALISTA-AT and AGLISTA
take the NA-ALISTA table's settings (configs/na-alista-k.toml): count selection (AGLISTA with the
theta condition and ``theta0 = 0.1``), lr 2e-3. The other models
keep the end-to-end schedule's defaults (lr 1e-3, batch 512, 2,000,000 samples); there is no
measurement yet that another recipe is better in general.

:data:`REPRODUCTION` holds the constants the papers' experiments were run with before the
derived initialisations (issue 15): the repro harness fills them in where an experiment's
TOML does not set the field, so that every documented reproduction keeps its numbers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import check

BUDGET = 2_000_000  # training samples of `unrolled train` (the end-to-end schedule's default)
COUNT_SS = {"ss": "count", "ss.theta": True}  # count-form selection from s = p n, with the |z| > theta condition
ONE_COSINE = {"fine": ()}  # end to end: one cosine from lr to 0 over the whole budget, no lr x 0.1 stage (issue 16)
LEARNED_MATRICES = 1_280_000  # samples: 10,000 steps of 128 (design Table 1 row [b], docs/results.md)


@dataclass(frozen=True)
class Recipe:
    """How ``unrolled train`` trains a model when given no option."""

    schedule: str = "end-to-end"
    lr: float | None = None  # None: the schedule's own default (end to end: 1e-3)
    batch: int = 512
    budget: int = BUDGET
    config: dict[str, Any] = field(default_factory=dict)
    demo_budget: int | None = None  # `unrolled demo`: sized for 5 minutes on 2 CPU cores
    options: dict[str, Any] = field(default_factory=dict)  # the schedule's keywords (with this schedule only)

    def describe(self) -> str:
        cfg = ", ".join(f"{k}={v}" for k, v in self.config.items()) or "model defaults"
        lr = "schedule default" if self.lr is None else f"{self.lr:g}"
        opts = "".join(f" {k}={v}" for k, v in self.options.items())
        return f"{self.schedule}{opts}, lr {lr}, batch {self.batch}, {self.budget:,} samples; {cfg}"


RECIPES: dict[str, Recipe] = {
    "alista": Recipe(lr=2e-3, config=COUNT_SS, demo_budget=300_000),
    "na-alista": Recipe(lr=1e-3, config={**COUNT_SS, "head": "reference"}, demo_budget=150_000),
    # the NA-ALISTA table's settings (configs/na-alista-k.toml; docs/repro/na-alista-k-paper.md): count
    # selection reached -41 to -42 dB at 250x500, 40 dB, where the default percentage form gave -11 to -13
    "alista-at": Recipe(lr=2e-3, config={"ss": "count"}, demo_budget=300_000),
    "aglista": Recipe(lr=2e-3, config={**COUNT_SS, "theta0": 0.1}, demo_budget=300_000),
    # learned matrices need a high rate to move and a decay to settle, and tied LISTA oscillates if the rate stays
    # near 3e-3 for long (issue 16, docs/results.md, design Table 1 row [b]): one cosine from 3e-3 over 10,000 steps
    # of 128 gave LISTA -40.4 / LFISTA -40.7 dB, where 40,000 steps (cosine over 75 %, then lr x 0.1) gave -32.7 /
    # -37.6; a restart at 3e-4 after the cosine knocked LISTA from -40.7 back to -33 dB
    **dict.fromkeys(("lista", "dense-lista", "lwa"),
                    Recipe(lr=3e-3, batch=128, budget=LEARNED_MATRICES, options=ONE_COSINE)),
}
DEFAULT = Recipe()

# The constants of the initialisations before issue 15, as the repro experiments ran them.
REPRODUCTION: dict[str, dict[str, Any]] = {
    "alista": {"gamma0": 1.0, "guard": False},
    "alista-at": {"gamma0": 0.5, "guard": False},
    "aglista": {"gamma0": 0.5, "bound": False, "guard": False},
    "na-alista": {"bound": False, "guard": False},
}


# Config fields added with issue 15, at the value that reproduces the code before them: left out of
# the repro harness's training identities, so that earlier trainings are found again.
LATER_FIELDS: dict[str, Any] = {"bound": False, "guard": False}


def config_record(config) -> dict:
    """A model config as a dict, without :data:`LATER_FIELDS` at their reproducing values."""
    d = dataclasses.asdict(config)
    return {k: v for k, v in d.items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


def recipe(model: str) -> Recipe:
    """The recipe of ``model`` (a registered name); models without an entry get :data:`DEFAULT`."""
    from .models import MODELS

    check(model in MODELS, f"unknown model {model!r}; valid: {', '.join(sorted(MODELS))}")
    return RECIPES.get(model, DEFAULT)


def schedule(model: str, name: str | None = None) -> str | dict:
    """The schedule ``model`` trains with when given ``name`` (None: the recipe's): the recipe's
    table, its options included, when it is the recipe's schedule, else ``name`` with its defaults."""
    r = recipe(model)
    name = name or r.schedule
    return {"name": name, **r.options} if name == r.schedule and r.options else name


def config(model: str, given: dict | None = None) -> dict:
    """The recipe's config fields under ``given`` (``given`` wins, key by key; a ``ss`` mode given
    replaces the recipe's ``ss.*`` fields too, so that ``ss=none`` means no selection)."""
    base = dict(recipe(model).config)
    given = dict(given or {})
    if "ss" in given:
        base = {k: v for k, v in base.items() if not k.startswith("ss")}
    return {**base, **given}


def reproduction_config(model: str, given: dict) -> dict:
    """An experiment's config with the pre-issue-15 constants where it does not set them itself."""
    from .models import MODELS

    fields = {f.name for f in dataclasses.fields(MODELS[model].Config)} if model in MODELS else set()
    pinned = {k: v for k, v in REPRODUCTION.get(model, {}).items() if k in fields}
    return {**pinned, **given}
