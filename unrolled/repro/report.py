"""Tables, figures and reports — all read from the long-format results table only.

``write_table`` writes the CSV; everything else takes the rows read back from it
(strings), so a report or a figure can be redrawn from the table without rerunning.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

from ..io import atomic_write, write_text
from ..plots import pyplot
from .config import Experiment, same

MAIN = ["method", "layer", "final", "nmse_db", "nmse_db_sample", "fp", "fn", "f1", "quantity", "panel", "value",
        "std", "x", "y", "status", "reason", "lam", "extra_connections", "side_connections"]
NMSE = ("nmse_db", "nmse_db_sample")
# Aggregate NMSE this far above the mean of per-sample dB: a few test vectors dominate it (the other trained
# networks of the NA-ALISTA K = 16 table at paper budget: 0.3-4.4 dB; one vector of 10,000 at +33 dB: 15 dB).
OUTLIER_DB = 10.0
LABELS = {"nmse_db": "aggregate NMSE", "nmse_db_sample": "mean per-sample NMSE"}


def write_table(rows: list[dict], path: Path, params: list[str]) -> None:
    """Long-format CSV: experiment, budget, cell parameters, method, layer, metrics, then metadata."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    lead = [k for k in ["experiment", "budget", *params, *MAIN] if k in keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=lead + sorted(k for k in keys if k not in lead), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


NO_RESULT = "no result at this budget (not in its grid or models, or not finished yet)"


def read_table(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def num(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def matches(r: dict, where: dict) -> bool:
    for k, v in where.items():
        allowed = v if isinstance(v, list) else [v]
        if k not in r or not any(same(r[k], a) for a in allowed):
            return False
    return True


def is_final(r: dict) -> bool:
    return r.get("final") in ("1", 1, "1.0")


def fmt(v, digits: int = 1) -> str:
    f = num(v)
    return "—" if f is None or math.isnan(f) else f"{f:.{digits}f}"


# -- paper | ours | difference ---------------------------------------------------------------------


def paper_rows(exp: Experiment, rows: list[dict]) -> list[dict]:
    """One entry per paper number: where, method, paper value (±), ours, difference, floor."""
    out = []
    for block in exp.paper:
        metric, keys, pm = block.get("metric", exp.metric), block["keys"], block.get("pm", 0)
        for values in block["rows"]:
            where = dict(zip(keys, values[: len(keys)]))
            for method, value in zip(block["methods"], values[len(keys):]):
                mine = [r for r in rows if r["method"] == method and matches(r, where)]
                finals = [r for r in mine if is_final(r)]
                # The floor of the same test problem (the oracle rows carry no model tags such as `row`).
                floor = [num(r[metric]) for r in rows if r["method"] == "oracle-mmse" and finals
                         and r.get("problem") == finals[0].get("problem")]
                e = dict(where=where, method=method, paper=value, pm=pm, metric=metric, source=block["source"],
                         ours=None, diff=None, floor=floor[0] if floor else None, status="", layer=block.get("layer"))
                if finals:
                    e["ours"] = num(finals[0][metric])
                    # above 0 dB is worse than x = 0: a divergence, never a number to compare
                    e["diverged"] = metric == "nmse_db" and e["ours"] is not None and e["ours"] > 0
                    e["diff"] = None if e["diverged"] else e["ours"] - value
                    e["sample"] = num(finals[0].get("nmse_db_sample")) if metric == "nmse_db" else None
                    over = num(finals[0].get("over_0db")) if metric == "nmse_db" else None
                    e["over_0db"] = int(over) if over is not None and math.isfinite(over) else 0
                    e["K"] = finals[0].get("K")
                    e["status"] = f"{len(finals)} matching cells, first shown" if len(finals) > 1 else ""
                elif mine:
                    e["status"] = f"{mine[0].get('status')}: {mine[0].get('reason', '')}"
                else:
                    e["status"] = NO_RESULT
                out.append(e)
    return out


def where_text(where: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in where.items())


def paper_markdown(entries: list[dict]) -> tuple[str, list[str]]:
    """The paper | ours | difference table, and the lines of the cells worse by more than 1 dB. Paper
    numbers without any result of ours (a budget that runs part of the grid) are one line below it."""
    if not entries:
        return "No paper numbers: the source gives figures or claims only (see Claims).\n", []
    lines = ["| cell | method | paper | ours | difference | ours − oracle floor | note |", "|---" * 7 + "|"]
    worse, missing = [], [e for e in entries if e["status"] == NO_RESULT]
    for e in (e for e in entries if e["status"] != NO_RESULT):
        cell = where_text(e["where"])
        paper = f"{e['paper']:.1f}" + (f" ± {e['pm']:g}" if e["pm"] else "")
        metric = "" if e["metric"] == "nmse_db" else " (per-sample dB)"
        note = e["status"]
        if e.get("diverged"):
            note = (note + "; " if note else "") + (
                f"**diverged**: aggregate {e['ours']:+.1f} dB, worse than x̂ = 0 (not a result)")
            worse.append(f"{cell}, {e['method']}: paper {paper}, ours diverged (aggregate {e['ours']:+.1f} dB)")
        if e["diff"] is not None and e["diff"] > 1:
            note = (note + "; " if note else "") + f"**ours worse by {e['diff']:.1f} dB** (see notes)"
            worse.append(f"{cell}, {e['method']}: paper {paper}, ours {e['ours']:.1f} ({e['diff']:+.1f} dB)")
        if e.get("sample") is not None and e["ours"] - e["sample"] > OUTLIER_DB:
            note = (note + "; " if note else "") + (
                f"a few test vectors dominate the aggregate (mean per-sample NMSE {e['sample']:.1f} dB)")
        if e.get("over_0db") and not e.get("diverged"):
            note = (note + "; " if note else "") + f"**{e['over_0db']} test vector(s) above 0 dB**"
        if e.get("layer") and e.get("K") and str(e["layer"]) != str(e["K"]):
            note = (note + "; " if note else "") + f"paper at K={e['layer']}, ours at K={e['K']}"
        gap = "—" if e["ours"] is None or e.get("diverged") or e["floor"] is None else \
            "exact floor" if e["floor"] < -150 else fmt(e["ours"] - e["floor"])  # noiseless: the oracle is exact
        diff = f"{e['diff']:+.1f}" if e["diff"] is not None else "—"
        ours = "diverged" if e.get("diverged") else fmt(e["ours"]) if e["ours"] is not None \
            else e["status"].split(":")[0]
        lines.append(f"| {cell} | {e['method']}{metric} | {paper} | {ours} | {diff} | {gap} | {note} |")
    if len(missing) == len(entries):
        lines = []
    if missing:
        names = "; ".join(f"{where_text(e['where'])} {e['method']}" for e in missing)
        lines.append(f"\n{len(missing)} of {len(entries)} paper numbers have no result: {NO_RESULT} ({names}).")
    return "\n".join(lines) + "\n", worse


# -- claims ------------------------------------------------------------------------------------------


def claim_values(rows: list[dict], where: dict, column: str) -> list[float]:
    sel = [r for r in rows if matches(r, where)]
    if column in NMSE:
        sel = [r for r in sel if is_final(r) or (r.get("layer") == "" and r["method"].startswith("oracle"))]
    return [v for v in (num(r.get(column)) for r in sel) if v is not None and not math.isnan(v)]


def check_claim(claim: dict, rows: list[dict]) -> tuple[str, str]:
    """``(ours, verdict)`` of one claim: compare groups ``a`` and ``b`` (or a number) per ``per`` keys."""
    column, how, op = claim.get("column", "nmse_db"), claim.get("how", "median"), claim.get("op", "<")
    a, b = claim["a"], claim.get("b")
    per = claim.get("per", [])
    groups = sorted({tuple(r.get(k, "") for k in per) for r in rows if matches(r, a)}, key=str)
    parts, held = [], []
    for g in groups:
        extra = dict(zip(per, g))
        A = claim_values(rows, {**a, **extra}, column)
        B = [float(b)] if isinstance(b, int | float) else claim_values(rows, {**b, **extra}, column)
        if not A or not B:
            continue
        if how == "all":
            va, vb = (max(A), min(B)) if op == "<" else (min(A), max(B))
        else:
            agg = statistics.median if how == "median" else statistics.fmean
            va, vb = agg(A), agg(B)
        ok = {"<": va < vb, ">": va > vb, "within": abs(va - vb) <= claim.get("tol", 1.0)}[op]
        held.append(ok)
        label = ", ".join(f"{k}={v}" for k, v in extra.items())
        parts.append(f"{label + ': ' if label else ''}{va:.3g} vs {vb:.3g}")
    if not held:
        return "not evaluated at this budget (no matching rows)", "—"
    return "; ".join(parts), "yes" if all(held) else f"**no** ({held.count(False)} of {len(held)} groups)"


# -- figure --------------------------------------------------------------------------------------------


def draw(exp: Experiment, rows: list[dict], stem: Path, title: str, formats=("png", "pdf")) -> list[Path]:
    """One figure (PNG and PDF) with an axes per panel of every ``[plot]`` spec of ``exp``."""
    plt = pyplot()
    panels = []
    for spec in exp.plots or [{"kind": "curves", "x": "layer", "y": exp.metric}]:
        sel = [r for r in rows if matches(r, spec.get("where", {})) and r.get("status", "ok") in ("ok", "")]
        keys = spec.get("panels", [])
        groups = {tuple(r.get(k, "") for k in keys) for r in sel} - ({("",) * len(keys)} if keys else set())
        for g in sorted(groups, key=lambda t: [(num(v) is None, num(v) or 0, v) for v in t]):
            panels.append((spec, [r for r in sel if tuple(r.get(k, "") for k in keys) == g],
                           ", ".join(v if k == "panel" else f"{k}={v}" for k, v in zip(keys, g))))
    if not panels:
        panels = [({}, [], "nothing to plot at this budget")]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.4 * nrows), dpi=110, squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (spec, sel, label) in zip(axes.flat, panels):
        (scatter if spec.get("kind") == "scatter" else curves)(ax, spec, sel)
        ax.set_title(" ".join(t for t in (spec.get("title", ""), label) if t), fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    paths = [stem.with_suffix(f".{f}") for f in formats]
    for p in paths:
        atomic_write(p, lambda f, p=p: fig.savefig(f, format=p.suffix[1:]))
    plt.close(fig)
    return paths


def curves(ax, spec: dict, rows: list[dict]) -> None:
    x, y, series = spec.get("x", "layer"), spec.get("y", "nmse_db"), spec.get("series", "method")
    if spec.get("final"):
        rows = [r for r in rows if is_final(r) or (r.get("layer") == "" and r["method"] == "oracle-mmse")]
    for name in dict.fromkeys(r.get(series, "") for r in rows):
        sel = [r for r in rows if r.get(series, "") == name and num(r.get(y)) is not None]
        if x == "layer" and sel and all(r.get("layer") == "" for r in sel):
            if name == "oracle-mmse":
                ax.axhline(num(sel[0][y]), ls="--", lw=1, color="gray", label=f"{name} {num(sel[0][y]):.1f}")
            continue
        pts = sorted((num(r.get(x)), num(r[y]), num(r.get(spec.get("err", ""), None)) or 0.0)
                     for r in sel if num(r.get(x)) is not None)
        if pts:
            xs, ys, es = zip(*pts)
            style = "--" if name.startswith("oracle") else "-" if spec.get("lines", True) else "none"
            if spec.get("err"):
                ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, ls=style, capsize=2, label=name)
            else:
                ax.plot(xs, ys, marker="o", ms=3, ls=style, label=name)
    if spec.get("logx"):
        ax.set_xscale("log", base=2)
    if spec.get("logy"):
        ax.set_yscale("log")
    ax.set_xlabel(spec.get("xlabel", x), fontsize=8)
    ax.set_ylabel(spec.get("ylabel", y), fontsize=8)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)


def scatter(ax, spec: dict, rows: list[dict]) -> None:
    pts = [(num(r["x"]), num(r["y"])) for r in rows if num(r.get("x")) is not None and num(r.get("y")) is not None]
    if pts:
        ax.scatter(*zip(*pts), s=4, alpha=0.5)
    r = [num(row["value"]) for row in rows if row.get("quantity") == "pearson_r"]
    if r:
        ax.text(0.03, 0.92, f"Pearson r = {r[0]:.3f}", transform=ax.transAxes, fontsize=8)
    ax.set_xlabel(spec.get("xlabel", "x"), fontsize=8)
    ax.set_ylabel(spec.get("ylabel", "y"), fontsize=8)


# -- report -------------------------------------------------------------------------------------------


def final_table(exp: Experiment, rows: list[dict]) -> str:
    """Our final-layer results: cells down, every method (baselines and oracle floor included) across."""
    metric = exp.metric
    scored = [r for r in rows
              if is_final(r) or r["method"] == "oracle-mmse" or r.get("status") in ("failed", "pending")]
    if not scored:
        return ""
    methods = list(dict.fromkeys(r["method"] for r in scored))
    cells = list(dict.fromkeys(r["cell"].split("|")[0] for r in scored))
    lines = [f"| cell | {' | '.join(methods)} |", "|---" * (len(methods) + 1) + "|"]
    for c in cells:
        vals = []
        for m in methods:
            hit = [r for r in scored if r["cell"].split("|")[0] == c and r["method"] == m]
            vals.append("" if not hit else hit[0]["status"] if hit[0].get("status") in ("failed", "pending")
                        else fmt(hit[0][metric], 2))
        lines.append(f"| {c} | {' | '.join(vals)} |")
    return "\n".join(lines) + "\n"


def compute_seconds(rows: list[dict]) -> float:
    """Seconds behind the table: per cell, its own time or its training's, whichever is longer (a cell
    evaluated from a training finished elsewhere, e.g. with ``--finished-only``, took only seconds itself);
    a training shared by several cells (rows tested differently on one training) counts once."""
    seen, trainings = {}, set()
    for r in rows:
        if r.get("cell") in seen:
            continue
        own, run = num(r.get("cell_seconds")) or 0.0, r.get("train_run")
        seen[r.get("cell")] = own if run and run in trainings else max(own, num(r.get("seconds")) or 0.0)
        trainings.add(run)
    return sum(seen.values())


def compute_table(rows: list[dict]) -> str:
    """The compute of every training behind the table, once per training (rows tested differently on one
    training name it under their first cell): samples, optimiser steps, wall seconds and device."""
    seen, lines = set(), []
    for r in rows:
        run = r.get("train_run")
        if not run or run in seen or not is_final(r):
            continue
        seen.add(run)
        steps, samples = num(r.get("steps")), num(r.get("samples"))
        lines.append(f"| {r['cell'].split('|')[0]} | {r['method']} | {r.get('schedule') or '?'} | "
                     f"{f'{samples:,.0f}' if samples is not None else '?'} | "
                     f"{f'{steps:,.0f}' if steps is not None else '?'} | {fmt(r.get('seconds'), 1)} | "
                     f"{r.get('train_device') or '?'} | {Path(run).name} |")
    if not lines:
        return ""
    return "\n".join(["| cell | method | schedule | samples | steps | seconds | device | run |",
                      "|---|---|---|---|---|---|---|---|", *lines]) + "\n"


def summarise(exp: Experiment, rows: list[dict]) -> dict:
    entries = paper_rows(exp, rows)
    diffs = [e["diff"] for e in entries if e["diff"] is not None]
    verdicts = [check_claim(c, rows)[1] for c in exp.claims]
    cells = {r.get("cell") for r in rows}
    return dict(compared=len(diffs), numbers=len(entries), median_diff=statistics.median(diffs) if diffs else None,
                worse=sum(d > 1 for d in diffs) + sum(bool(e.get("diverged")) for e in entries),
                claims=f"{verdicts.count('yes')}/{len(verdicts)}",
                failed=len({r.get("cell") for r in rows if r.get("status") == "failed"}), cells=len(cells),
                seconds=compute_seconds(rows), entries=entries)


def markdown(exp: Experiment, rows: list[dict], budget: str, figure: str) -> str:
    b = exp.budgets[budget]
    s = summarise(exp, rows)
    paper, worse = paper_markdown(s["entries"])
    torch_v = rows[0].get("torch", "?") if rows else "?"
    device = rows[0].get("device", "?") if rows else "?"
    out = [f"# {exp.title}", "", f"*Experiment* `{exp.name}` — reproduces: {exp.reproduces}", "",
           f"*Budget* `{budget}`: {b.about.strip()}", "",
           f"K = {b.K}, size scale {b.scale:g}, {s['cells']} cells ({s['failed']} failed), "
           f"{s['seconds']:.0f} s of compute (trainings included), device {device}, torch {torch_v}. "
           f"Command: `unrolled repro {exp.name} --budget {budget}`.", "",
           "## Paper | ours | difference", "",
           f"Final-layer {LABELS[exp.metric]} in dB (lower is better); difference = ours − paper "
           "(negative: ours better). Paper values marked ± were read off a plot.", "", paper]
    out += ["**Ours worse than the paper by more than 1 dB:** " + ("none." if not worse else ""), ""]
    out += [f"- {w}" for w in worse] + ([""] if worse else [])
    if worse and budget != "paper":
        out += [f"Reason common to every row at the `{budget}` budget: it trains far less (and, if scaled, on smaller "
                "problems) than the paper; see *Budget* above. Reasons specific to the method are in the notes.", ""]
    if exp.claims:
        out += ["## Claims", "", "| claim | source | ours | holds |", "|---|---|---|---|"]
        for c in exp.claims:
            ours, verdict = check_claim(c, rows)
            out.append(f"| {c['text']} | {c.get('source', '')} | {ours} | {verdict} |")
        out.append("")
    out += ["## Notes", "", exp.notes.strip() or "(none)", ""]
    table = final_table(exp, rows)
    if table:
        out += ["## All our final-layer results", "", f"{exp.metric} (dB) at layer K, every cell, every method; "
                "`oracle-mmse` is the support-oracle floor.", "", table]
    compute = compute_table(rows)
    if compute:
        out += ["## Compute", "", "Every training behind the table, once (a training shared by several cells is named "
                "under the first); seconds are the training's wall time on its device, `?` where a training finished "
                "before the harness recorded the value.", "", compute]
    out += ["## Figure", "", f"![{exp.name}]({figure})", "", "## Provenance of the paper numbers", ""]
    sources = list(dict.fromkeys(p["source"] + (f" (read off a plot, ± {p['pm']:g} dB)" if p.get("pm") else "")
                                 for p in exp.paper))
    out += [f"- {src}" for src in sources] or ["- none (claims only)"]
    return "\n".join(out) + "\n"


def write_report(exp: Experiment, table: Path, budget: str, out_dir: Path, stem: str = "figure",
                 formats=("png", "pdf")) -> Path:
    """Figure (PNG, PDF) and ``report.md``-style markdown, both from the table at ``table``."""
    rows = read_table(table)
    draw(exp, rows, out_dir / stem, f"{exp.name} ({budget} budget)", formats)
    path = out_dir / ("report.md" if stem == "figure" else f"{stem}.md")
    write_text(path, markdown(exp, rows, budget, f"{stem}.png"))
    return path
