"""Commands without training: ``problem create``, ``weights``, ``solve`` and ``list``."""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from pathlib import Path

from .. import evaluation as E
from ..analytic import METHODS
from ..errors import check, choice
from ..io import check_writable, load_matrix, save_array
from ..problem import Problem, check_memory
from .args import Parser, add_problem_options, add_test_options, lam_value, positive_int, spec_from_args


def cmd_problem_create(a: argparse.Namespace) -> None:
    check_writable(a.out, "problem file")
    check(a.a_key is None or a.a_file, "--a-key names the matrix inside --a-file; give --a-file too")
    spec = spec_from_args(a)
    problem = Problem(spec, load_matrix(a.a_file, a.a_key) if a.a_file else None)
    path = problem.save(a.out)
    s = problem.spec
    print(f"wrote {path}: A {s.m}x{s.n} ({s.matrix}), p={s.p:.4g} (s={s.sparsity:.1f}), snr={s.snr} dB, "
          f"L={problem.L:.4f}, seed={s.seed}")


def cmd_weights(a: argparse.Namespace) -> None:
    from ..analytic import analytic_weights, coherence

    problem = Problem.load(a.problem)
    if a.out:
        check_writable(a.out)
        check(Path(a.out).suffix.lower() in (".npy", ".npz", ".mat"), f"--out {a.out} must end in .npy, .npz or .mat")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = analytic_weights(problem.A, a.method)
    for w in caught:
        print(f"note: {w.message}")
    print(f"method        {res.method}" + (f" ({res.iterations} iterations)" if res.method == "pgd" else ""))
    print(f"objective     {res.objective:.6f}   (sum_{{i!=j}} (w_i^T a_j)^2)")
    print(f"coherence     {res.coherence:.4f}     (max_{{i!=j}} |w_i^T a_j|; A itself: "
          f"{coherence(unit := problem.A / problem.A.norm(dim=0), unit):.4f})")
    print(f"rank          {res.rank} of m={problem.m}")
    print(f"time          {res.seconds:.3f} s")
    if a.out:
        path = save_array(a.out, res.W.numpy(), "W")
        print(f"wrote {path}" + (" (variable W)" if path.suffix.lower() in (".mat", ".npz") else ""))


def cmd_solve(a: argparse.Namespace) -> None:
    from .. import solvers
    from ..models import MODELS

    problem = Problem.load(a.problem)
    out = check_writable(a.out or f"{Path(a.problem).stem}-solve.csv")
    algos = [s.strip() for s in a.algo.split(",")]
    for algo in algos:
        choice(algo, [*solvers.SOLVERS, *E.FIXED_NETWORKS, *E.baselines.NAMES], "algorithm")
    for algo in (a for a in algos if a in E.FIXED_NETWORKS):
        declined, reason = MODELS[algo].skip(problem)
        check(not declined, f"{algo} cannot serve this problem: {reason}; drop {algo} from --algo")
    x, y = E.evaluation_set(problem, "test", a.test_x, a.test_size, a.snr)
    # iterates stream into per-iteration sums (evaluation.LayerStats): a chunk of estimates and its
    # temporaries at a time, plus one table row per iteration and method (about 1 KiB each)
    chunk = min(len(x), E.CHUNK)
    check_memory(8 * 8 * chunk * problem.n + 1024 * (a.iters + 1) * (len(algos) + 1),
                 f"--iters {a.iters:,} on {len(x):,} test signals",
                 f"{a.iters + 1:,} table rows per method, chunks of {chunk:,} x {problem.n:,} estimates")
    t0 = time.perf_counter()
    rows = E.baseline_rows(problem, x, y, a.iters, algos, a.lam, a.tune_size)
    seconds = time.perf_counter() - t0
    rows += E.oracle_rows(problem.A, x, y, E.evaluation_snr(problem, a.snr))
    for algo in algos:
        lam = next((r["lam"] for r in rows if r["method"] == algo and "lam" in r), None)
        if lam is not None:
            print(f"{algo}: lambda = {lam:.4g}" + (" (tuned on the validation set)" if a.lam == "auto" else ""))
        s = next((r["s"] for r in rows if r["method"] == algo and "s" in r), None)
        if s is not None:
            print(f"{algo}: s = {s} non-zeros (tuned on the validation set)")
    print(f"test set: {len(x)} signals; {seconds:.1f} s for tuning and solving")
    print(E.format_table(rows))
    E.to_csv(rows, out, meta=dict(problem=str(a.problem), iters=a.iters, test_size=len(x)))
    print(f"wrote {out}")


def cmd_list(a: argparse.Namespace) -> None:
    from ..models import MODELS

    for name in sorted(MODELS):
        cls = MODELS[name]
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:<12} {doc}")
        print(f"{'':<12} {', '.join(f'{k}={v!r}' for k, v in settable(cls.Config()).items())}")


def settable(config) -> dict:
    """A config's fields as ``--set`` keys: a nested config (support selection) as ``ss=MODE, ss.FIELD``."""
    out = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and "mode" in (inner := dataclasses.asdict(value)):
            out[f.name] = inner.pop("mode")
            out.update({f"{f.name}.{k}": v for k, v in inner.items()})
        else:
            out[f.name] = value
    return out


def add_commands(sub: argparse._SubParsersAction) -> None:
    pp = sub.add_parser("problem", help="create problems")
    psub = pp.add_subparsers(dest="action", required=True, parser_class=Parser)
    pc = psub.add_parser("create", help="generate a seeded problem and save it to one .npz file")
    pc.add_argument("out", help="output file (.npz)")
    add_problem_options(pc)
    pc.add_argument("--a-key", metavar="NAME", default=None,
                    help="the matrix's variable name inside an --a-file .mat/.npz (default D or A, or its only array)")
    pc.set_defaults(func=cmd_problem_create)

    pw = sub.add_parser("weights", help="analytic W of ALISTA: objective, coherence, time")
    pw.add_argument("problem")
    pw.add_argument("--method", choices=METHODS, default="closed-form")
    pw.add_argument("--out", help="write W (m x n): .npy, .npz or .mat (scipy.io.savemat, variable W)")
    pw.set_defaults(func=cmd_weights)

    ps = sub.add_parser("solve", help="classical solvers: per-iteration NMSE table and CSV")
    ps.add_argument("problem")
    ps.add_argument("--algo", default="ista,fista", help="ista, fista, oista, ista-bt, amp, vamp, "
                    "omp, iht, cosamp, lasso-cd (comma-separated)")
    ps.add_argument("--iters", type=positive_int, default=16)
    ps.add_argument("--lam", type=lam_value, default="auto", help="'auto' (tuned on validation) or a value")
    ps.add_argument("--tune-size", type=positive_int, default=1000, help="validation signals used to tune lambda")
    add_test_options(ps)
    ps.add_argument("--out", help="CSV file (default <problem>-solve.csv)")
    ps.set_defaults(func=cmd_solve)

    pl = sub.add_parser("list", help="every model with its config fields and defaults")
    pl.set_defaults(func=cmd_list)
