"""VAMP (issue 20): its NMSE against the issue's numbers, and inference time per 10,000 vectors at K = 16.

``check``: VAMP at 16 iterations (float64) on the suite's 250 x 500 / 1000 / 2000 i.i.d. (s = 50) and kappa = 15 / 100
(p = 0.1) problems at 40 and 20 dB, the problem's 10,000 test vectors, beside the support-oracle floor, AMP
(where it accepts the matrix; run anyway where it declines, with its divergence flag) and the issue's value
(``--test-size`` for fewer vectors on a busy machine).

``bound``: how close to the support oracle *any* estimator can get on the matrix suite's 40 dB (and 20 dB)
problems. For a right-rotationally invariant A (i.i.d., kappa, low-rank U V) VAMP's state evolution, iterated to
its fixed point, is the replica prediction of the MMSE (Rangan, Schniter & Fletcher 2019, Sec. V; proved for
these ensembles by Barbier et al. 2018, Reeves & Pfister 2016); the signals are drawn from the very prior it uses,
so no estimator, learned or not, has a lower expected aggregate NMSE. Beside it: SE at 16, VAMP at 16 and at
``--long`` iterations on the test prefix, and the oracle. For Toeplitz and the partial DCT (not right-rotationally
invariant) the SE column is only indicative.

``time``: seconds per 10,000 vectors of a K = 16 forward pass (float32, inference mode, best of ``--repeats``)
with one thread, then all cores, for VAMP, AMP, FISTA and the learned networks of the suite (untrained: a
trained network runs the same operations), on 250 x ``--n``.

    .venv/bin/python benchmarks/bench_vamp.py [check] [time] [bound] [--n 500] [--repeats 3] [--test-size 10000]
        [--long 200]

Prints tables and writes benchmarks/results/vamp.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from pathlib import Path

import torch

from unrolled import Problem, ProblemSpec, evaluation, metrics, solvers
from unrolled.io import write_text
from unrolled.models import build
from unrolled.models.amp import AMP
from unrolled.models.vamp import noise_variance, state_evolution, svd
from unrolled.repro import load

RESULTS = Path(__file__).parent / "results"
ISSUE = {("iid", 500, 40): -45.5, ("iid", 1000, 40): -45.4, ("iid", 2000, 40): -45.0, ("iid", 500, 20): -23.7,
         ("iid", 1000, 20): -23.1, ("iid", 2000, 20): -22.4, ("kappa15", 500, 40): -44.1,
         ("kappa100", 500, 40): -41.1}
LEARNED = ("alista", "na-alista", "lista-cpss", "lamp", "lvamp")


def check(test_size: int) -> list[dict]:
    rows = []
    for (kind, n, snr), issue in ISSUE.items():
        extra = {"iid": dict(p=50 / n), "kappa15": dict(p=0.1, kappa=15.0), "kappa100": dict(p=0.1, kappa=100.0)}[kind]
        problem = Problem(ProblemSpec(m=250, n=n, snr=snr, seed=0, test_size=test_size, **extra))
        x, y = problem.test(dtype=torch.float64)
        row = dict(matrix=kind, n=n, snr=snr, issue_vamp=issue, test_size=test_size)
        for name in ("vamp", "amp"):
            model = build(name, problem, {"K": 16}, torch.float64)
            with torch.inference_mode():
                row[name] = metrics.nmse_db(torch.cat([model(c) for c in y.split(2000)]), x)
            row[f"{name}_diverged"] = evaluation.divergence_note(model, y)
        row["amp_declined"] = AMP.skip(problem)[0]
        oracle = evaluation.oracle_rows(problem.A, x, y, snr)
        row["oracle"] = next(r["nmse_db"] for r in oracle if r["method"] == "oracle-mmse")
        row["diff"] = row["vamp"] - issue
        rows.append(row)
        print(f"{kind:<9} n={n:<5} {snr:>3} dB  VAMP {row['vamp']:7.2f} (issue {issue:6.1f}, diff {row['diff']:+.2f})"
              f"  AMP {row['amp']:7.2f}{' declined' if row['amp_declined'] else ''}"
              f"{' diverged ' + row['amp_diverged'] if row['amp_diverged'] else ''}  oracle {row['oracle']:7.2f}"
              f"{'  VAMP diverged ' + row['vamp_diverged'] if row['vamp_diverged'] else ''}", flush=True)
    return rows


def fixed_point(s, n: int, sigma2: float, p: float, tol: float = 1e-6, most: int = 1000) -> tuple[float, int | None]:
    """VAMP's SE iterated ``most`` times: (its last MSE, the first iteration after which the MSE moves by less
    than ``tol`` relative, None if it still moves)."""
    mse = [m for _, m in state_evolution(s, n, sigma2, p, 1.0, most)]
    settled = next((t + 1 for t in range(1, most) if abs(mse[t] - mse[t - 1]) <= tol * mse[t]), None)
    return mse[-1], settled


def bound(test_size: int, long: int) -> list[dict]:
    exp = load("matrix-suite")
    rows, db = [], lambda mse, energy: 10 * math.log10(mse / energy)
    for cell in exp.cells(exp.budget("quick")):
        spec = dataclasses.replace(cell.spec, test_size=test_size)
        problem = Problem(spec)
        x, y = problem.test(dtype=torch.float64)
        energy = float((x * x).sum()) / x.numel()
        sigma2, sv = float(noise_variance(y, spec.snr, spec.n).mean()), svd(problem)[1]
        row = dict(matrix=cell.tags["row"], n=spec.n, snr=spec.snr, test_size=test_size, p=spec.p,
                   rotationally_invariant=spec.matrix in ("gaussian", "lowrank"))
        row["se_16"] = db(state_evolution(sv, spec.n, sigma2, spec.p, 1.0, 16)[-1][1], energy)
        mse, its = fixed_point(sv, spec.n, sigma2, spec.p)
        row.update(se_fixed_point=db(mse, energy), se_iterations=its)
        for K in (16, long):
            model = build("vamp", problem, {"K": K}, torch.float64)
            with torch.inference_mode():
                row[f"vamp_{K}"] = metrics.nmse_db(torch.cat([model(c) for c in y.split(1000)]), x)
        oracle = evaluation.oracle_rows(problem.A, x, y, spec.snr)
        row["oracle"] = next(r["nmse_db"] for r in oracle if r["method"] == "oracle-mmse")
        row["mmse_minus_oracle"] = row["se_fixed_point"] - row["oracle"]
        rows.append(row)
        print(f"{row['matrix']:<13} {spec.snr:>3g} dB  SE@16 {row['se_16']:7.2f}  SE fixed point "
              f"{row['se_fixed_point']:7.2f} (settled at {its})  VAMP@16 {row['vamp_16']:7.2f}  "
              f"VAMP@{long} {row[f'vamp_{long}']:7.2f}  oracle "
              f"{row['oracle']:7.2f}  MMSE - oracle {row['mmse_minus_oracle']:+.2f}"
              f"{'' if row['rotationally_invariant'] else '  (SE indicative only)'}", flush=True)
    return rows


def seconds(fn, y: torch.Tensor, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        with torch.inference_mode():
            fn(y)
        best = min(best, time.perf_counter() - t)
    return best * 10000 / y.shape[0]


def timing(n: int, repeats: int) -> list[dict]:
    problem = Problem(ProblemSpec(m=250, n=n, p=50 / n, snr=40.0, seed=0, test_size=10000))
    _, y = problem.test(dtype=torch.float32)
    A32 = problem.A.float()
    runs = {name: build(name, problem, {"K": 16}, torch.float32) for name in ("vamp", "amp", *LEARNED)}
    calls = {name: model for name, model in runs.items()}
    calls["fista"] = lambda yc: solvers.final(solvers.fista(A32, yc, 0.05, 16, problem.L))
    rows = []
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        for name, fn in calls.items():
            s = seconds(fn, y, repeats)
            rows.append(dict(method=name, n=n, threads=threads, seconds_per_10000=s))
            print(f"{name:<11} n={n} threads={threads}: {s:.3f} s per 10,000 vectors", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="*", default=["check", "time"], choices=["check", "time", "bound"])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--test-size", type=int, default=10000, help="check, bound: test vectors per problem")
    ap.add_argument("--long", type=int, default=200, help="bound: VAMP's long run, iterations")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = RESULTS / "vamp.json"
    result = json.loads(out.read_text()) if out.exists() else {}
    result.update(cores=os.cpu_count(), torch=torch.__version__, load_average_at_start=list(os.getloadavg()))
    if "check" in a.what:
        result["check"] = check(a.test_size)
    if "bound" in a.what:
        result["bound"] = bound(a.test_size, a.long)
    if "time" in a.what:
        result[f"time_n{a.n}"] = timing(a.n, a.repeats)
    write_text(out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
