"""Commands built on the model zoo and the trainer: demo, train, eval."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from . import evaluate as E
from .analytic import analytic_weights
from .problem import Problem, ProblemSpec


def cmd_demo(a: argparse.Namespace) -> None:
    """The main job: standard 250x500 problem, analytic W, classical solvers with tuned lambda."""
    out = Path(a.out)
    problem = Problem(ProblemSpec(m=250, n=500, p=0.1, snr=a.snr, seed=a.seed))
    path = problem.save(out / "problem.npz")
    print(f"problem: {problem} -> {path}")
    w = analytic_weights(problem.A)
    print(f"analytic W (closed form): objective {w.objective:.2f}, coherence {w.coherence:.4f}, {w.seconds:.3f} s")
    x, y = problem.test(a.test_size, torch.float64)
    xv, yv = problem.validation(torch.float64)
    t0 = time.perf_counter()
    rows = E.classical_rows(problem.A, x, y, xv[:1000], yv[:1000], a.layers, ("ista", "fista"))
    rows += E.oracle_rows(problem.A, x, y, problem.spec.snr)
    print(f"classical solvers, lambda tuned on validation, {time.perf_counter() - t0:.1f} s")
    print(E.format_table(rows))
    E.to_csv(rows, out / "demo.csv", meta=dict(problem=str(path)))
    print(f"wrote {out / 'demo.csv'}")


def add_commands(sub) -> None:
    from .cli import Parser, number, positive_int

    pd = sub.add_parser("demo", help="the main job: standard problem, baselines and models, table and plot")
    pd.add_argument("--out", default="runs/demo")
    pd.add_argument("--snr", type=number, default=40.0)
    pd.add_argument("--seed", type=int, default=0)
    pd.add_argument("--layers", type=positive_int, default=16)
    pd.add_argument("--test-size", type=positive_int, default=10000)
    pd.set_defaults(func=cmd_demo)
    del Parser
