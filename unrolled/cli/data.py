"""Your own data on the command line: training files (options of ``train``), ``predict`` and ``plot``."""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import torch

from .. import api
from ..errors import UsageError, check
from ..io import check_writable, read_vectors, save_array
from ..training.data import DataSpec
from .args import device_arg, positive, positive_int

SETTINGS = ("pool", "train_x", "train_y", "val_x", "val_y", "val_fraction")  # what --resume may not change


def add_data_options(p: argparse.ArgumentParser) -> tuple[str, ...]:
    """``train``'s options for a finite training pool; returns their destinations."""
    g = p.add_argument_group("training data (default: fresh samples from the problem every step)")
    g.add_argument("--train-x", metavar="FILE", help="training signals (.npy/.npz/.mat, samples x n or n x samples; "
                   "in the units of your matrix): a finite pool, measured once with the problem's SNR unless "
                   "--train-y gives the measurements")
    g.add_argument("--train-y", metavar="FILE", help="training measurements (samples x m or m x samples); alone, "
                   "without --train-x: unsupervised training with --loss lasso (validated on the Lasso objective)")
    g.add_argument("--val-x", metavar="FILE", help="validation signals (default: split off the training pool)")
    g.add_argument("--val-y", metavar="FILE", help="validation measurements (with --val-x, or alone with --train-y)")
    g.add_argument("--val-fraction", type=positive, default=None, metavar="F",
                   help="share of the pool held out for validation, by a seeded permutation (default 0.1 for "
                        "files; a --pool validates on the problem's own validation set)")
    g.add_argument("--pool", type=positive_int, default=None, metavar="N",
                   help="train on a fixed pool of N samples generated from the problem, reshuffled every epoch")
    return SETTINGS


def data_spec(a: argparse.Namespace) -> DataSpec | None:
    """The :class:`DataSpec` of ``train``'s options, or ``None`` (fresh samples)."""
    spec = DataSpec(pool=a.pool or 0, train_x=a.train_x, train_y=a.train_y, val_x=a.val_x, val_y=a.val_y,
                    val_fraction=a.val_fraction)
    return None if spec.fresh else spec


def eval_tags(a: argparse.Namespace) -> dict[str, str]:
    """What makes an ``eval``'s data differ from the problem's test set, for its default file name
    (``--test-size N`` evaluates a prefix of the same test set and keeps ``eval.csv``)."""
    tags = {"test-x": Path(a.test_x).stem} if a.test_x else {}
    return tags | ({"snr": f"{a.snr:g}"} if a.snr is not None else {})


# -- predict ---------------------------------------------------------------------------------------


def cmd_predict(a: argparse.Namespace) -> None:
    out = check_writable(a.out, "output file")
    check(out.suffix.lower() in (".npy", ".npz", ".mat"), f"--out {out} must end in .npy, .npz or .mat")
    run = api.load(a.run, a.device)  # weights, problem and config checked against their SHA-256
    y, columns = read_vectors(a.y, run.model.m, "measurement", a.key)
    x_hat = run.predict(y)
    x_hat = x_hat.T if columns else x_hat  # the file's orientation out
    path = save_array(out, x_hat, a.out_key)
    shape = "x".join(map(str, x_hat.shape))
    units = "; mapped to your matrix's units (column scaling)" if getattr(run.problem, "scale", None) is not None \
        else ""
    print(f"{a.run}: {run.config['model']} (K={run.model.K}) on {len(y):,} measurement vectors from {a.y}{units}")
    print(f"wrote {path}: x_hat {shape} ({'n x samples' if columns else 'samples x n'}, as {a.y})")


# -- plot ------------------------------------------------------------------------------------------


def _csv_rows(path: Path) -> list[dict]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise UsageError(f"cannot read {path}: {e}") from None
    need = {"method", "layer", "nmse_db"}
    check(rows and need <= set(rows[0]), f"{path} is not a results CSV of `unrolled eval` or `solve` "
                                         f"(it needs columns {', '.join(sorted(need))})")
    kept = []
    for r in rows:
        try:
            if math.isfinite(float(r["nmse_db"])) and (r["layer"] == "" or int(r["layer"]) >= 0):
                kept.append(r)
        except ValueError:  # a diverged or undefined entry: shown in the tables, not drawn
            continue
    check(kept, f"{path} has no finite NMSE to draw")
    return kept


def _metrics(run: Path) -> tuple[list[dict], str]:
    from ..training import RunDir

    rd = RunDir(run)
    cfg = rd.read_config()
    check(rd.metrics_file.is_file(), f"{run} has no metrics.jsonl yet (no validation has run)")
    rows = []
    for i, line in enumerate(rd.metrics_file.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UsageError(f"{rd.metrics_file}, line {i}, is not JSON; it was edited or damaged") from None
        if "val" in row:
            rows.append(row)
    check(rows, f"{rd.metrics_file} has no validation rows yet")
    lasso = cfg.get("options", {}).get("loss") == "lasso"
    return rows, "validation Lasso objective" if lasso else "validation NMSE (dB)"


def cmd_plot(a: argparse.Namespace) -> None:
    from .. import plots

    out = check_writable(a.out, "figure")
    check(out.suffix.lower() in (".png", ".pdf", ".svg"), f"--out {out} must end in .png, .pdf or .svg")
    source = Path(a.source)
    check(source.exists(), f"{source} does not exist; give a results CSV or a run directory")
    if source.is_dir():
        rows, label = _metrics(source)
        plots.plot_training(rows, out, title=a.title or str(source), ylabel=label)
        print(f"wrote {out}: training curves of {source} ({len(rows)} validations)")
    else:
        rows = _csv_rows(source)
        plots.plot_layers(rows, out, title=a.title or str(source), metric=a.metric)
        methods = sorted({r["method"] for r in rows})
        print(f"wrote {out}: NMSE per layer of {', '.join(methods)} from {source}")


def add_commands(sub: argparse._SubParsersAction) -> None:
    pp = sub.add_parser("predict", help="reconstruct x_hat from measured y with a trained run; writes .npy/.mat")
    pp.add_argument("run", help="a finished run directory")
    pp.add_argument("--y", required=True, metavar="FILE",
                    help="measurements (.npy/.npz/.mat), samples x m or m x samples; x_hat keeps the orientation")
    pp.add_argument("--key", default=None, metavar="NAME",
                    help="array name inside an .npz/.mat file (default y or Y, or the only one)")
    pp.add_argument("--out", required=True, metavar="XHAT", help="output: .npy, .npz or .mat (scipy.io.savemat)")
    pp.add_argument("--out-key", default="x_hat", metavar="NAME",
                    help="variable name in an .npz/.mat output (default %(default)s)")
    pp.add_argument("--device", type=device_arg, default=torch.device("cpu"))
    pp.set_defaults(func=cmd_predict)

    pl = sub.add_parser("plot", help="draw a results CSV (NMSE per layer) or a run's training curves (PNG)")
    pl.add_argument("source", metavar="CSV|RUN", help="a CSV of `unrolled eval`/`solve`, or a run directory")
    pl.add_argument("--out", required=True, metavar="PNG", help="figure file (.png, .pdf or .svg)")
    pl.add_argument("--metric", choices=["nmse_db", "nmse_db_sample"], default="nmse_db",
                    help="CSV: aggregate NMSE (default) or the mean per-sample NMSE")
    pl.add_argument("--title", default=None)
    pl.set_defaults(func=cmd_plot)
