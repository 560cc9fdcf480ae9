"""The convolutional denoising experiment (the ALISTA repository's ``denoise`` task).

Under ``out``: the convolutional dictionary (``conv_dictionary.npz``, learned once), each trained
model's weights (``NAME.safetensors``, written when its training ends; a killed training restarts
that model from scratch: a :class:`~unrolled.images.conv.ConvDenoiseProblem` holds filters, not a
matrix, so it does not fit a run directory's ``problem.npz``), and ``results.json`` with every
finished cell.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .. import api
from ..io import load_safetensors, save_safetensors, write_json, write_text
from ..models import build
from . import baselines, data
from . import conv as C
from . import dictionary as Dm
from .patches import psnr, random_patches
from .run_cs import md_table


def filters_of(exp: dict, train: dict, out: Path, log) -> np.ndarray:
    d = exp["dictionary"]
    if d["file"]:
        return Dm.load_conv_dictionary(d["file"], d["key"] or None, d["layout"])
    path = out / "conv_dictionary.npz"
    if not path.exists():
        log(f"learning {d['filters']} filters of {d['size']}x{d['size']} with sporco ({d['iterations']} iterations, "
            f"{d['crops']} crops of {d['crop']}x{d['crop']}) ...")
        start = time.time()
        F = Dm.learn_conv_dictionary(list(train.values()), d["filters"], d["size"], d["lam"], d["iterations"],
                                     d["crop"], d["crops"], exp["seed"])
        meta = dict(source=exp["data"]["training"], lam=d["lam"], seconds=time.time() - start)
        Dm.save_conv_dictionary(path, F, meta)
    return Dm.load_conv_dictionary(path, "D", "torch")


def analytic_report(F: np.ndarray, seed: int) -> list[list]:
    """Closed form, the reference's PGD, W = D and a random W (the last two projected on the constraint)."""
    rows = []
    start = time.perf_counter()
    W = C.closed_form(F)
    rows.append(["closed form (Fourier Gram)", W, time.perf_counter() - start, ""])
    start = time.perf_counter()
    Wp, it, change = C.pgd(F, iters=500)
    rows.append(["PGD (CalculateW_conv.m, 500 it., step 1/max S)", Wp, time.perf_counter() - start,
                 f"{it} it., last change {change:.1e}"])
    rows.append(["W = D", C.project(F.copy(), F), 0.0, ""])
    R = np.random.default_rng(seed).standard_normal(F.shape)
    rows.append(["random W", C.project(R, F), 0.0, ""])
    return [[name, C.objective(Wk, F), C.coherence(Wk, F), float(np.abs(C.constraint(Wk, F) - 1).max()), sec, note]
            for name, Wk, sec, note in rows]


def denoise_with(model, noisy: np.ndarray) -> np.ndarray:
    """A conv model on a whole noisy image (0-255): its mean removed and restored, as in training."""
    mean = noisy.mean()
    y = torch.from_numpy((noisy - mean) / 255.0).to(model.A.dtype)[None]
    return model.denoise(y)[0].double().numpy() * 255.0 + mean


def run_denoise(exp: dict, out: Path, log=print, docs: Path | None = None) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    dd, tr, te = exp["data"], exp["train"], exp["test"]
    folder = dd["training"]
    train = data.training_images(None if folder == "packaged" else folder, dd["crop"], log)
    tests = data.test_images(te["folder"] or None, tuple(te["images"]) or data.SET11, dd["crop"])
    F = filters_of(exp, train, out, log)
    sigma = float(dd["sigma"])
    res_file = out / "results.json"
    results = json.loads(res_file.read_text()) if res_file.exists() else {}
    if "analytic" not in results:
        results["analytic"] = analytic_report(F, exp["seed"])
        write_json(res_file, results)
    noisy = {n: im + sigma * np.random.default_rng(1000 + i).standard_normal(im.shape)
             for i, (n, im) in enumerate(tests.items())}
    prob = C.ConvDenoiseProblem(F, list(train.values()), dd["crop"], sigma, exp["seed"], dd["val_crops"])
    rng = np.random.default_rng(exp["seed"] + 1)
    tune_clean = list(random_patches(list(train.values()), 8, 96, rng).reshape(8, 96, 96))
    tune_noisy = [c + sigma * rng.standard_normal(c.shape) for c in tune_clean]

    def cell(key, label, fn, **extra):
        if key in results:
            return
        start = time.time()
        recs = {n: fn(noisy[n]) for n in tests}
        results[key] = dict(label=label, psnr={n: psnr(recs[n], tests[n]) for n in tests},
                            seconds=time.time() - start, **extra)
        (out / "png" / key).mkdir(parents=True, exist_ok=True)
        for n, r in recs.items():
            data.save_png(out / "png" / key / f"{n}.png", r)
        write_json(res_file, results)
        log(f"{key}: {np.mean(list(results[key]['psnr'].values())):.2f} dB")

    cell("noisy", f"noisy input (sigma = {sigma:g})", lambda im: im)
    cell("wavelet", "wavelet soft thresholding (sym4, 4 levels, BayesShrink)", lambda im: baselines.wavelet(im, sigma))
    if "tv" not in results:
        w = baselines.tune_tv(tune_clean, tune_noisy, sigma)
        cell("tv", f"TV (Chambolle, weight {w:g})", lambda im: baselines.tv(im, sigma, w), weight=w)
    try:
        baselines.require("bm3d")
        cell("bm3d", "BM3D", lambda im: baselines.bm3d(im, sigma))
    except Exception as e:  # the package is optional: the table says why the row is missing
        results.setdefault("notes", {})["bm3d"] = str(e)
    for m in exp["models"]:
        key = m["label"]
        if key in results:
            continue
        wfile = out / f"{key}.safetensors"
        model = build(m["model"], prob, m["config"], torch.float32)
        start = time.time()
        if wfile.exists():
            model.load_state_dict(load_safetensors(wfile), strict=False)
            seconds = None
        else:
            run = api.train(prob, model, budget=int(tr["samples"]), lr=tr["lr"], batch=tr["batch"],
                            eval_every=tr["eval_every"], seed=exp["seed"], out=None, log=lambda s: None)
            model, seconds = run.model, run.result.get("seconds", time.time() - start)
            save_safetensors(wfile, {k: v.detach() for k, v in model.state_dict().items()}, dict(model=m["model"]))
        cell(key, f"{key} (K = {model.K}, {int(tr['samples']):,} crops)",
             lambda im, model=model: denoise_with(model, im), model=m["model"], samples=int(tr["samples"]),
             train_seconds=seconds)
    iters = int(te["conv_fista_iters"])
    if "conv-fista" not in results:
        xv, yv = prob.validation(torch.float32)  # float32 as the networks: CPU convolutions in float64 are ~8x slower
        best = None
        for lam in (0.003, 0.01, 0.03, 0.1, 0.3):
            m = build("conv-fista", prob, {"K": iters, "lam": lam}, torch.float32)
            with torch.no_grad():
                err = float(((m(yv) - xv) ** 2).sum() / (xv ** 2).sum())
            best = (err, lam) if best is None or err < best[0] else best
        fista = build("conv-fista", prob, {"K": iters, "lam": best[1]}, torch.float32)
        cell("conv-fista", f"conv FISTA ({iters} it., lam {best[1]:g}, same dictionary)",
             lambda im: denoise_with(fista, im), lam=best[1])
    return report(exp, results, tests, out, docs)


def report(exp: dict, results: dict, tests: dict, out: Path, docs: Path | None) -> Path:
    dd, tr = exp["data"], exp["train"]
    lines = [f"# {exp['title']} ({exp['budget']} budget)", "", f"Reproduces: {exp['reproduces']}", "",
             exp["notes"].strip(), "",
             f"Training: random {dd['crop']}x{dd['crop']} crops of the {exp['data']['training']} training images, "
             f"sigma = {dd['sigma']:g} (0-255), {int(tr['samples']):,} crops per model, batch {tr['batch']}, "
             f"lr {tr['lr']:g}, end-to-end schedule.", "",
             "## Analytic convolutional W: coherence objective (sum of squared off-diagonal correlations of W^T D), "
             "mutual coherence, constraint error max|<W_j, D_j> - 1|", "",
             md_table(["W", "objective", "coherence", "constraint error", "seconds", "note"],
                      [[r[0], r[1], r[2], f"{r[3]:.1e}", f"{r[4]:.3f}", r[5]] for r in results["analytic"]]), ""]
    keys = [k for k in results if k not in ("analytic", "notes")]
    names_ = list(tests)
    lines += [f"## PSNR (dB) on the {len(tests)} test images, sigma = {dd['sigma']:g}", "",
              md_table(["method", "average"] + names_,
                       [[results[k]["label"], float(np.mean(list(results[k]["psnr"].values())))]
                        + [results[k]["psnr"][n] for n in names_] for k in keys]), ""]
    for k, v in results.get("notes", {}).items():
        lines += [f"{k}: not run ({v})", ""]
    if exp["paper"]:
        lines += ["Published: " + "; ".join(f"{k}: {v}" for k, v in exp["paper"].items()), ""]
    figure = _figure(exp, results, keys, tests, out, docs)
    if figure:
        lines += [f"![denoised]({figure})", ""]
    text = "\n".join(lines) + "\n"
    path = (docs / "repro" if docs else out) / f"{exp['name']}-{exp['budget']}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, text)
    return path


def _figure(exp: dict, results: dict, keys: list[str], tests: dict, out: Path, docs: Path | None) -> str:
    """Noisy, BM3D, conv FISTA and the best convolutional network beside the original (128 x 128 centre crops)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    learned = [k for k in keys if "model" in results[k]]
    if not learned:
        return ""
    best = max(learned, key=lambda k: np.mean(list(results[k]["psnr"].values())))
    cols = [None] + [k for k in ("noisy", "bm3d", "conv-fista") if k in results] + [best]
    names_ = [n for n in exp["test"]["figure"] if n in tests]
    if not names_:
        return ""
    iio = data.require("imageio.v3")
    fig, axes = plt.subplots(len(names_), len(cols), figsize=(2.2 * len(cols), 2.7 * len(names_)), squeeze=False)
    for i, n in enumerate(names_):
        im = tests[n]
        r0, c0 = (im.shape[0] - 128) // 2, (im.shape[1] - 128) // 2
        for j, k in enumerate(cols):
            img = im if k is None else iio.imread(out / "png" / k / f"{n}.png").astype(float)
            ax = axes[i, j]
            ax.imshow(img[r0:r0 + 128, c0:c0 + 128], cmap="gray", vmin=0, vmax=255)
            title = "original" if k is None else f"{results[k]['label'].split(' (')[0]}\n{results[k]['psnr'][n]:.2f} dB"
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    target = (docs / "images" if docs else out) / f"{exp['name']}-{exp['budget']}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=80)
    plt.close(fig)
    return f"../images/{target.name}" if docs else target.name
