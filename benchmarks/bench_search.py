"""Search throughput: trials per hour at the smoke budget with 1 and 2 local workers on one journal,
the scaling, and the paper's search (25,000 candidates) priced at our per-candidate cost.

    .venv/bin/python benchmarks/bench_search.py [--trials 8] [--journal runs/search/search.journal]

Smoke budget: 50 x 100 noiseless (the repro quick scale), K = 16, the full space (105 gates, 16
neurons), 2,560 training samples per candidate (20 steps of 128), validation 500. ``--journal``
(a finished real search) adds its measured seconds per candidate to the cost estimate.
Writes ``benchmarks/results/search.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import optuna

import unrolled as ur
from unrolled.search import study as S
from unrolled.search.space import Space
from unrolled.search.storage import open_storage

PAPER_CANDIDATES = 25_000  # "more than 25,000 architectures sampled during each search" (seed §3.1)
PAPER_SAMPLES = 2_000_000  # our paper-budget training per model (configs/design-table1.toml)


def rate(workers: int, trials: int, tmp: Path) -> dict:
    url = str(tmp / f"bench-{workers}.journal")
    problem = ur.Problem(ur.ProblemSpec(m=50, n=100, p=0.1, snr=float("inf"), seed=0, val_size=500, test_size=100))
    settings = S.settings_for(problem, space=Space(16).record(), trials=trials, samples=2560, batch=128,
                              eval_every=10)
    S.create_or_join("bench", open_storage(url), settings)
    start = time.perf_counter()
    S.launch("bench", url, workers, start="fork")
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name="bench", storage=open_storage(url))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    per = sum(t.user_attrs["seconds"] for t in done) / len(done)
    return dict(workers=workers, trials=len(done), wall_s=round(wall, 1),
                trials_per_hour=round(3600 * len(done) / wall), seconds_per_trial=round(per, 2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--journal", default=None, help="a real search's journal: its per-candidate seconds")
    a = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [rate(w, a.trials, Path(tmp)) for w in (1, 2)]
    scaling = rows[1]["trials_per_hour"] / rows[0]["trials_per_hour"]
    out = dict(machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               load_average_at_start=round(load, 1), date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               smoke=rows, scaling_2_over_1=round(scaling, 2))
    print("workers | trials | wall s | trials/hour | s per trial (worker)")
    for r in rows:
        print(f"{r['workers']:7d} | {r['trials']:6d} | {r['wall_s']:6.1f} | {r['trials_per_hour']:11d} | "
              f"{r['seconds_per_trial']:.2f}")
    print(f"scaling 2 workers / 1 worker: {scaling:.2f} (load average {load:.1f} at the start)")
    if a.journal:
        storage = open_storage(a.journal)
        secs, samples = [], []
        for st in optuna.get_all_study_summaries(storage):
            study = optuna.load_study(study_name=st.study_name, storage=storage)
            for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
                secs.append(t.user_attrs.get("seconds", 0))
                samples.append(t.user_attrs.get("samples", 0))
        per, per_sample = sum(secs) / len(secs), sum(secs) / max(sum(samples), 1)
        reduced = PAPER_CANDIDATES * per / 3600
        full = PAPER_CANDIDATES * per_sample * PAPER_SAMPLES / 3600
        out["real_search"] = dict(candidates=len(secs), seconds_per_candidate=round(per, 1),
                                  paper_search_core_hours_at_our_budget=round(reduced),
                                  paper_search_core_hours_at_2M_samples=round(full))
        print(f"real search: {len(secs)} candidates, {per:.1f} s each ({sum(samples) / len(samples):,.0f} samples); "
              f"the paper's {PAPER_CANDIDATES:,} candidates: {reduced:,.0f} worker-hours at this budget, "
              f"{full:,.0f} at {PAPER_SAMPLES:,} samples per candidate")
    path = Path(__file__).parent / "results" / "search.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
