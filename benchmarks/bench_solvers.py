"""Time to accuracy of the classical solvers on the standard noiseless 250x500 problem.

Problem: m = 250, n = 500, p = 0.1, noiseless, seed 0 (docs/spec.md §2). Everything runs in
float64: at -40 dB the error is 1 % of the signal, and float64 keeps rounding out of
the comparison. For each algorithm:

1. lambda is tuned with the library's ``tune_lambda`` on the first ``--tune-size``
   validation signals for the whole budget (``iters = --iters``): for noiseless data
   the Lasso bias shrinks with lambda, so the best lambda for a long run is small, and
   the budget decides how small it can be (a smaller lambda converges more slowly).
   The test set is never seen while tuning.
2. The solver runs on ``--test-size`` test signals; the aggregate NMSE of every
   iterate is tracked on the whole set (one reduction per iteration, included in the
   time), and the first iteration and wall time at which it reaches -20 / -30 / -40 dB
   are recorded. The run stops once the last level is reached (``--full`` runs on).
   A level never reached within the budget is shown as '—' with the best NMSE.

    .venv/bin/python benchmarks/bench_solvers.py [--algos ista,fista] [--test-size 10000] [--iters 1000]

Prints a table and writes benchmarks/results/solvers-<algos>-<test size>.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from unrolled import Problem, ProblemSpec
from unrolled import solvers as S
from unrolled.io import write_text
from unrolled.metrics import db

try:
    from bench_analytic import machine
except ImportError:  # run from elsewhere
    from benchmarks.bench_analytic import machine

RESULTS = Path(__file__).parent / "results"
LEVELS = (-20.0, -30.0, -40.0)


def run(algo: str, A: torch.Tensor, x: torch.Tensor, y: torch.Tensor, lam: float, iters: int, full: bool) -> dict:
    energy = float((x * x).sum())
    L = S.lipschitz(A)
    hits: dict[float, tuple[int, float]] = {}
    best, best_k, k = math.inf, 0, 0
    start = time.perf_counter()
    for k, xk in enumerate(S.get_solver(algo)(A, y, lam, iters, L)):
        nmse = db(float(((xk - x) ** 2).sum()) / energy)
        if nmse < best:
            best, best_k = nmse, k
        for level in LEVELS:
            if level not in hits and nmse <= level:
                hits[level] = (k, time.perf_counter() - start)
        if not full and len(hits) == len(LEVELS):
            break
    seconds = time.perf_counter() - start
    return dict(levels={str(lv): hits.get(lv) for lv in LEVELS}, best_nmse_db=best, best_iteration=best_k,
                iterations_run=k, seconds=seconds, seconds_per_iteration=seconds / max(k, 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--algos", default="ista,fista", help="comma-separated: ista, fista, oista, ista-bt")
    ap.add_argument("--test-size", type=int, default=10000)
    ap.add_argument("--iters", type=int, default=1000, help="iteration budget (also the tuning depth)")
    ap.add_argument("--tune-size", type=int, default=128, help="validation signals used to tune lambda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--full", action="store_true", help="run the whole budget even after the last level")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: no spin-wait on a busy box)")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/solvers-<algos>-<N>.json)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    info = machine(a.threads)
    algos = [s.strip() for s in a.algos.split(",")]
    for algo in algos:
        S.get_solver(algo)
    problem = Problem(ProblemSpec(m=250, n=500, p=0.1, snr=math.inf, seed=a.seed, test_size=a.test_size))
    x, y = problem.test(dtype=torch.float64)
    xv, yv = problem.validation(torch.float64)
    xv, yv = xv[: a.tune_size], yv[: a.tune_size]
    rows = []
    for algo in algos:
        t = time.perf_counter()
        lam, table = S.tune_lambda(algo, problem.A, xv, yv, a.iters)
        tune_s = time.perf_counter() - t
        val_nmse = dict(table)[lam]
        print(f"{algo}: lambda {lam:.4g} (validation NMSE {val_nmse:.2f} dB after {a.iters} iterations; "
              f"tuning {tune_s:.0f} s)", flush=True)
        r = run(algo, problem.A, x, y, lam, a.iters, a.full)
        rows.append(dict(algo=algo, lam=lam, tune_seconds=tune_s, tune_table=table, val_nmse_db=val_nmse,
                         test_size=len(x), budget=a.iters, **r))
        print(f"{algo}: {r['iterations_run']} iterations in {r['seconds']:.0f} s, best {r['best_nmse_db']:.2f} dB",
              flush=True)

    def cell(hit):
        return f"{hit[0]:>5} it {hit[1]:>7.1f} s" if hit else f"{'—':>16}"

    print(f"\nfirst iteration / wall time to reach aggregate test NMSE ({len(x)} noiseless signals, float64, "
          f"budget {a.iters} iterations)")
    print(f"{'algo':<8} {'lambda':>9} " + " ".join(f"{f'{lv:.0f} dB':>16}" for lv in LEVELS)
          + f" {'best NMSE':>10} {'s/iter':>7}")
    for r in rows:
        print(f"{r['algo']:<8} {r['lam']:>9.3g} " + " ".join(cell(r["levels"][str(lv)]) for lv in LEVELS)
              + f" {r['best_nmse_db']:>7.2f} dB {r['seconds_per_iteration']:>7.3f}")
    print(f"\nmachine: {info}")
    out = a.out or str(RESULTS / f"solvers-{'-'.join(algos)}-{len(x)}.json")
    write_text(out, json.dumps(dict(machine=info, args=vars(a), levels_db=LEVELS, rows=rows), indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
