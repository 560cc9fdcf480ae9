"""``unrolled demo``, the main job: ALISTA and NA-ALISTA on the standard problem, next to the baselines."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from .. import api, recipes
from .. import evaluation as E
from ..problem import Problem, ProblemSpec
from ..training import RunDir
from .args import number, positive_int
from .train import fit

DEMO_MODELS = ("alista", "na-alista")  # trained with their recipes (unrolled/recipes.py) at the demo budget


def cmd_demo(a: argparse.Namespace) -> None:
    """Standard 250x500 problem: train ALISTA and NA-ALISTA, compare with ISTA/FISTA and the oracle."""
    from ..plots import plot_layers

    start = time.perf_counter()
    out = Path(a.out)
    problem = Problem(ProblemSpec(m=250, n=500, p=0.1, snr=a.snr, seed=a.seed, test_size=a.test_size))
    path = problem.save(out / "problem.npz")
    print(f"problem: {problem} -> {path}")
    rows: list[dict] = []
    for name in DEMO_MODELS:
        r = recipes.recipe(name)
        rd = RunDir(out / name)
        if rd.finished:
            print(f"{name}: already trained in {rd}")
            run = api.load(rd)
        else:
            training = api.prepare(path, name, {**recipes.config(name), "K": a.layers}, recipes.schedule(name),
                                   r.demo_budget, rd, lr=r.lr, batch=r.batch, seed=a.seed, resume=True)
            run = fit(training, r.demo_budget)
        first = not rows  # the baselines and the floor once, beside the first model
        rows += api.evaluate(run, baselines=api.BASELINES if first else (), oracle=first)
    print(E.format_table(rows))
    E.to_csv(rows, out / "demo.csv")
    plot_layers(rows, out / "demo.png", f"250x500, p=0.1, {a.snr:g} dB, test set of {a.test_size}")
    print(f"wrote {out / 'demo.csv'} and {out / 'demo.png'} ({time.perf_counter() - start:.0f} s in all)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    pd = sub.add_parser("demo", help="the main job: train ALISTA and NA-ALISTA, table and plot vs ISTA/FISTA")
    pd.add_argument("--out", default="runs/demo")
    pd.add_argument("--snr", type=number, default=40.0)
    pd.add_argument("--seed", type=int, default=0)
    pd.add_argument("--layers", type=positive_int, default=16)
    pd.add_argument("--test-size", type=positive_int, default=10000)
    pd.set_defaults(func=cmd_demo)
