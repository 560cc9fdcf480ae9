"""``unrolled search report STUDY...``: the top-k, their average architecture, its figures, and the
average architecture re-trained beside LISTA, LFISTA and Dense-LISTA, tested on the TEST set.

Tables first: ``top.csv`` (the top-k of the pooled studies), ``frequency.csv`` (per connection,
the fraction of the top-k that have it), ``neurons.csv`` (per layer, the neuron-type counts),
``average.json`` (the architecture; ``unrolled train --model lwa --arch average.json``) and,
with re-training, ``comparison.csv``; the figures (``connectivity.png``, ``neurons.png``,
``plot`` extra) are drawn from those tables; ``report.md`` lists it all with the search cost.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import optuna
import torch
from optuna.trial import TrialState

from .. import api
from ..errors import check
from ..io import write_text
from ..metrics import nmse_db
from ..models.design_space import NEURONS, dense_gates, extra_connections, lfista_gates, lista_gates
from .space import average_arch, describe, gate_frequency, neuron_counts, save_arch
from .storage import open_storage
from .study import Settings, counts, load_study, stored_settings


def _csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())


def top_trials(studies: list[optuna.Study], k: int) -> list[tuple[str, optuna.trial.FrozenTrial, dict]]:
    """The ``k`` best completed candidates of ``studies`` pooled: ``(study, trial, architecture)``."""
    pool = []
    for st in studies:
        space = stored_settings(st).Space
        for t in st.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            pool.append((st.study_name, t, space.arch(t.params)))
    pool.sort(key=lambda e: -e[1].value)
    return pool[:k]


def draw(freq: list[list[float]], neurons: list[dict], out: Path) -> list[Path]:
    """The connectivity heat map (the paper's Figure 2) and the per-layer neuron histogram."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    K = len(freq)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    masked = [[freq[k][i] if i <= k else float("nan") for i in range(K)] for k in range(K)]
    im = ax.imshow(masked, cmap="viridis", vmin=0, vmax=1)
    ax.set_xlabel("origin x^(i)")
    ax.set_ylabel("destination layer k+1 (row k)")
    ax.set_title("fraction of the top-k with each connection")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    paths = [out / "connectivity.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bottom = [0] * K
    for name in NEURONS:
        vals = [c[name] for c in neurons]
        ax.bar(range(1, K + 1), vals, bottom=bottom, label=name)
        bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_xlabel("layer")
    ax.set_ylabel("top-k candidates")
    ax.legend()
    fig.tight_layout()
    paths.append(out / "neurons.png")
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths


def contenders(arch: dict) -> list[tuple[str, dict]]:
    """The searched architecture (and its connectivity with soft neurons only, ``searched-soft``, when it
    chose other neurons) and the paper's baselines in its parameterisation (same K, injection)."""
    K = arch["K"]
    soft = [("searched-soft", {**arch, "neurons": "soft"})] if set(arch["neurons"].split(",")) != {"soft"} else []
    return [("searched", arch), *soft, ("lista", {**arch, "gates": lista_gates(K), "neurons": "soft"}),
            ("lfista", {**arch, "gates": lfista_gates(K), "neurons": "soft"}),
            ("dense-lista", {**arch, "gates": dense_gates(K), "neurons": "soft"})]


def train_one(label: str, arch: dict, settings: Settings, samples: int, out: Path, problem=None) -> dict:
    """Train ``arch`` with the search's recipe and ``samples`` into ``out/train/label`` (resumable:
    a finished run is reused) and test it: one comparison row."""
    problem = problem or settings.make_problem()
    start = time.perf_counter()
    run = api.train(problem, "lwa", dict(arch), {"name": settings.schedule, "lr": settings.lr}, samples,
                    out / "train" / label, "cpu", resume=True, log=lambda _m: None, batch=settings.batch,
                    eval_every=settings.eval_every, seed=settings.seed, val_size=problem.spec.val_size)
    x, y = problem.test(dtype=torch.float64)
    xv, yv = problem.validation(torch.float64)
    with torch.no_grad():
        test = nmse_db(run.model(y.to(run.model.A.dtype)), x)
        val = nmse_db(run.model(yv.to(run.model.A.dtype)), xv)
    return dict(model=label, extra_connections=extra_connections(arch["gates"]), samples=samples,
                validation_db=round(val, 2), test_db=round(test, 2), test_size=len(x),
                seconds=round(run.result.get("seconds", time.perf_counter() - start), 1))


def compare(arch: dict, settings: Settings, samples: int, out: Path, threads: int = 1) -> list[dict]:
    """The average architecture, LISTA, LFISTA and Dense-LISTA (the paper's parameterisation), each
    trained with the search's recipe and ``samples``, into resumable run directories; test NMSE."""
    torch.set_num_threads(threads)
    problem = settings.make_problem()
    return [train_one(label, a, settings, samples, out, problem) for label, a in contenders(arch)]


def write_report(names: list[str], storage_url: str, out: Path, top: int = 50, retrain: int = 0,
                 threads: int = 1, log=print) -> Path:
    check("://" in storage_url or Path(storage_url).exists(),
          f"--storage {storage_url} does not exist; give the journal file the search wrote")
    storage = open_storage(storage_url)
    studies = [load_study(n, storage) for n in names]
    best = top_trials(studies, top)
    out.mkdir(parents=True, exist_ok=True)
    archs = [a for _, _, a in best]
    freq, neurons = gate_frequency(archs), neuron_counts(archs)
    avg = average_arch(archs)
    settings = stored_settings(studies[0])
    cost = {n: counts(s) for n, s in zip(names, studies)}
    seconds = sum(t.user_attrs.get("seconds", 0) for s in studies for t in s.get_trials(deepcopy=False))
    done = sum(c["complete"] for c in cost.values())
    save_arch(out / "average.json", avg, studies=names, top=len(best), candidates=done)
    _csv(out / "top.csv", [dict(rank=r + 1, study=n, trial=t.number, validation_db=round(-t.value, 3),
                                extra_connections=extra_connections(a["gates"]), neurons=a["neurons"],
                                injection=a["injection"], seconds=t.user_attrs.get("seconds"))
                           for r, (n, t, a) in enumerate(best)])
    K = avg["K"]
    _csv(out / "frequency.csv", [dict(k=k, i=i, fraction=round(freq[k][i], 4)) for k in range(K) for i in range(k + 1)])
    _csv(out / "neurons.csv", [dict(layer=k + 1, **neurons[k]) for k in range(K)])
    figures = draw(freq, neurons, out)
    spec = ", ".join(f"{k}={settings.problem[k]}" for k in ("m", "n", "p", "snr", "seed"))
    lines = [f"# Search report: {', '.join(names)}", "",
             f"Storage `{storage_url}`; problem {spec}; {settings.samples:,} training samples per "
             f"candidate ({settings.schedule}, lr {settings.lr:g}, batch {settings.batch}); reward: negative "
             f"validation NMSE (dB, {settings.problem.get('val_size')} validation vectors).", "",
             "| study | sampler | complete | pruned | failed |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {stored_settings(s).sampler} | {cost[n]['complete']} | {cost[n]['pruned']} | "
              f"{cost[n]['fail']} |" for n, s in zip(names, studies)]
    lines += ["", f"Search cost: {done} candidates, {seconds / 3600:.2f} CPU-worker hours of training "
                  f"({seconds / max(done, 1):.1f} s per candidate).", "",
              f"## Top {len(best)}", "", "| rank | study | trial | validation dB | extra | neurons |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r + 1} | {n} | {t.number} | {-t.value:.2f} | {extra_connections(a['gates'])} | "
              f"{a['neurons'] if len(set(a['neurons'].split(','))) > 1 else a['neurons'].split(',')[0]} |"
              for r, (n, t, a) in enumerate(best[:20])]
    lines += ["", f"## Average architecture (a connection kept when >= 50 % of the top {len(best)} have it)", "",
              describe(avg), "", "`average.json`; re-train it with `unrolled train PROBLEM --model lwa --arch "
              f"{out / 'average.json'} --out RUN`.", ""]
    lines += [f"![{p.stem}]({p.name})" for p in figures]
    if retrain:
        rows = compare(avg, settings, retrain, out, threads)
        _csv(out / "comparison.csv", rows)
        lines += ["", f"## Re-trained at {retrain:,} samples, TEST set ({rows[0]['test_size']} vectors)", "",
                  "| model | extra connections | validation dB | test dB | seconds |", "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['extra_connections']} | {r['validation_db']:.2f} | {r['test_db']:.2f} | "
                  f"{r['seconds']} |" for r in rows]
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    log(f"wrote {path} ({len(best)} of {done} candidates averaged: {describe(avg)})")
    return path

