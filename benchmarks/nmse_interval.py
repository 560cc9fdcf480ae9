"""Aggregate test NMSE of finished runs with a bootstrap 95 % interval over the test vectors.

    python benchmarks/nmse_interval.py RUN [RUN ...] [--resamples 2000] [--seed 0]

The aggregate NMSE ``10 log10(sum ||x_hat - x||^2 / sum ||x||^2)`` of the final layer on the
run's own test set (as `unrolled eval` reports it), and the 2.5 / 97.5 percentiles of the same
statistic over test sets resampled with replacement: how far a published number may lie from
ours before the difference means anything.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import unrolled as ur
from unrolled.metrics import db


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for run in a.runs:
        loaded = ur.load(run)
        model, problem = loaded.model, loaded.problem
        x, y = problem.test()
        with torch.inference_mode():
            err = ((model(y) - x) ** 2).sum(1).double().numpy()
        power = (x ** 2).sum(1).double().numpy()
        rng = np.random.default_rng(a.seed)
        idx = rng.integers(0, len(err), (a.resamples, len(err)))
        boot = 10 * np.log10(err[idx].sum(1) / power[idx].sum(1))
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(f"{run}: aggregate NMSE {db(err.sum() / power.sum()):.2f} dB, "
              f"95 % bootstrap interval [{lo:.2f}, {hi:.2f}] dB over {len(err):,} test vectors")


if __name__ == "__main__":
    main()
