"""Commands on runs: ``train`` (new or ``--resume``) and ``eval``."""

from __future__ import annotations

import argparse

import torch

from .. import api, recipes
from .. import evaluation as E
from ..errors import check
from ..io import check_writable
from ..models import MODELS
from ..training import LOSSES, SCHEDULES
from . import robust
from .args import add_test_options, device_arg, finite, parse_sets, positive, positive_int, seed_int
from .data import add_data_options, data_spec, eval_tags


def fit(training: api.Training, budget: int | None = None) -> api.Run:
    """Run ``training``, saying what starts (or resumes) and what it took."""
    t, cfg = training.trainer, training.config
    if training.resumed:
        print(f"resuming {training.dir} at stage {t.c['stage'] + 1}/{len(t.stages)}, "
              f"step {t.c['step']}, {t.c['samples']:,} samples")
    elif budget is not None:
        print(f"training {cfg['model']} (K={training.model.K}) with the {cfg['schedule']} schedule: "
              f"{len(t.stages)} stage(s), budget {budget:,} samples, device {t.device}")
    if t is not None and t.data is not None:
        print(t.data.description)
    run = training.run()
    if run.result.get("retried"):
        print(f"note: {run.result['retried']}")
    check(not run.result.get("failed"), f"training failed: {run.result.get('failed')}; weights kept in "
                                        f"{run.dir.weights_file} (the run is marked failed)")
    print(f"done: {run.result['samples']:,} samples in {run.result['seconds']:.0f} s; "
          f"weights in {run.dir.weights_file}")
    return run


def cmd_train(a: argparse.Namespace) -> None:
    if a.resume:
        check(not (a.out or a.problem or a.model),
              "--resume RUN continues a run as configured; drop PROBLEM, --model and --out")
        given = [f"--{d.replace('_', '-')}" for d, v in a.train_defaults.items() if getattr(a, d) != v]
        check(not given, f"--resume RUN continues a run as configured (its settings cannot change part-way); "
                         f"drop {', '.join(given)}")
        fit(api.reopen(a.resume, a.device))
        return
    check(a.problem is not None, "train needs a PROBLEM file (or --resume RUN)")
    check(a.model is not None, f"train needs --model; valid: {', '.join(sorted(MODELS))}")
    check(a.out is not None, "train needs --out RUN (a new run directory)")
    sets = parse_sets(a.set)
    check("K" not in sets, "give the depth with --layers K, not --set K=...")
    if a.arch:  # a stored architecture (`unrolled search report` writes average.json)
        sets, a.layers = arch_sets(a, sets)
    r = recipes.recipe(a.model)  # what an option not given means (unrolled/recipes.py)
    sets = recipes.config(a.model, sets)
    a.schedule = a.schedule or r.schedule
    a.lr = r.lr if a.lr is None and a.schedule == r.schedule else a.lr
    a.batch = a.batch or r.batch
    a.budget_samples = a.budget_samples or r.budget
    if a.perturb is not None:  # training on perturbed matrices (unrolled/cli/robust.py)
        return robust.train(a, sets)
    check(a.budget_samples >= a.batch, f"--budget-samples {a.budget_samples:,} is less than one batch "
                                       f"(--batch {a.batch:,}); give a budget of at least one batch")
    training = api.prepare(a.problem, a.model, {**sets, "K": a.layers}, recipes.schedule(a.model, a.schedule),
                           a.budget_samples, a.out, a.device or torch.device("cpu"), lr=a.lr, patience=a.patience,
                           init_from=a.init_from, batch=a.batch, loss=a.loss, loss_lam=a.loss_lam,
                           eval_every=a.eval_every, seed=a.seed, data=data_spec(a))
    fit(training, a.budget_samples)


def arch_sets(a: argparse.Namespace, sets: dict) -> tuple[dict, int]:
    """``--arch FILE``: its gates, neurons and injection as config fields, and its depth."""
    from ..models.design_space import load_arch

    check(a.model in ("lwa", "dense-lista"), f"--arch is a design-space architecture; use --model lwa, not {a.model}")
    arch = load_arch(a.arch)
    both = sorted(set(sets) & {"gates", "neurons", "injection"})
    check(not both, f"--arch sets {', '.join(both)} already; drop --set {'/'.join(both)}=...")
    check(a.layers in (a.train_defaults["layers"], arch["K"]), f"--arch {a.arch} has K={arch['K']}; drop --layers")
    return {**sets, **{k: v for k, v in arch.items() if k != "K"}}, arch["K"]


def cmd_eval(a: argparse.Namespace) -> None:
    overrides = parse_sets(a.set)
    if a.split == "validation":
        check(not a.test_x and a.snr is None and a.test_size is None,
              "--split validation evaluates the run's own validation set; drop --test-x, --snr and --test-size")
    run = api.load(a.run, a.device, overrides)
    out = check_writable(a.out, "--out") if a.out else run.dir.eval_csv(a.split, {**overrides, **eval_tags(a)})
    baselines = [b.strip() for b in a.baselines.split(",") if b.strip()] if a.baselines is not None else api.BASELINES
    rows = api.evaluate(run, split=a.split, test_x=a.test_x, test_size=a.test_size, snr=a.snr, baselines=baselines)
    which = "validation set" if a.split == "validation" else "test set"
    changed = f"; config changed: {rows[0]['overrides']}" if rows[0]["overrides"] else ""
    print(f"{run.dir}: {rows[0]['samples']:,} training samples, {rows[0]['seconds']} s; "
          f"{which} {rows[0]['test_size']}{changed}")
    if run.result.get("failed"):
        print(f"note: this run FAILED in training ({run.result['failed']}); its numbers are shown for diagnosis only")
    print(E.format_table(rows))
    if a.ci:
        print(confidence_line(run, rows, a))
    E.to_csv(rows, out)
    print(f"wrote {out}")


def confidence_line(run: api.Run, rows: list[dict], a: argparse.Namespace) -> str:
    """The bootstrap interval of the model's final-layer aggregate NMSE on the evaluated set (added to its row)."""
    from ..metrics import nmse_interval

    x, y = E.evaluation_set(run.problem, a.split, a.test_x, a.test_size, a.snr)
    model = run.model
    with torch.inference_mode():
        x_hat = torch.cat([model(yc.to(model.A.device, model.A.dtype)).cpu() for _, yc in E.chunks(x, y, 2000)])
    lo, hi = nmse_interval(x_hat, x, a.ci)
    final = max((r for r in rows if r["method"] == rows[0]["method"]), key=lambda r: r["layer"])
    final.update(ci_level=a.ci, ci_low=lo, ci_high=hi)
    return (f"{100 * a.ci:g} % bootstrap interval of {final['method']} at layer {final['layer']}: "
            f"[{lo:.2f}, {hi:.2f}] dB around {final['nmse_db']:.2f} dB (the ratio of summed errors to summed "
            f"energies, recomputed on 2000 resamplings of the {len(x):,} vectors; scipy.stats.bootstrap)")


def ci_level(text: str) -> float:
    value = finite(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text}: the confidence level must lie strictly between 0 and 1, e.g. 0.95")
    return value


def add_commands(sub: argparse._SubParsersAction) -> None:
    pt = sub.add_parser("train", help="train a model into a resumable run directory",
                        description="Train an unrolled network for PROBLEM into the run directory --out. With no "
                                    "other option a model trains with its recipe (unrolled/recipes.py, "
                                    "`unrolled list` shows it): " + "; ".join(
                                        f"{m}: {r.describe()}" for m, r in recipes.RECIPES.items())
                                    + "; other models: " + recipes.DEFAULT.describe() + ".")
    pt.add_argument("problem", nargs="?", help="problem file (.npz) from `unrolled problem create`")
    pt.add_argument("--model", help=f"the network to train, one of: {', '.join(sorted(MODELS))}")
    pt.add_argument("--layers", type=positive_int, default=16, help="depth K (number of unrolled layers)")
    pt.add_argument("--out", help="a new (or empty) run directory; it holds the weights, logs and results")
    pt.add_argument("--resume", metavar="RUN", help="continue an interrupted run exactly where it stopped")
    pt.add_argument("--schedule", choices=sorted(SCHEDULES), default=None,
                    help="end-to-end: all layers at once, cosine-annealed; stagewise: layer by layer (ALISTA "
                         "papers); paper-stagewise: the reference code's protocol (default: the model's recipe)")
    pt.add_argument("--loss", choices=LOSSES, default="mse",
                    help="mse: final layer; mse-layers: every layer; lasso: unsupervised Lasso objective; "
                         "semi: a labelled fraction plus Lasso")
    pt.add_argument("--loss-lam", type=finite, default=0.1, help="lambda of the Lasso loss (lasso, semi)")
    pt.add_argument("--budget-samples", type=positive_int, default=None,
                    help=f"training samples in all (default: the recipe's, {recipes.BUDGET:,} for most models)")
    pt.add_argument("--batch", type=positive_int, default=None, help="samples per step (default: the recipe's, 512)")
    pt.add_argument("--lr", type=positive, default=None,
                    help="base learning rate (default: the recipe's with its schedule, else the schedule's)")
    pt.add_argument("--patience", type=positive_int, default=None,
                    help="steps without a validation improvement that end a stage (default: the schedule's)")
    pt.add_argument("--eval-every", type=positive_int, default=50, help="validate and checkpoint every N steps")
    pt.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="a model config field, over the recipe's (repeatable; `unrolled list` shows the fields; "
                         "e.g. ss=count, ss.ramp=0.5 for support selection, gamma0=0.5, bound=false)")
    pt.add_argument("--device", type=device_arg, default=None, help="cpu (default; --resume: the run's own) or cuda")
    pt.add_argument("--seed", type=seed_int, default=0, help="seed of the training batches")
    pt.add_argument("--init-from", metavar="RUN", help="start from the trained weights of RUN (same model; "
                    "its config may differ, e.g. in support selection: a curriculum)")
    pt.add_argument("--arch", metavar="FILE", help="a design-space architecture (lwa, dense-lista): the gates, "
                    "neurons, injection and K of a JSON file such as `unrolled search report`'s average.json")
    robust.add_options(pt)
    settings = ("layers", "schedule", "loss", "loss_lam", "budget_samples", "batch", "lr", "patience", "eval_every",
                "set", "seed", "init_from", "arch", *add_data_options(pt))  # what --resume may not change
    pt.set_defaults(func=cmd_train, train_defaults={d: pt.get_default(d) for d in settings})

    pe = sub.add_parser("eval", help="per-layer NMSE of a run next to ISTA/FISTA and the oracle; writes RUN/eval.csv")
    pe.add_argument("run")
    add_test_options(pe)
    pe.add_argument("--split", choices=["test", "validation"], default="test",
                    help="validation: the run's validation set, to choose inference settings without the test set")
    pe.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="evaluate with a model-config field changed (e.g. ss.ramp=0.5); "
                         "writes RUN/eval-SPLIT-KEY=VALUE.csv")
    pe.add_argument("--device", type=device_arg, default=torch.device("cpu"))
    pe.add_argument("--baselines", default=None, metavar="LIST",
                    help="baselines beside the model (default ista,fista,amp; '' for none): ista, fista, oista, "
                         "ista-bt, amp, vamp, omp, iht, cosamp, lasso-cd")
    pe.add_argument("--ci", type=ci_level, nargs="?", const=0.95, default=None, metavar="LEVEL",
                    help="a bootstrap confidence interval of the model's final-layer NMSE (level 0.95 if not given)")
    pe.add_argument("--out", metavar="CSV", help="results file (default RUN/eval.csv; with --test-x or --snr a "
                    "name that says so, e.g. RUN/eval-test-test-x=X.csv, so that eval.csv is not overwritten)")
    pe.set_defaults(func=cmd_eval)
