"""Train every untrained entry of the pretrained zoo (unrolled/pretrained/index.json) and add it.

Each entry is trained with its model's recipe (unrolled/recipes.py: schedule, learning rate,
batch, config fields) at K = 16, on the problem its spec regenerates, in a resumable run
directory ``OUT/NAME`` (a rerun continues or returns a finished run), then added with
``unrolled.pretrained.add(RUN, NAME, COMMIT)`` (COMMIT: ``git rev-parse --short HEAD`` at start).

Budget: the recipe's ``demo_budget`` where it has one (ALISTA 300,000, NA-ALISTA 150,000
samples), else 300,000. LAMP has no recipe entry (the default: end to end, lr 1e-3, batch 512);
it was measured in docs/results.md end to end with tied B (its default config), batch 512 and
lr 2e-4 (-45.49 dB at 250x500, -44.36 dB at 250x1000, 40 dB, 204,800 samples), so it trains
with its recipe but at that measured lr 2e-4, for the same 300,000 samples as the others.
A training whose result is marked failed, or whose test NMSE is above 0 dB (worse than x = 0),
is printed and not added. Entries go cheapest first: n = 500, then 1000, then 2000.

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/train_zoo.py --out /work/runs/zoo [--stop-at 10:05]
    .venv/bin/python benchmarks/train_zoo.py --table    # the trained entries, for docs/results.md
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import time
from pathlib import Path

import torch

import unrolled as ur
from unrolled import pretrained as zoo
from unrolled import recipes

BUDGET = 300_000  # samples, for a recipe without a demo budget
LR = {"lamp": 2e-4}  # measured (docs/results.md); the other models take their recipe's
ORDER = ["alista", "alista-at", "aglista", "na-alista", "lamp"]


def plan(only: list[str] | None) -> list[str]:
    """The untrained entries (or ``only``), cheapest first: by n, then by model."""
    todo = [n for n, e in zoo.entries().items() if not e.get("weights")] if only is None else only
    for name in todo:
        zoo.entry(name)  # an unknown name fails here, listing the valid ones
    key = {n: (zoo.entry(n)["problem"]["n"], ORDER.index(zoo.entry(n)["model"]), n) for n in todo}
    return sorted(todo, key=key.get)


def train_one(name: str, out: Path, budget: int | None, commit: str) -> dict:
    e = zoo.entry(name)
    model, r = e["model"], recipes.recipe(e["model"])
    budget = budget or r.demo_budget or BUDGET
    problem = ur.Problem(ur.ProblemSpec(**e["problem"]))
    t0 = time.perf_counter()
    run = ur.train(problem, model, {**recipes.config(model), "K": 16}, r.schedule, budget, out / name,
                   lr=LR.get(model, r.lr), batch=r.batch, resume=True, log=lambda s: None)
    seconds = time.perf_counter() - t0
    failed = run.result.get("failed")
    nmse = zoo.test_nmse(run)
    row = dict(name=name, samples=run.result["samples"], seconds=round(run.result["seconds"], 1),
               wall=round(seconds, 1), nmse_db=round(nmse, 2), failed=failed or "")
    if failed or not nmse <= 0:
        row["added"] = False
        print(f"NOT ADDED {name}: {'failed: ' + failed if failed else f'test NMSE {nmse:.2f} dB > 0 dB'}", flush=True)
        return row
    e = zoo.add(out / name, name, commit)
    row.update(added=True, nmse_db=round(e["test_nmse_db"], 2), bytes=(zoo.HERE / e["weights"]).stat().st_size)
    return row


def table() -> None:
    """The trained entries as a markdown table (docs/results.md), from index.json and the files."""
    print("| entry | test NMSE (dB) | training samples | seconds | file (bytes) | commit |")
    print("|---|---|---|---|---|---|")
    for name, e in zoo.entries().items():
        if e.get("weights"):
            t, size = e["training"], (zoo.HERE / e["weights"]).stat().st_size
            print(f"| {name} | {e['test_nmse_db']:.2f} | {t['budget']:,} | {t['seconds']:.0f} | {size:,} | "
                  f"{e['commit']} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/work/runs/zoo"), help="run directories (resumable)")
    ap.add_argument("--only", help="comma-separated entry names (default: every untrained entry)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--budget", type=int, help="training samples per model (default: see the docstring)")
    ap.add_argument("--stop-at", help="HH:MM (UTC): start no training after it")
    ap.add_argument("--table", action="store_true", help="print the trained entries as a table and exit")
    a = ap.parse_args()
    if a.table:
        return table()
    torch.set_num_threads(a.threads)
    root = Path(__file__).parents[1]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            check=True, cwd=root).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "unrolled", ":!unrolled/pretrained"],
                           capture_output=True, text=True, cwd=root).stdout.strip()
    if dirty:
        print(f"warning: uncommitted changes under unrolled/ (recorded commit {commit}):\n{dirty}", flush=True)
    todo = plan(a.only.split(",") if a.only else None)
    print(f"{len(todo)} entries, commit {commit}: {', '.join(todo)}", flush=True)
    print("| entry | test NMSE (dB) | samples | seconds | file (bytes) | added |", flush=True)
    for name in todo:
        if a.stop_at and datetime.datetime.now(datetime.timezone.utc).strftime("%H:%M") >= a.stop_at:
            print(f"stopped at {a.stop_at} UTC; not started: {', '.join(todo[todo.index(name):])}", flush=True)
            break
        r = train_one(name, a.out, a.budget, commit)
        print(f"| {r['name']} | {r['nmse_db']:.2f} | {r['samples']:,} | {r['seconds']} | {r.get('bytes', '')} | "
              f"{'yes' if r['added'] else 'no ' + (r['failed'] or '> 0 dB')} |", flush=True)


if __name__ == "__main__":
    main()
