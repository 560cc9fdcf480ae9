"""The matrix suite's table and goal row (issue 20) from a results.csv of ``unrolled repro matrix-suite``.

Per matrix and SNR: the final-layer NMSE (K = 16) of every method, "div k: N/M" where a fixed network diverged
on N of the M test signals (k: their median first iteration), "—" where a method did not run (declined, or no
training finished); then the best learned network, its gap to VAMP and to the oracle floor, and whether the goal
holds: best learned <= VAMP and within 1 dB of the oracle at 40 dB. Never a number that is not in the table.

    .venv/bin/python benchmarks/matrix_suite_table.py runs/repro/quick/matrix-suite/results.csv [--budget quick]
        [--plot FIGURE.png] [--snr 40] [--experiment matrix-suite-gap]

The learned columns are the experiment's own model labels (``matrix-suite-gap`` adds ``lvamp-damped``), in its
order; a label of the suite with no result anywhere in the table stays as a "—" column.

Prints markdown (the table, then the cells where the goal is not met, with their gaps); ``--plot`` draws NMSE
against layer per matrix at ``--snr``, every method with a result and the oracle floor (the repro figure's
panels cannot pair the baselines, which are per problem, with the matrix label, which is per cell).
"""

from __future__ import annotations

import argparse
import re

from unrolled.errors import check
from unrolled.repro import load
from unrolled.repro.report import read_table

BASELINES = ("ista", "fista", "amp", "vamp")


def learned_methods(exp) -> tuple[str, ...]:
    """The experiment's learned methods: its model labels, pending entries left out."""
    return tuple(m.label for m in exp.models if not m.pending)


def value(rows: list[dict], cell: str, method: str, K: int) -> tuple[float | None, str]:
    hit = [r for r in rows if r.get("cell") == cell and r["method"] == method and str(r["layer"]) in (str(K), "")]
    if not hit or hit[0].get("nmse_db") in (None, ""):
        return None, ""
    div = re.match(r"at iteration (\d+) \((\d+) of (\d+)", hit[0].get("diverged") or "")
    return float(hit[0]["nmse_db"]), f" (div {div.group(1)}: {div.group(2)}/{div.group(3)})" if div else ""


def plot(exp, b, rows: list[dict], path: str, snr: float) -> None:
    import math

    from unrolled.plots import pyplot

    plt = pyplot()
    cells = [c for c in exp.cells(b) if float(c.params["snr"]) == snr]
    check(cells, f"no cell of {exp.name} at {snr:g} dB: choose --snr among the grid's SNRs")
    cols = min(4, len(cells))
    lines = math.ceil(len(cells) / cols)
    fig, axes = plt.subplots(lines, cols, figsize=(4.25 * cols, 3.75 * lines), dpi=100, squeeze=False)
    for ax in axes.flat[len(cells):]:
        ax.set_visible(False)
    for ax, c in zip(axes.flat, cells):
        for i, m in enumerate((*BASELINES, *learned_methods(exp))):
            where = f"{c.problem_key}|classical" if m in BASELINES else f"{c.key}|{m}"
            pts = sorted((int(r["layer"]), float(r["nmse_db"])) for r in rows if r.get("cell") == where
                         and r["method"] == m and str(r["layer"]) != "" and r.get("nmse_db") not in (None, ""))
            if pts:
                ax.plot(*zip(*pts), marker=".", label=m, ls="--" if m in BASELINES else "-", color=f"C{i}")
        oracle, _ = value(rows, f"{c.problem_key}|classical", "oracle-mmse", b.K)
        if oracle is not None:
            ax.axhline(oracle, color="grey", ls=":", label=f"oracle {oracle:.1f}")
        ax.set_title(f"{c.tags.get('row', c.key)}, {snr:g} dB", fontsize=9)
        ax.set_xlabel("layer / iteration k", fontsize=8)
        ax.set_ylabel("NMSE (dB)", fontsize=8)
        ax.set_ylim(max(-50, ax.get_ylim()[0]), min(12, ax.get_ylim()[1]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"{exp.name} ({b.name} budget): NMSE per layer, K = {b.K}")
    fig.tight_layout()
    fig.savefig(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--budget", default="quick")
    ap.add_argument("--plot", help="write the NMSE-per-layer figure (one panel per matrix) here")
    ap.add_argument("--snr", type=float, default=40.0, help="--plot: the SNR whose cells are drawn")
    ap.add_argument("--experiment", default="matrix-suite",
                    help="the experiment that wrote RESULTS (default matrix-suite; or matrix-suite-gap)")
    a = ap.parse_args()
    exp = load(a.experiment)
    b = exp.budget(a.budget)
    rows = read_table(a.results)
    LEARNED = learned_methods(exp)
    methods = [*BASELINES, *LEARNED]
    head = ["matrix", "SNR", *methods, "oracle", "best learned", "- VAMP", "- oracle", "goal"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    unmet = []
    for c in exp.cells(b):
        row, snr = c.tags.get("row", c.key), c.params["snr"]
        vals = {}
        cells = []
        for m in methods:
            where = f"{c.problem_key}|classical" if m in BASELINES else f"{c.key}|{m}"
            v, flag = value(rows, where, m, b.K)
            vals[m] = v
            cells.append("—" if v is None else f"{v:.2f}{flag}")
        oracle, _ = value(rows, f"{c.problem_key}|classical", "oracle-mmse", b.K)
        learned = {m: vals[m] for m in LEARNED if vals[m] is not None}
        best = min(learned, key=learned.get) if learned else None
        vamp = vals["vamp"]
        if best is None or vamp is None or oracle is None:
            gv = go = goal = "—"
        else:
            dv, do = learned[best] - vamp, learned[best] - oracle
            gv, go = f"{dv:+.2f}", f"{do:+.2f}"
            ok = dv <= 0 and (float(snr) != 40 or do <= 1.0)
            goal = "yes" if ok else "**no**"
            if not ok:
                tail = f", oracle {oracle:.2f} (gap {do:+.2f} dB)" if float(snr) == 40 else ""
                unmet.append(f"- {row}, {snr} dB: best learned {best} {learned[best]:.2f} dB; VAMP {vamp:.2f} "
                             f"(gap {dv:+.2f} dB){tail}")
        lines.append(f"| {row} | {snr} | " + " | ".join(cells) + f" | {'—' if oracle is None else f'{oracle:.2f}'} | "
                     f"{best or '—'} {'' if best is None else f'{learned[best]:.2f}'} | {gv} | {go} | {goal} |")
    if a.plot:
        plot(exp, b, rows, a.plot, a.snr)
    print("\n".join(lines))
    print("\nCells where the goal (best learned <= VAMP, and within 1 dB of the oracle at 40 dB) is not met:\n")
    print("\n".join(unmet) if unmet else "- none among the cells with a result")


if __name__ == "__main__":
    main()
