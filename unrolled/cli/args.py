"""Argument types and option groups shared by the commands."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from ..errors import UsageError, check
from ..problem import MATRICES, SIGNALS, TEST_NOISES, ProblemSpec


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every default that is a value (not an unset ``None`` or a flag's ``False``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in (action.help or "") \
                or "default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2) and defaults shown in ``--help``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # noqa: D102
        raise UsageError(f"{self.prog}: {message}")


def integer(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not an integer") from None


def positive_int(s: str) -> int:
    v = integer(s)
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


def finite(s: str) -> float:
    v = number(s)
    if math.isinf(v):
        raise argparse.ArgumentTypeError(f"{s} is not a finite number")
    return v


def positive(s: str) -> float:
    v = finite(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{v} must be > 0")
    return v


def seed_int(s: str) -> int:
    v = integer(s)
    if not 0 <= v < 2**63:
        raise argparse.ArgumentTypeError(f"seed {v} must be in [0, 2^63)")
    return v


SNR_RANGE = (-100.0, 300.0)  # dB; beyond it the noise (or its absence) over- or underflows float64


def snr_value(s: str) -> float:
    v = number(s)
    if v == -math.inf:
        raise argparse.ArgumentTypeError("-inf dB is not a signal-to-noise ratio; use a number of dB or inf")
    if v != math.inf and not SNR_RANGE[0] <= v <= SNR_RANGE[1]:
        raise argparse.ArgumentTypeError(f"{v:g} dB must be in [{SNR_RANGE[0]:g}, {SNR_RANGE[1]:g}] or inf")
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


def parse_sets(items: list[str] | None) -> dict[str, str]:
    """``--set KEY=VALUE`` items as a dict of strings (the config coerces them to its types)."""
    out = {}
    for item in items or []:
        check("=" in item, f"--set {item!r} must look like key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def add_problem_options(p: argparse.ArgumentParser) -> None:
    d = ProblemSpec()
    p.add_argument("--m", type=positive_int, default=None, help=f"measurements (default {d.m})")
    p.add_argument("--n", type=positive_int, default=None, help=f"signal length (default {d.n})")
    p.add_argument("--p", type=finite, default=None, help="probability of a non-zero entry (default 0.1, or s/n)")
    p.add_argument("--s", type=finite, default=None, help="expected non-zeros per signal (sets p = s/n)")
    p.add_argument("--snr", type=snr_value, default=d.snr, help="training/validation SNR in dB; inf = noiseless")
    p.add_argument("--seed", type=seed_int, default=d.seed, help="seed of A, the validation and the test set")
    p.add_argument("--matrix", choices=MATRICES, default=d.matrix,
                   help="gaussian: i.i.d. N(0, 1/m); dct: m random rows of the orthonormal n x n DCT; toeplitz: "
                        "Gaussian with correlated columns (--rho); lowrank: U V of inner rank --rank; file: --a-file")
    p.add_argument("--kappa", type=positive, default=None, help="condition number of A (docs/spec.md §2)")
    p.add_argument("--rank", type=positive_int, default=None,
                   help="inner dimension r of a low-rank A = U V (default round(0.8 m))")
    p.add_argument("--rho", type=finite, default=None,
                   help="column correlation of --matrix toeplitz, in [0, 1) (default 0.9)")
    p.add_argument("--col-spread", type=finite, default=d.col_spread,
                   help="unnormalised columns: norms log-uniform in [1/S, S] before normalisation (1 = none)")
    p.add_argument("--raw-columns", action="store_true",
                   help="keep A's columns as given instead of normalising them (warns; ALISTA, AMP and the "
                        "initial thresholds assume unit-norm columns)")
    p.add_argument("--a-file", default=None, help="load A from .npy, .npz or .mat (key D or A); columns that are "
                   "not unit-norm are normalised (the scale is kept: estimates come back in your units)")
    p.add_argument("--signal", choices=SIGNALS, default=d.signal,
                   help="bernoulli: each entry non-zero with probability p, N(0, 1); fixed: exactly round(p n) "
                        "non-zeros; gamma: every entry Gamma(--gamma-shape, --gamma-rate), none zero")
    p.add_argument("--gamma-shape", type=positive, default=d.gamma_shape, help="shape of --signal gamma")
    p.add_argument("--gamma-rate", type=positive, default=d.gamma_rate, help="rate of --signal gamma")
    p.add_argument("--test-noise", choices=TEST_NOISES, default=d.test_noise,
                   help="noise of the test set: gaussian at --test-snr, or salt-and-pepper at --sp-density")
    p.add_argument("--test-snr", type=snr_value, default=None, help="test-set SNR if it differs from --snr")
    p.add_argument("--sp-density", type=finite, default=d.sp_density, help="salt-and-pepper density")
    p.add_argument("--test-perturb", type=finite, default=d.test_perturb,
                   help="Laplace scale of a test-only perturbation of A (0 = none)")
    p.add_argument("--val-size", type=positive_int, default=d.val_size,
                   help="validation signals (model selection and lambda tuning only)")
    p.add_argument("--test-size", type=positive_int, default=d.test_size, help="test signals (never used to select)")


def spec_from_args(a: argparse.Namespace) -> ProblemSpec:
    d = ProblemSpec()
    m, n = a.m or d.m, a.n or d.n
    matrix = a.matrix
    if a.a_file:
        from ..io import load_matrix

        A = load_matrix(a.a_file, getattr(a, "a_key", None))
        for name, given, found in (("--m", a.m, A.shape[0]), ("--n", a.n, A.shape[1])):
            check(given in (None, found), f"{name} {given} contradicts {a.a_file} ({A.shape[0]}x{A.shape[1]}); "
                                          f"drop {name}")
        m, n = A.shape
        matrix = "file"
    check(a.p is None or a.s is None, "give --p or --s, not both")
    if a.s is not None:
        check(0 < a.s <= n, f"--s {a.s:g} must be in (0, n={n}]: it is the expected number of non-zeros per "
                            f"signal, at most the signal length")
    p = a.s / n if a.s is not None else (0.1 if a.p is None else a.p)
    return ProblemSpec(m=m, n=n, p=p, snr=a.snr, seed=a.seed, matrix=matrix, kappa=a.kappa, rank=a.rank,
                       rho=a.rho, col_spread=a.col_spread, raw_columns=a.raw_columns,
                       a_file=str(Path(a.a_file).resolve()) if a.a_file else None, signal=a.signal,
                       gamma_shape=a.gamma_shape, gamma_rate=a.gamma_rate, test_noise=a.test_noise,
                       test_snr=a.test_snr, sp_density=a.sp_density, test_perturb=a.test_perturb,
                       val_size=a.val_size, test_size=a.test_size)


def add_test_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--test-x", help="test signals (.npy/.npz/.mat), samples x n or n x samples")
    p.add_argument("--test-size", type=positive_int, default=None, help="use the first N test signals")
    p.add_argument("--snr", type=snr_value, default=None, help="test SNR in dB (default: the problem's)")
