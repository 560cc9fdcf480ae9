"""Summarise trained runs from their ``eval.csv`` tables: final-layer NMSE, baselines, oracle gap.

    python benchmarks/summarize_runs.py RUN [RUN ...] [--out table.md]

Reads only the tables written by ``unrolled eval`` (plus ``config.json``/``result.json``
for the training budget); prints a markdown table with the published number (docs/spec.md §10,
NA-ALISTA reference logs) where one exists. "samples" counts the whole warm-start chain
(a run trained ``--init-from`` another adds the other's samples); "wall" is the run's own.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

from unrolled.io import write_text

# docs/spec.md §10: (snr, n) -> model -> published NMSE (dB) at K = 16, M = 250, s = 50.
_MODELS = ("ista", "fista", "alista", "alista-at", "aglista", "na-alista")
PUBLISHED = {key: dict(zip(_MODELS, vals, strict=True)) for key, vals in {
    (40, 500): (-5.8, -7.6, -39.1, -42.0, -41.4, -42.2),
    (40, 1000): (-3.9, -6.7, -33.6, -34.5, -35.5, -39.1),
    (40, 2000): (-2.3, -4.5, -25.2, -26.1, -25.6, -32.5),
    (20, 500): (-5.7, -7.6, -21.1, -21.8, -21.4, -21.6),
    (20, 1000): (-3.9, -6.6, -20.6, -20.7, -20.9, -21.3),
    (20, 2000): (-2.3, -4.4, -17.8, -17.9, -17.7, -20.2),
}.items()}


def chain_samples(run: Path) -> int:
    """Training samples of ``run`` plus those of the runs it was warm-started from (``--init-from``)."""
    cfg = json.loads((run / "config.json").read_text())
    own = json.loads((run / "result.json").read_text())["samples"]
    return own + (chain_samples(Path(cfg["init_from"]["run"])) if "init_from" in cfg else 0)


def flat_config(config: dict) -> dict:
    """A model config with the support selection as the flat keys of older runs (``ss``, ``ss_theta``, ...)."""
    ss = config.get("ss")
    if not isinstance(ss, dict):
        return config
    rest = {k: v for k, v in config.items() if k != "ss"}
    flat = {"ss": ss["mode"], "ss_p": ss["p"], "ss_pmax": ss["p_max"], "ss_theta": ss["theta"], "ss_ramp": ss["ramp"]}
    return dict(sorted({**rest, **flat}.items()))  # the order of config.json (sorted keys)


def summarize(run: Path) -> dict:
    rows = list(csv.DictReader(open(run / "eval.csv", newline="")))
    cfg = json.loads((run / "config.json").read_text())
    res = json.loads((run / "result.json").read_text())
    spec = cfg["problem"]["spec"]
    model = cfg["model"]
    K = cfg["model_config"]["K"]
    final = {r["method"]: float(r["nmse_db"]) for r in rows if r["layer"] in ("", str(K))}
    snr = spec["snr"]
    key = (int(snr), spec["n"]) if not math.isinf(float(snr)) else None
    pub = PUBLISHED.get(key, {}).get(model)
    oracle = final.get("oracle-ls") if not math.isinf(float(snr)) else None  # noiseless: exact recovery
    return dict(run=str(run), model=model, m=spec["m"], n=spec["n"], snr=snr, K=K, samples=chain_samples(run),
                seconds=res["seconds"], device=res["device"], schedule=cfg["schedule"], ours=final[model],
                ista=final.get("ista"), fista=final.get("fista"), amp=final.get("amp"), oracle=oracle, published=pub,
                config=" ".join(f"{k}={v}" for k, v in flat_config(cfg["model_config"]).items()
                                if k in ("ss", "ss_theta", "ss_ramp", "head", "gamma0", "theta0", "eps", "matrix")),
                init_from=Path(cfg["init_from"]["run"]).name if "init_from" in cfg else "",
                lr=cfg["stages"][0]["lr"], test_size=int(rows[0].get("test_size", 0) or 0))


def fmt(v, spec=".1f") -> str:
    return "—" if v is None else format(v, spec)


def markdown(items: list[dict]) -> str:
    head = ("| model | m×n | SNR | K | ours (dB) | published | ISTA | FISTA | AMP | oracle | gap to oracle | "
            "samples | wall (s) | device | schedule, lr, config |")
    lines = [head, "|" + "---|" * 15]
    for d in items:
        gap = None if d["oracle"] is None else d["ours"] - d["oracle"]
        oracle = "exact" if d["oracle"] is None and math.isinf(float(d["snr"])) else fmt(d["oracle"], ".2f")
        ours = f"{d['ours']:.2f}"
        if d["published"] is not None and d["ours"] < d["published"]:
            ours = f"**{ours}**"  # bold: better than the published number
        lines.append(f"| {d['model']} | {d['m']}×{d['n']} | {d['snr']} | {d['K']} | {ours} | "
                     f"{fmt(d['published'])} | {fmt(d['ista'])} | {fmt(d['fista'])} | {fmt(d['amp'])} | {oracle} | "
                     f"{fmt(gap, '.2f')} | {d['samples']:,} | {d['seconds']:.0f} | {d['device']} | "
                     f"{d['schedule']}, {d['lr']:g}, {d['config']}"
                     + (f", from {d['init_from']}" if d["init_from"] else "") + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    items = [summarize(r) for r in a.runs if (r / "eval.csv").exists()]
    text = markdown(items)
    print(text)
    if a.out:
        write_text(a.out, text + "\n")


if __name__ == "__main__":
    main()
