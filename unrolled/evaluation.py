"""Per-layer evaluation tables: learned models, classical baselines and the oracle floor.

Rows are long-format dicts (``method, layer, nmse_db, nmse_db_sample, fp, fn, f1``) so
plots and reports can be rebuilt from the table alone. Statistics accumulate over
chunks, so 10,000 test vectors never need all K iterates in memory at once. The Python
entry point is :func:`unrolled.evaluate`; this module holds the pieces it is made of.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor

from . import baselines, metrics, solvers
from .errors import check, choice
from .io import write_text
from .problem import Problem, _stream

FIELDS = ["method", "layer", "nmse_db", "nmse_db_sample", "fp", "fn", "f1"]
CHUNK = 2000  # test vectors evaluated together: one chunk of iterates in memory at a time


class LayerStats:
    """Running per-layer sums: squared error, energy, per-sample dB, support counts."""

    def __init__(self) -> None:
        self.err: list[float] = []
        self.energy = 0.0
        self.db_sum: list[float] = []
        self.sup: list[list[float]] = []
        self.over: list[int] = []  # per layer: test vectors whose own NMSE is above 0 dB (worse than x_hat = 0)
        self.count = 0
        self.kept = 0  # samples with x != 0, the ones the per-sample dB averages over

    def add(self, outputs: Iterable[Tensor], x: Tensor) -> None:
        x = x.double()
        energy = (x * x).sum(1)
        keep = energy > 0
        for k, xk in enumerate(outputs):
            e = ((xk.double() - x) ** 2).sum(1)
            s = metrics.support_stats(xk, x)
            sample_db = metrics.samples_db(e, energy)
            over = int((~(sample_db <= 0)).sum())  # NaN counts as above
            vals = [float(e.sum()), float(sample_db.sum()),
                    s["fp"] * len(x), s["fn"] * len(x), s["f1"] * len(x)]
            if k == len(self.err):
                self.err.append(0.0)
                self.db_sum.append(0.0)
                self.sup.append([0.0, 0.0, 0.0])
                self.over.append(0)
            self.over[k] += over
            self.err[k] += vals[0]
            self.db_sum[k] += vals[1]
            for j in range(3):
                self.sup[k][j] += vals[2 + j]
        self.energy += float(energy.sum())
        self.count += len(x)
        self.kept += int(keep.sum())

    def rows(self, method: str, **meta) -> list[dict]:
        n, kept = max(self.count, 1), max(self.kept, 1)
        return [dict(method=method, layer=k, nmse_db=metrics.db(self.err[k] / self.energy),
                     nmse_db_sample=self.db_sum[k] / kept, fp=self.sup[k][0] / n, fn=self.sup[k][1] / n,
                     f1=self.sup[k][2] / n, over_0db=self.over[k], **meta) for k in range(len(self.err))]


def chunks(x: Tensor, y: Tensor, size: int) -> Iterator[tuple[Tensor, Tensor]]:
    for lo in range(0, x.shape[0], size):
        yield x[lo:lo + size], y[lo:lo + size]


def evaluate_layers(run: Callable[[Tensor], Iterable[Tensor]], x: Tensor, y: Tensor, method: str,
                    chunk: int = CHUNK, **meta) -> list[dict]:
    """Rows for every layer of ``run(y_chunk)`` (an iterable of ``x_0 .. x_K``)."""
    stats = LayerStats()
    with torch.inference_mode():
        for xc, yc in chunks(x, y, chunk):
            stats.add(run(yc), xc)
    return stats.rows(method, **meta)


def evaluate_model(model, x: Tensor, y: Tensor, method: str | None = None, chunk: int = CHUNK, **meta) -> list[dict]:
    """Per-layer rows of an :class:`~unrolled.models.UnrolledNet` on ``(x, y)``."""
    dev, dt = model.A.device, model.A.dtype
    return evaluate_layers(lambda yc: model.iterates(yc.to(dev, dt)), x, y, method or model.name, chunk, **meta)


FIXED_NETWORKS = ("amp", "vamp")  # untrained baselines that are registry models rather than Lasso solvers


def classical_rows(A: Tensor, x: Tensor, y: Tensor, x_val: Tensor, y_val: Tensor, iters: int,
                   algos: Iterable[str] = ("ista", "fista"), lam: float | str = "auto",
                   chunk: int = CHUNK) -> list[dict]:
    """Rows of classical solvers at depth ``iters``; ``lam='auto'`` tunes on the validation set."""
    rows = []
    L = solvers.lipschitz(A)
    for algo in algos:
        t0 = time.perf_counter()
        solver = solvers.get_solver(algo)
        lam_a = solvers.tune_lambda(algo, A, x_val, y_val, iters)[0] if lam == "auto" else float(lam)
        rows += evaluate_layers(lambda yc, s=solver, la=lam_a: s(A, yc, la, iters, L), x, y, algo, chunk,
                                lam=lam_a, solve_seconds=round(time.perf_counter() - t0, 3))
    return rows


def baseline_rows(problem, x: Tensor, y: Tensor, iters: int, names: Iterable[str] = ("ista", "fista", "amp"),
                  lam: float | str = "auto", tune_size: int = 1000) -> list[dict]:
    """Classical baselines at depth ``iters``: Lasso solvers (``lam`` tuned on the first
    ``tune_size`` validation vectors) and AMP with the problem's Bernoulli-Gaussian prior
    (skipped where the model declines the problem, e.g. signals without zeros)."""
    from .models import MODELS, build

    names = list(names)
    lasso = [a for a in names if a not in FIXED_NETWORKS and a not in baselines.NAMES]
    rows = []
    if lasso:
        xv, yv = problem.validation(torch.float64)
        rows = classical_rows(problem.A, x, y, xv[:tune_size], yv[:tune_size], iters, lasso, lam)
    for name in names:
        if name in FIXED_NETWORKS and not MODELS[name].skip(problem)[0]:
            t0 = time.perf_counter()
            model = build(name, problem, dict(K=iters), torch.float64)
            note = divergence_note(model, y)
            got = evaluate_model(model, x, y, solve_seconds=round(time.perf_counter() - t0, 3))
            rows += [{**r, "diverged": note} if note else r for r in got]
        if name in baselines.NAMES:  # OMP, IHT, CoSaMP per iteration; the converged Lasso as one row
            t0 = time.perf_counter()
            xv, yv = problem.validation(torch.float64)
            run, meta = baselines.prepare(name, problem.A, xv[:tune_size], yv[:tune_size], iters,
                                          problem.spec.sparsity)
            got = evaluate_layers(run, x, y, name, **meta)
            got = got if name in baselines.ITERATIVE else [{**got[0], "layer": "", "converged": True}]
            rows += [{**r, "solve_seconds": round(time.perf_counter() - t0, 3)} for r in got]
    return rows


def divergence_note(model, y: Tensor, chunk: int = 2000) -> str:
    """``"at iteration k (N of M signals)"`` where a model with ``diverged_at`` (AMP, VAMP) diverged on
    some of ``y`` (``k``: the median first iteration of those), ``""`` where it did not or cannot tell."""
    if not hasattr(model, "diverged_at"):
        return ""
    at = torch.cat([model.diverged_at(yc.to(model.A.dtype)) for yc in y.split(chunk)])
    bad = at[at > 0]
    return f"at iteration {int(bad.median())} ({len(bad)} of {len(at)} signals)" if len(bad) else ""


SPLITS = ("test", "validation")


def evaluation_set(problem: Problem, split: str = "test", test_x: str | None = None, size: int | None = None,
                   snr: float | None = None, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """``(x, y)`` to evaluate on: the problem's test set (its first ``size`` vectors, measured at
    ``snr`` if given), the signals of the file ``test_x`` measured with the problem's test matrix
    and noise, or (``split='validation'``, alone) its fixed validation set."""
    choice(split, SPLITS, "split")
    if split == "validation":
        check(not test_x and snr is None and size is None,
              "the validation split is the problem's own validation set; give no test_x, snr or size")
        return problem.validation(dtype)
    if test_x:
        from .io import load_signals

        # the file is in the user's units; the problem (and its model) in unit-norm-column units
        x = problem.from_user(torch.from_numpy(load_signals(test_x, problem.n)))
        if size:
            x = x[:size]
        y = problem.measure(x, _stream(problem.spec.seed, 2), evaluation_snr(problem, snr),
                            noise=problem.spec.test_noise, A=problem.test_matrix())
        return x.to(dtype), y.to(dtype)
    return problem.test(size, dtype, snr)


def evaluation_snr(problem: Problem, snr: float | None = None) -> float:
    """``snr`` if given, else the problem's test SNR (what the oracle floor assumes)."""
    if snr is not None:
        return snr
    return problem.spec.snr if problem.spec.test_snr is None else problem.spec.test_snr


def oracle_rows(A: Tensor, x: Tensor, y: Tensor, snr: float) -> list[dict]:
    """The support-oracle floor (no layer): least squares and MMSE on the true support.

    Defined only where every support's Gram matrix ``A_S^T A_S`` is well conditioned (condition
    number up to ``metrics.ORACLE_COND_MAX``); otherwise the rows say ``n/a`` (NMSE ``None``) and why.
    """
    cond = metrics.support_gram_condition(A, x)
    if cond > metrics.ORACLE_COND_MAX:
        reason = f"n/a: a support's Gram matrix A_S^T A_S is singular or ill-conditioned (condition {cond:.1e})"
        return [dict(method=name, layer="", nmse_db=None, nmse_db_sample=None, reason=reason)
                for name in ("oracle-ls", "oracle-mmse")]
    rows = []
    for name, est in metrics.oracle_estimates(A, x, y, snr).items():
        s = metrics.support_stats(est, x)
        rows.append(dict(method=name, layer="", nmse_db=metrics.nmse_db(est, x),
                         nmse_db_sample=metrics.nmse_db_per_sample(est, x), **s))
    return rows


def to_csv(rows: list[dict], path=None, meta: dict | None = None) -> str:
    """Long-format CSV (columns ``FIELDS`` first, then any extra keys, then ``meta``)."""
    meta = meta or {}
    keys = list(FIELDS)
    for r in rows:
        keys += [k for k in r if k not in keys]
    keys += [k for k in meta if k not in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({**meta, **r})
    if path is not None:
        write_text(path, buf.getvalue())
    return buf.getvalue()


def diverged_from(note: str) -> int | None:
    """The iteration a ``diverged`` note (:func:`divergence_note`) names, or ``None``."""
    import re

    found = re.search(r"at iteration (\d+)", note or "")
    return int(found.group(1)) if found else None


def format_table(rows: list[dict], metric: str = "nmse_db") -> str:
    """Layers down, methods across; the oracle floor and each method's gap to it below."""
    label = {"nmse_db": "aggregate NMSE (dB)", "nmse_db_sample": "mean per-sample NMSE (dB)"}[metric]
    methods = list(dict.fromkeys(r["method"] for r in rows if r["layer"] != ""))
    floors = {r["method"]: r[metric] for r in rows if r["layer"] == "" and not r.get("converged")}
    table = {(r["method"], r["layer"]): r[metric] for r in rows if r["layer"] != ""}
    depth = max((r["layer"] for r in rows if r["layer"] != ""), default=0)
    width = max([10] + [len(m) + 1 for m in methods])
    lines = [f"{label} per layer, over the test set",
             "layer" + "".join(f"{m:>{width}}" for m in methods)]
    notes = {m: next((r["diverged"] for r in rows if r["method"] == m and r.get("diverged")), "") for m in methods}
    since = {m: diverged_from(note) for m, note in notes.items()}  # a blown-up method shows no number from there

    def cell(m: str, k: int) -> str:
        c = table.get((m, k))
        if c is None:
            return f"{'':>{width}}"
        return f"{'diverged':>{width}}" if since[m] is not None and k >= since[m] else f"{c:>{width}.2f}"

    for k in range(depth + 1):
        lines.append(f"{k:>5}" + "".join(cell(m, k) for m in methods))
    for m in methods:
        if notes[m]:
            lines.append(f"{m}: diverged {notes[m]}")
    over = {m: r["over_0db"] for r in rows if "over_0db" in r and r["layer"] != ""
            for m in [r["method"]] if r["layer"] == max(k for (mm, k) in table if mm == m)}
    if over:
        lines.append("test vectors above 0 dB at the final layer: " + ", ".join(f"{m} {v}" for m, v in over.items()))
    for r in (r for r in rows if r.get("converged")):
        lam = f" (lambda {r['lam']:.4g})" if "lam" in r else ""
        lines.append(f"converged {r['method']}: {r[metric]:.2f} dB{lam}")
    times = {r["method"]: r["solve_seconds"] for r in rows if "solve_seconds" in r}
    if times:
        lines.append("time (tuning and solving): " + ", ".join(f"{m} {t:.2f} s" for m, t in times.items()))
    undefined = [r.get("reason", "n/a") for r in rows if r["layer"] == "" and r[metric] is None]
    if undefined:
        lines.append(f"floor: {undefined[0]}")
    elif floors:
        name, floor = next(iter(floors.items()))
        lines.append("floor: " + ", ".join(f"{k} {v:.2f} dB" for k, v in floors.items()))
        last = {m: max(k for (mm, k) in table if mm == m) for m in methods}
        gaps = "".join(f"{'diverged':>{width}}" if since[m] is not None and last[m] >= since[m]
                       else f"{table[(m, last[m])] - floor:>{width}.2f}" for m in methods)
        lines.append(f"{'gap':>5}" + gaps + f"   (final layer minus {name})")
    return "\n".join(lines)
