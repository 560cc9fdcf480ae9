"""Training throughput of two checkouts side by side: ``bench_train.py`` of each, interleaved.

    python benchmarks/compare_trees.py --old ../old [--new .] [--models alista,na-alista] [--rounds 6]
                                       [--runs RUN ...] [--extra "--steps 10"]

Each round runs the old tree's ``benchmarks/bench_train.py --rounds 1`` and then the new one's
(the order alternates between rounds), each in its own process with ``PYTHONPATH`` set to its
tree, so both import their own ``unrolled``. A model's time per step is its best over the rounds
in each tree, the same statistic as ``bench_train.py`` itself; the median is printed beside it.
On a shared machine whose speed drifts, interleaving gives both trees the same conditions.
Results: a JSON list of rows (model, tree, best and median ms per step, rounds) in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from unrolled.io import write_text


def one_round(tree: Path, models: str, runs: list[str], extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "train.json"
        cmd = [sys.executable, str(tree / "benchmarks" / "bench_train.py"), "--models", models, "--rounds", "1",
               "--out", str(out), *extra]
        if runs:
            cmd += ["--runs", *runs]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=tree)
        return {r["model"]: r["ms_per_step"] for r in json.loads(out.read_text())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, type=Path)
    ap.add_argument("--new", default=Path(__file__).resolve().parents[1], type=Path)
    ap.add_argument("--models", default="alista,alista-at,aglista,na-alista,lista")
    ap.add_argument("--runs", nargs="*", default=[])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--extra", default="", help="more arguments for both bench_train.py runs")
    ap.add_argument("--out", default="benchmarks/results/compare_trees.json")
    a = ap.parse_args()
    trees = {"old": a.old.resolve(), "new": a.new.resolve()}
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(a.rounds):
        for label in (("old", "new") if r % 2 == 0 else ("new", "old")):
            for model, ms in one_round(trees[label], a.models, a.runs, a.extra.split()).items():
                times.setdefault((model, label), []).append(ms)
        print(f"round {r + 1}/{a.rounds} done", flush=True)
    rows = [dict(model=m, tree=t, path=str(trees[t]), best_ms=min(v), median_ms=statistics.median(v), rounds=len(v))
            for (m, t), v in sorted(times.items())]
    print(f"training step (bench_train.py defaults), best and median of {a.rounds} interleaved rounds")
    models = sorted({m for m, _ in times}, key=lambda m: list(times).index((m, "old")))
    width = max(12, *(len(m) + 2 for m in models))
    head = ("old best", "new best", "new/old", "old med", "new med", "new/old")
    print(f"{'model':<{width}}" + "".join(f"{h:>10}" for h in head))
    for m in models:
        o, n = times[(m, "old")], times[(m, "new")]
        bo, bn, mo, mn = min(o), min(n), statistics.median(o), statistics.median(n)
        print(f"{m:<{width}}{bo:>10.1f}{bn:>10.1f}{bn / bo:>10.3f}{mo:>10.1f}{mn:>10.1f}{mn / mo:>10.3f}")
    write_text(a.out, json.dumps(rows, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
