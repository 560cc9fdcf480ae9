"""The matrix suite at full size (issue 15): every learned model trained with its recipe, on every kind of matrix.

Cells: the i.i.d. Gaussian matrix, partial DCT, kappa = 15 and 100, low-rank (r = 0.8 m), correlated
columns (Toeplitz rho = 0.9) and unnormalised columns at m/n = 1/2, and the Gaussian matrix at
m/n = 1/4 and 1/8 (``--ratios`` crosses every kind with every ratio). n = 500, s = p n with
p = min(0.1, m / (5 n)), 40 dB, K = 16. Per cell: ALISTA, NA-ALISTA and LISTA trained with their
recipes (unrolled/recipes.py) at ``--budget`` samples (``demo``, the default: each recipe's demo budget,
else 300,000; ``default``: the recipe's full budget, what ``unrolled train`` uses), ISTA and FISTA
(lambda tuned on validation) and AMP at the same depth, the support-oracle floor; the final-layer NMSE,
how many test vectors end above 0 dB, "diverged at k" where a method blew up, and whether each learned
model beats FISTA.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bench_matrix_suite.py --out /work/runs/suite

Runs are resumable run directories under ``--out`` (a killed benchmark continues); the table is
rewritten after every cell to benchmarks/results/matrix_suite.json and printed as markdown at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
import warnings
from fractions import Fraction
from pathlib import Path

import torch

import unrolled as ur
from unrolled import evaluation as E
from unrolled import recipes
from unrolled.io import write_text
from unrolled.problem import MATRIX_SUITE, SUITE_RATIOS

RESULTS = Path(__file__).parent / "results"
ORDER = ("dct", "kappa100", "toeplitz", "unnormalised", "kappa15", "lowrank", "gaussian")  # issue 15's failures first
LEARNED = ("alista", "na-alista", "lista")
DEMO_FALLBACK = 300_000  # --budget demo, for a recipe without a demo budget
CLASSICAL = ("ista", "fista", "amp")


def cells(ratios: list[float] | None, only: str = "") -> list[tuple[str, float]]:
    """The suite's cells, or those of ``--ratios``; ``only`` ("dct:1/2,gaussian:1/8") keeps the named ones."""
    every = [(k, r) for r in ratios for k in ORDER] if ratios else \
        [(k, 0.5) for k in ORDER] + [("gaussian", r) for r in SUITE_RATIOS if r != 0.5]
    if not only:
        return every
    keep = {(k, float(Fraction(r))) for k, r in (c.split(":") for c in only.split(","))}
    return [c for c in every if c in keep]


def budget_of(model: str, budget: str) -> int:
    """``demo``: the recipe's demo budget (else 300,000); ``default``: what `unrolled train` uses; or a number."""
    r = recipes.recipe(model)
    return {"demo": r.demo_budget or DEMO_FALLBACK, "default": r.budget}.get(budget) or int(budget)


def cell(kind: str, ratio: float, n: int, budget: str, K: int, test_size: int, out: Path,
         learned: tuple[str, ...] = LEARNED) -> dict:
    m = int(n * ratio)
    spec = ur.ProblemSpec(m=m, n=n, p=min(0.1, m / (5 * n)), snr=40, seed=0, val_size=2000, test_size=test_size,
                          **MATRIX_SUITE[kind])
    problem = ur.Problem(spec)
    x, y = problem.test(dtype=torch.float64)
    rows = E.baseline_rows(problem, x, y, K, CLASSICAL) + E.oracle_rows(problem.A, x, y, 40.0)
    trained = {}
    for model in learned:
        r = recipes.recipe(model)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # low rank: W from the pseudo-inverse
            run = ur.train(problem, model, {**recipes.config(model), "K": K}, r.schedule, budget_of(model, budget),
                           out / f"{kind}-{m}x{n}-{model}", lr=r.lr, batch=r.batch, resume=True, log=lambda s: None)
        trained[model] = dict(seconds=round(time.perf_counter() - t0, 1), failed=run.result.get("failed", ""),
                              samples=run.result["samples"])
        rows += E.evaluate_model(run.model, x, y)
    final = {}
    for row in rows:
        if row["layer"] in (K, ""):
            final[row["method"]] = dict(nmse_db=row["nmse_db"], over_0db=row.get("over_0db"),
                                        diverged=row.get("diverged", ""))
    fista = final["fista"]["nmse_db"]
    for model in learned:
        final[model].update(trained[model], beats_fista=final[model]["nmse_db"] < fista)
    return dict(matrix=kind, m=m, n=n, s=spec.sparsity, budget=budget, K=K, test_size=test_size, methods=final)


def samples(r: dict, learned: tuple[str, ...]) -> str:
    """The training samples of each learned model in a cell."""
    return ", ".join(f"{r['methods'][mth]['samples']:,}" for mth in learned if "samples" in r["methods"].get(mth, {}))


def table(results: list[dict], learned: tuple[str, ...] = LEARNED) -> str:
    methods = [*learned, *CLASSICAL]
    head = "| matrix | m x n | " + " | ".join(methods) + " | oracle floor | samples (" + ", ".join(learned) + ") |"
    lines = [head, "|" + "---|" * (len(methods) + 4)]
    for r in results:
        cols = []
        for mth in methods:
            v = r["methods"].get(mth)
            if v is None:
                cols.append("declined")
            elif v.get("diverged"):
                cols.append(f"diverged {v['diverged']}")
            else:
                mark = "" if mth not in learned else ("" if v["beats_fista"] else " (not < FISTA)")
                over = f", {v['over_0db']} > 0 dB" if v.get("over_0db") else ""
                cols.append(f"{v['nmse_db']:.2f}{over}{mark}")
        floor = r["methods"].get("oracle-ls", {}).get("nmse_db")
        cols.append("n/a" if floor is None else f"{floor:.2f}")
        lines.append(f"| {r['matrix']} | {r['m']}x{r['n']} | " + " | ".join(cols) + f" | {samples(r, learned)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--budget", default="demo",
                    help="training samples per model; 'demo': each recipe's demo budget; 'default': its full budget")
    ap.add_argument("--cells", default="", help="only these cells, e.g. 'dct:1/2,gaussian:1/8' (kind:m/n)")
    ap.add_argument("--results", default="matrix_suite.json", help="results file under benchmarks/results/")
    ap.add_argument("--test-size", type=int, default=2000)
    ap.add_argument("--ratios", default="", help="comma-separated m/n: every kind at every ratio")
    ap.add_argument("--out", default="runs/bench-matrix-suite", help="run directories (resumable)")
    ap.add_argument("--models", default=",".join(LEARNED), help="the learned models (comma-separated)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    ratios = [float(Fraction(r)) for r in a.ratios.split(",") if r] if a.ratios else None  # "1/4" -> 0.25
    learned = tuple(m for m in a.models.split(",") if m)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    meta = dict(commit=commit, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), threads=a.threads,
                cpu=platform.processor() or platform.machine(), cores=os.cpu_count(), torch=torch.__version__,
                load_average_at_start=list(os.getloadavg()))
    results = []
    for kind, ratio in cells(ratios, a.cells):
        t0 = time.perf_counter()
        results.append(cell(kind, ratio, a.n, a.budget, a.layers, a.test_size, out, learned))
        results[-1]["cell_seconds"] = round(time.perf_counter() - t0, 1)
        write_text(RESULTS / a.results, json.dumps(dict(meta=meta, learned=learned, cells=results), indent=1))
        print(table(results[-1:], learned).splitlines()[-1], flush=True)
    print(table(results, learned))


if __name__ == "__main__":
    main()
