"""Analytic W of ALISTA (docs/spec.md §4): closed form against the reference projected gradient.

For m = 250 and n in {500, 1000, 2000} (unit-norm Gaussian A, seed 0): closed-form time
(best of 5), PGD time and iterations (step 0.1, <= 1000 iterations, stop at relative
change < 1e-12, as ALISTA's CalculateW.m), both objectives
``sum_{i != j} (w_i^T a_j)^2`` with their relative difference, and the generalised
coherences ``max_{i != j} |w_i^T a_j|`` next to A's own.

    .venv/bin/python benchmarks/bench_analytic.py [--n 500,1000,2000] [--threads 1]

Prints a table and writes benchmarks/results/analytic.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from unrolled import Problem, ProblemSpec
from unrolled.analytic import closed_form, coherence, objective, projected_gradient
from unrolled.io import write_text

RESULTS = Path(__file__).parent / "results"


def machine(threads: int) -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?") \
        if Path("/proc/cpuinfo").exists() else platform.processor()
    return dict(cpu=cpu, cores=os.cpu_count(), torch_threads=threads, torch=torch.__version__,
                python=platform.python_version(), load_average_at_start=list(os.getloadavg()))


def bench(m: int, n: int, seed: int, repeats: int) -> dict:
    A = Problem(ProblemSpec(m=m, n=n, p=min(1.0, 50 / n), seed=seed)).A
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        W_cf, rank = closed_form(A)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    W_pg, iters = projected_gradient(A)
    pgd_s = time.perf_counter() - t
    f_cf, f_pg = objective(W_cf, A), objective(W_pg, A)
    return dict(m=m, n=n, seed=seed, rank=rank, closed_form_s=min(times), pgd_s=pgd_s, pgd_iterations=iters,
                objective_closed_form=f_cf, objective_pgd=f_pg, rel_objective_diff=(f_pg - f_cf) / f_cf,
                coherence_A=coherence(A, A), coherence_closed_form=coherence(W_cf, A),
                coherence_pgd=coherence(W_pg, A),
                constraint_err=float((torch.diagonal(W_cf.T @ A) - 1).abs().max()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--m", type=int, default=250)
    ap.add_argument("--n", default="500,1000,2000", help="comma-separated signal lengths")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=5, help="closed-form timing: best of this many")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: no spin-wait on a busy box)")
    ap.add_argument("--out", default=str(RESULTS / "analytic.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    info = machine(a.threads)
    rows = []
    for n in (int(v) for v in a.n.split(",")):
        rows.append(bench(a.m, n, a.seed, a.repeats))
        r = rows[-1]
        print(f"done {a.m}x{n}: closed form {r['closed_form_s']:.3f} s, PGD {r['pgd_s']:.1f} s", flush=True)
    print()
    print(f"{'A':>9} {'closed form':>12} {'PGD':>9} {'PGD iters':>9} {'objective CF':>13} {'objective PGD':>14} "
          f"{'rel. diff':>10} {'coh(A)':>7} {'coh CF':>7} {'coh PGD':>7}")
    for r in rows:
        print(f"{r['m']}x{r['n']:<5} {r['closed_form_s']:>10.3f} s {r['pgd_s']:>7.1f} s {r['pgd_iterations']:>9} "
              f"{r['objective_closed_form']:>13.3f} {r['objective_pgd']:>14.3f} {r['rel_objective_diff']:>10.2e} "
              f"{r['coherence_A']:>7.4f} {r['coherence_closed_form']:>7.4f} {r['coherence_pgd']:>7.4f}")
    print(f"\nmachine: {info}")
    write_text(a.out, json.dumps(dict(machine=info, args=vars(a), rows=rows), indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
