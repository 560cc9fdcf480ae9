"""Command line: ``unrolled <command> ...`` (also ``python -m unrolled``).

Every command has ``--help``; bad input ends with one line ``error: ...`` and exit code 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from . import evaluate as E
from .cpu import keep_freed_memory
from .errors import UsageError, check, choice
from .problem import MATRICES, SIGNALS, TEST_NOISES, Problem, ProblemSpec, _stream


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2)."""

    def error(self, message: str):  # noqa: D102
        raise UsageError(f"{self.prog}: {message}")


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be >= 1")
    return v


def number(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
    if math.isnan(v):
        raise argparse.ArgumentTypeError("NaN is not allowed")
    return v


def snr_value(s: str) -> float:
    v = number(s)
    if v == -math.inf:
        raise argparse.ArgumentTypeError("-inf dB is not a signal-to-noise ratio; use a number of dB or inf")
    return v


def lam_value(s: str) -> float | str:
    if s == "auto":
        return s
    v = number(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"lambda {v} must be >= 0 or 'auto'")
    return v


def device_arg(s: str) -> torch.device:
    try:
        dev = torch.device(s)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown device {s!r}; valid: cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError("--device cuda requested but PyTorch sees no CUDA device; use --device cpu")
    return dev


# -- problem ----------------------------------------------------------------------------------


def add_problem_options(p: argparse.ArgumentParser) -> None:
    d = ProblemSpec()
    p.add_argument("--m", type=positive_int, default=None, help=f"measurements (default {d.m})")
    p.add_argument("--n", type=positive_int, default=None, help=f"signal length (default {d.n})")
    p.add_argument("--p", type=number, default=None, help="probability of a non-zero entry (default 0.1, or s/n)")
    p.add_argument("--s", type=number, default=None, help="expected non-zeros per signal (sets p = s/n)")
    p.add_argument("--snr", type=snr_value, default=d.snr, help="training/validation SNR in dB; inf = noiseless")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--matrix", choices=MATRICES, default=d.matrix)
    p.add_argument("--kappa", type=number, default=None, help="condition number of A (SPEC §2)")
    p.add_argument("--rank", type=positive_int, default=None, help="inner dimension r of a low-rank A = U V")
    p.add_argument("--a-file", default=None, help="load A from .npy, .npz or .mat (key D or A)")
    p.add_argument("--signal", choices=SIGNALS, default=d.signal)
    p.add_argument("--gamma-shape", type=number, default=d.gamma_shape)
    p.add_argument("--gamma-rate", type=number, default=d.gamma_rate)
    p.add_argument("--test-noise", choices=TEST_NOISES, default=d.test_noise)
    p.add_argument("--test-snr", type=snr_value, default=None, help="test-set SNR if it differs from --snr")
    p.add_argument("--sp-density", type=number, default=d.sp_density, help="salt-and-pepper density")
    p.add_argument("--test-perturb", type=number, default=d.test_perturb,
                   help="Laplace scale of a test-only perturbation of A (0 = none)")
    p.add_argument("--val-size", type=positive_int, default=d.val_size)
    p.add_argument("--test-size", type=positive_int, default=d.test_size)


def spec_from_args(a: argparse.Namespace) -> ProblemSpec:
    d = ProblemSpec()
    m, n = a.m or d.m, a.n or d.n
    matrix = a.matrix
    if a.a_file:
        from .io import load_matrix

        A = load_matrix(a.a_file)
        for name, given, found in (("--m", a.m, A.shape[0]), ("--n", a.n, A.shape[1])):
            check(given in (None, found), f"{name} {given} contradicts {a.a_file} ({A.shape[0]}x{A.shape[1]}); "
                                          f"drop {name}")
        m, n = A.shape
        matrix = "file"
    check(a.p is None or a.s is None, "give --p or --s, not both")
    p = a.s / n if a.s is not None else (0.1 if a.p is None else a.p)
    return ProblemSpec(m=m, n=n, p=p, snr=a.snr, seed=a.seed, matrix=matrix, kappa=a.kappa, rank=a.rank,
                       a_file=str(Path(a.a_file).resolve()) if a.a_file else None, signal=a.signal,
                       gamma_shape=a.gamma_shape, gamma_rate=a.gamma_rate, test_noise=a.test_noise,
                       test_snr=a.test_snr, sp_density=a.sp_density, test_perturb=a.test_perturb,
                       val_size=a.val_size, test_size=a.test_size)


def cmd_problem_create(a: argparse.Namespace) -> None:
    problem = Problem(spec_from_args(a))
    path = problem.save(a.out)
    s = problem.spec
    print(f"wrote {path}: A {s.m}x{s.n} ({s.matrix}), p={s.p:.4g} (s={s.sparsity:.1f}), snr={s.snr} dB, "
          f"L={problem.L:.4f}, seed={s.seed}")


def load_test(problem: Problem, a: argparse.Namespace, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """The test set: the problem's own, or signals from ``--test-x`` measured at the test SNR."""
    snr = getattr(a, "snr", None)
    if getattr(a, "test_x", None):
        from .io import load_signals

        x = torch.from_numpy(load_signals(a.test_x, problem.n))
        if a.test_size:
            x = x[: a.test_size]
        g = _stream(problem.spec.seed, 2)
        snr = problem.spec.test_snr if snr is None else snr
        y = problem.measure(x, g, snr, noise=problem.spec.test_noise, A=problem.test_matrix())
        return x.to(dtype), y.to(dtype)
    return problem.test(a.test_size, dtype, snr)


def test_snr(problem: Problem, a: argparse.Namespace) -> float:
    snr = getattr(a, "snr", None)
    if snr is not None:
        return snr
    return problem.spec.snr if problem.spec.test_snr is None else problem.spec.test_snr


# -- weights and solve ------------------------------------------------------------------------


def cmd_weights(a: argparse.Namespace) -> None:
    from .analytic import analytic_weights, coherence

    problem = Problem.load(a.problem)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = analytic_weights(problem.A, a.method)
    for w in caught:
        print(f"note: {w.message}")
    print(f"method        {res.method}" + (f" ({res.iterations} iterations)" if res.method == "pgd" else ""))
    print(f"objective     {res.objective:.6f}   (sum_{{i!=j}} (w_i^T a_j)^2)")
    print(f"coherence     {res.coherence:.4f}     (max_{{i!=j}} |w_i^T a_j|; A itself: "
          f"{coherence(problem.A, problem.A):.4f})")
    print(f"rank          {res.rank} of m={problem.m}")
    print(f"time          {res.seconds:.3f} s")
    if a.out:
        from .io import atomic_write

        atomic_write(a.out, lambda f: np.save(f, res.W.numpy()))
        print(f"wrote {a.out}")


def cmd_solve(a: argparse.Namespace) -> None:
    from . import solvers

    problem = Problem.load(a.problem)
    algos = [s.strip() for s in a.algo.split(",")]
    for algo in algos:
        choice(algo, [*solvers.SOLVERS, *E.FIXED_NETWORKS], "algorithm")
    if "amp" in algos:
        check(E.amp_applies(problem.spec), f"amp needs signals with zeros (this problem's are {problem.spec.signal}, "
              f"p={problem.spec.p}); drop amp from --algo")
    x, y = load_test(problem, a)
    t0 = time.perf_counter()
    rows = E.baseline_rows(problem, x, y, a.iters, algos, a.lam, a.tune_size)
    seconds = time.perf_counter() - t0
    rows += E.oracle_rows(problem.A, x, y, test_snr(problem, a))
    for algo in algos:
        lam = next((r["lam"] for r in rows if r["method"] == algo and "lam" in r), None)
        if lam is not None:
            print(f"{algo}: lambda = {lam:.4g}" + (" (tuned on the validation set)" if a.lam == "auto" else ""))
    print(f"test set: {len(x)} signals; {seconds:.1f} s for tuning and solving")
    print(E.format_table(rows))
    out = a.out or f"{Path(a.problem).stem}-solve.csv"
    E.to_csv(rows, out, meta=dict(problem=str(a.problem), iters=a.iters, test_size=len(x)))
    print(f"wrote {out}")


def cmd_list(a: argparse.Namespace) -> None:
    from .models import MODELS, config_fields

    for name in sorted(MODELS):
        cls = MODELS[name]
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{name:<12} {doc}")
        fields = ", ".join(f"{k}={v!r}" for k, v in config_fields(cls.Config).items())
        print(f"{'':<12} {fields}")


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> Parser:
    parser = Parser(prog="unrolled", description="Learned sparse recovery: problems, solvers, unrolled networks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    pp = sub.add_parser("problem", help="create problems")
    psub = pp.add_subparsers(dest="action", required=True, parser_class=Parser)
    pc = psub.add_parser("create", help="generate a seeded problem and save it to one .npz file")
    pc.add_argument("out", help="output file (.npz)")
    add_problem_options(pc)
    pc.set_defaults(func=cmd_problem_create)

    pw = sub.add_parser("weights", help="analytic W of ALISTA: objective, coherence, time")
    pw.add_argument("problem")
    pw.add_argument("--method", choices=["closed-form", "pgd"], default="closed-form")
    pw.add_argument("--out", help="write W (m x n) to this .npy file")
    pw.set_defaults(func=cmd_weights)

    ps = sub.add_parser("solve", help="classical solvers: per-iteration NMSE table and CSV")
    ps.add_argument("problem")
    ps.add_argument("--algo", default="ista,fista", help="ista, fista, oista, ista-bt, amp (comma-separated)")
    ps.add_argument("--iters", type=positive_int, default=16)
    ps.add_argument("--lam", type=lam_value, default="auto", help="'auto' (tuned on validation) or a value")
    ps.add_argument("--tune-size", type=positive_int, default=1000, help="validation signals used to tune lambda")
    add_test_options(ps)
    ps.add_argument("--out", help="CSV file (default <problem>-solve.csv)")
    ps.set_defaults(func=cmd_solve)

    pl = sub.add_parser("list", help="every model with its config fields and defaults")
    pl.set_defaults(func=cmd_list)

    from . import commands

    commands.add_commands(sub)
    return parser


def add_test_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-x", help="test signals (.npy/.npz/.mat), samples x n or n x samples")
    p.add_argument("--test-size", type=positive_int, default=None, help="use the first N test signals")
    p.add_argument("--snr", type=snr_value, default=None, help="test SNR in dB (default: the problem's)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        keep_freed_memory()  # large batches: no page faults for every temporary (unrolled/cpu.py)
        args.func(args)
    except UsageError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `unrolled list | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0

