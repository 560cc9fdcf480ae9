"""The patch compressive-sensing experiment (design-space Table 3): dictionary, training, PSNR tables.

Everything is resumable under ``out``: the learned dictionary (``dictionary.npz``, a problem file),
one run directory per ratio and model (``r0.5/lista``...; ``unrolled train --resume`` semantics), and
``results.json`` with every finished cell (PSNR per test image and stride), so a rerun continues
where it stopped and never retrains a finished cell.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .. import api, solvers
from ..io import write_json, write_text
from ..training.trainer import Diverged
from . import baselines, cs, data
from . import dictionary as Dm


def _images(exp: dict, log):
    folder = exp["data"]["training"]
    train = data.training_images(None if folder == "packaged" else folder, exp["data"]["patch"], log)
    t = exp["test"]
    tests = data.test_images(t["folder"] or None, tuple(t["images"]) or data.SET11, exp["data"]["patch"])
    return train, tests


def dictionary(exp: dict, train: dict, out: Path, log) -> np.ndarray:
    d = exp["dictionary"]
    if d["file"]:
        return Dm.load_dictionary(d["file"], exp["data"]["patch"])
    path = out / "dictionary.npz"
    if not path.exists():
        log(f"learning a {exp['data']['patch'] ** 2}x{d['atoms']} dictionary on {d['count']:,} patches of "
            f"{len(train)} training images ...")
        start = time.time()
        D = Dm.learn_patch_dictionary(list(train.values()), d["atoms"], exp["data"]["patch"], d["count"], d["alpha"],
                                      d["epochs"], exp["seed"])
        Dm.save_dictionary(path, D, f"{exp['data']['training']} MiniBatchDictionaryLearning count={d['count']} "
                                    f"epochs={d['epochs']} alpha={d['alpha']} ({time.time() - start:.0f} s)")
    return Dm.load_dictionary(path, exp["data"]["patch"])


def _scores(prob: cs.PatchCSProblem, solve, tests: dict, strides: list[int], keep: dict | None = None) -> dict:
    cell = {}
    for s in strides:
        scores, recs = cs.evaluate_images(prob, solve, tests, s)
        cell[str(s)] = scores
        if keep is not None and s == strides[0]:
            keep.update(recs)
    return cell


def run_cs(exp: dict, out: Path, log=print, docs: Path | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    train, tests = _images(exp, log)
    D = dictionary(exp, train, out, log)
    dd, tr, te = exp["data"], exp["train"], exp["test"]
    pool = cs.PatchPool.build(list(train.values()), dd["patch"], dd["train_patches"], dd["val"], dd["val"],
                              exp["seed"])
    res_file = out / "results.json"
    results = json.loads(res_file.read_text()) if res_file.exists() else {}
    strides = [int(s) for s in te["strides"]]
    for ratio in tr["ratios"]:
        prob = cs.PatchCSProblem(D, pool, ratio, exp["seed"])
        xv, yv = prob.validation(torch.float64)
        for iters in te["fista_iters_per_ratio"].get(str(ratio), te["fista_iters"]):
            key = f"{ratio}/fista-{iters}"
            if key not in results:
                lam = baselines.tune_fista(prob.A, yv, xv, iters, prob.decode)
                A = prob.A

                def solve(y, lam=lam, iters=iters, A=A):
                    return solvers.final(solvers.fista(A, torch.from_numpy(y), lam, iters)).numpy()

                recs: dict = {}
                results[key] = dict(label=f"FISTA ({iters} it.)", lam=lam, psnr=_scores(prob, solve, tests, strides,
                                                                                       recs))
                _save_pngs(out / "png" / f"r{ratio}" / f"fista-{iters}", recs)
                write_json(res_file, results)
                log(f"{key}: {np.mean(list(results[key]['psnr'][str(strides[0])].values())):.2f} dB (lam {lam:g})")
        samples = int(tr["samples_per_ratio"].get(str(ratio), tr["samples"]))
        for m in exp["models"]:
            key = f"{ratio}/{m['label']}"
            if key in results:
                continue
            start = time.time()
            try:
                run = api.train(prob, m["model"], m["config"], budget=samples, lr=tr["lr"], batch=tr["batch"],
                                eval_every=tr["eval_every"], seed=exp["seed"], out=out / f"r{ratio}" / m["label"],
                                resume=True, log=lambda s: None)
            except Diverged as e:  # a visible flag in the table, never a number
                results[key] = dict(label=m["label"], model=m["model"], samples=samples, diverged=str(e))
                write_json(res_file, results)
                log(f"{key}: diverged ({e})")
                continue
            recs = {}
            results[key] = dict(label=m["label"], model=m["model"], samples=samples,
                                seconds=run.result.get("seconds", time.time() - start),
                                psnr=_scores(prob, lambda y, run=run: run.predict(y), tests, strides, recs))
            _save_pngs(out / "png" / f"r{ratio}" / m["label"], recs)
            write_json(res_file, results)
            log(f"{key}: {np.mean(list(results[key]['psnr'][str(strides[0])].values())):.2f} dB "
                f"({samples:,} samples, {results[key]['seconds']:.0f} s)")
    return report(exp, results, tests, out, docs)


def _save_pngs(folder: Path, recs: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rec in recs.items():
        data.save_png(folder / f"{name}.png", rec)


def _mean(cell: dict, stride: int) -> float:
    return float(np.mean(list(cell["psnr"][str(stride)].values())))


def report(exp: dict, results: dict, tests: dict, out: Path, docs: Path | None) -> Path:
    tr, te = exp["train"], exp["test"]
    ratios, strides = sorted(tr["ratios"]), [int(s) for s in te["strides"]]
    labels = [f"fista-{i}" for i in te["fista_iters"]] + [m["label"] for m in exp["models"]]
    paper = exp["paper"]
    lines = [f"# {exp['title']} ({exp['budget']} budget)", "", f"Reproduces: {exp['reproduces']}", "",
             exp["notes"].strip(), ""]
    for s in strides:
        how = "non-overlapping" if s == exp["data"]["patch"] else f"overlapping, stride {s}, overlaps averaged"
        lines += [f"## Average PSNR (dB) over the {len(tests)} test images: 16x16 patches, {how}; "
                  f"per-patch mean removed and restored (the reference's)", ""]
        header = ["method"] + [f"{r:.0%}" for r in ratios] + ["paper 50 % (BSD500)", "training samples per ratio"]
        rows = []
        for lab in labels:
            cells = [results.get(f"{r}/{lab}") for r in ratios]
            if not any(cells):  # a method this budget never runs (FISTA 200 at one ratio only, ...)
                continue
            name = next((c["label"] for c in cells if c), lab)
            rows.append([name] + [("diverged" if "diverged" in c else _mean(c, s)) if c else "-" for c in cells]
                        + [paper.get(lab, {}).get("psnr", "-") if isinstance(paper.get(lab), dict) else "-",
                           " / ".join(f"{c['samples']:,}" for c in cells if c and "samples" in c) or "untrained"])
        lines += [md_table(header, rows), ""]
    if paper:
        lines += ["Published numbers: " + "; ".join(f"{k} {v['psnr']} dB ({v.get('source', '')})"
                                                  for k, v in paper.items()), ""]
    r50 = 0.5 if 0.5 in ratios else ratios[-1]
    lines += [f"## PSNR (dB) per test image at {r50:.0%}, non-overlapping", ""]
    names_ = list(tests)
    rows = [[results[f"{r50}/{lab}"]["label"]] + [results[f"{r50}/{lab}"]["psnr"][str(strides[0])][n]
                                                  for n in names_] for lab in labels
            if f"{r50}/{lab}" in results and "psnr" in results[f"{r50}/{lab}"]]
    lines += [md_table(["method"] + names_, rows), ""]
    figure = _figure(exp, results, labels, r50, out, docs)
    if figure:
        lines += [f"![reconstructions]({figure})", ""]
    text = "\n".join(lines) + "\n"
    path = (docs / "repro" if docs else out) / f"{exp['name']}-{exp['budget']}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)
    return path


def _figure(exp: dict, results: dict, labels: list[str], ratio: float, out: Path, docs: Path | None) -> str:
    """Original, FISTA, ALISTA and the best learned model side by side (128 x 128 centre crops)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    learned = [lab for lab in labels if not lab.startswith("fista") and "psnr" in results.get(f"{ratio}/{lab}", {})]
    fista = [lab for lab in labels if lab.startswith("fista") and f"{ratio}/{lab}" in results]
    if not learned or not fista:
        return ""
    best = max(learned, key=lambda lab: _mean(results[f"{ratio}/{lab}"], int(exp["test"]["strides"][0])))
    cols = [("original", None), (results[f"{ratio}/{fista[-1]}"]["label"], fista[-1])]
    alista = next((lab for lab in learned if results[f"{ratio}/{lab}"].get("model") == "alista"), None)
    if alista and best != alista:
        cols.append((results[f"{ratio}/{alista}"]["label"], alista))
    cols.append((f"best learned: {results[f'{ratio}/{best}']['label']}", best))
    names_ = [n for n in exp["test"]["figure"] if (out / "png" / f"r{ratio}" / best / f"{n}.png").exists()]
    if not names_:
        return ""
    iio = data.require("imageio.v3")
    tests = data.test_images(exp["test"]["folder"] or None, tuple(names_))
    fig, axes = plt.subplots(len(names_), len(cols), figsize=(2.2 * len(cols), 2.7 * len(names_)), squeeze=False)
    for i, n in enumerate(names_):
        im = tests[n]
        r0, c0 = (im.shape[0] - 128) // 2, (im.shape[1] - 128) // 2
        for j, (title, lab) in enumerate(cols):
            img = im if lab is None else iio.imread(out / "png" / f"r{ratio}" / lab / f"{n}.png").astype(float)
            ax = axes[i, j]
            ax.imshow(img[r0:r0 + 128, c0:c0 + 128], cmap="gray", vmin=0, vmax=255)
            score = None if lab is None else results[f"{ratio}/{lab}"]["psnr"][str(exp["test"]["strides"][0])][n]
            sub = "" if lab is None else f"\n{score:.2f} dB"
            ax.set_title(f"{title}{sub}" if i == 0 else sub.strip(), fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    target = (docs / "images" if docs else out) / f"{exp['name']}-{exp['budget']}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=80)
    plt.close(fig)
    return f"../images/{target.name}" if docs else target.name


def md_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table; floats with two decimals."""
    def cell(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
