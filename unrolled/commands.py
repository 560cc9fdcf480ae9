"""Commands built on the model zoo and the trainer: train, eval and the demo (main job)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import time
from pathlib import Path

import torch

from . import evaluate as E
from .errors import UsageError, check
from .io import sha256
from .models import MODELS, build, make_config
from .problem import Problem, ProblemSpec
from .train import (
    Stage,
    Trainer,
    TrainOptions,
    finish_run,
    load_weights,
    make_schedule,
    read_run_config,
    write_run_config,
)


def parse_sets(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items or []:
        check("=" in item, f"--set {item!r} must look like key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


# -- train --------------------------------------------------------------------------------------


def new_run(a: argparse.Namespace) -> tuple[Trainer, dict]:
    check(a.problem is not None, "train needs a PROBLEM file (or --resume RUN)")
    check(a.model is not None, f"train needs --model; valid: {', '.join(sorted(MODELS))}")
    check(a.out is not None, "train needs --out RUN (a new run directory)")
    out = Path(a.out)
    check(not (out / "progress.json").exists(), f"{out} already holds a run; continue it with --resume {out}")
    problem = Problem.load(a.problem)
    check(a.model in MODELS, f"unknown model {a.model!r}; valid: {', '.join(sorted(MODELS))}")
    config = make_config(MODELS[a.model].Config, {**parse_sets(a.set), "K": a.layers})
    init_from = check_init_from(Path(a.init_from), build(a.model, problem, config)) if a.init_from else None
    options = TrainOptions(batch=a.batch, loss=a.loss, loss_lam=a.loss_lam, eval_every=a.eval_every, seed=a.seed)
    kw = dict(samples=a.budget_samples, batch=a.batch)
    if a.lr is not None:
        kw["lr"] = a.lr
    if a.patience is not None:
        kw["patience"] = a.patience
    stages = make_schedule(a.schedule, config.K, **kw)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("metrics.jsonl", "weights.safetensors", "result.json", "eval.csv"):
        (out / stale).unlink(missing_ok=True)
    shutil.copyfile(a.problem, out / ".problem.npz.tmp")
    (out / ".problem.npz.tmp").replace(out / "problem.npz")
    run_cfg = dict(model=a.model, model_config=dataclasses.asdict(config), schedule=a.schedule,
                   stages=[s.to_dict() for s in stages], options=dataclasses.asdict(options),
                   problem=dict(source=str(Path(a.problem).resolve()), sha256=sha256(out / "problem.npz"),
                                spec=json.loads(problem.spec.to_json())),
                   device=str(a.device), torch=torch.__version__)
    if init_from:
        run_cfg["init_from"] = init_from
    write_run_config(out, run_cfg)
    return make_trainer(out, run_cfg, problem, a.device), run_cfg


def check_init_from(init: Path, model: torch.nn.Module) -> dict:
    """The warm-start reference ``{run, model, weights_sha256}`` of a finished run whose weights
    fit ``model`` (the same family, or one with the same parameters: ALISTA -> ALISTA-AT)."""
    src = read_run_config(init)
    check((init / "result.json").exists(), f"--init-from {init} has not finished training (no result.json)")
    result = json.loads((init / "result.json").read_text())
    load_weights(model, init / "weights.safetensors", result["weights_sha256"])  # refuses a misfit in one line
    return dict(run=str(init.resolve()), model=src["model"], weights_sha256=result["weights_sha256"])


def make_trainer(run: Path, cfg: dict, problem: Problem, device: torch.device) -> Trainer:
    torch.manual_seed(cfg["options"]["seed"])  # model initialisations that draw random numbers
    model = build(cfg["model"], problem, cfg["model_config"])
    if "init_from" in cfg:  # a warm start: the parameters of another run (any config, fitting tensors)
        init = cfg["init_from"]
        load_weights(model, Path(init["run"]) / "weights.safetensors", init["weights_sha256"])
    model = model.to(device)
    stages = [Stage(**{**s, "layers": tuple(s["layers"])}) for s in cfg["stages"]]
    return Trainer(model, problem, stages, TrainOptions(**cfg["options"]), run)


def load_run(run: str | Path, device: torch.device | str = "cpu", overrides: dict | None = None) -> tuple:
    """``(model, problem, config, result)`` of a finished run, weights verified by hash.

    ``overrides`` change model-config fields that leave the weights' shapes alone (e.g. the
    support-selection ramp ``ss_ramp``); anything else fails to load with a one-line error.
    """
    run = Path(run)
    cfg = read_run_config(run)
    problem = Problem.load(run / "problem.npz")
    result_path = run / "result.json"
    check(result_path.exists(), f"{run} has not finished training (no result.json); continue it with --resume")
    result = json.loads(result_path.read_text())
    torch.manual_seed(cfg["options"]["seed"])
    model = build(cfg["model"], problem, {**cfg["model_config"], **(overrides or {})})
    load_weights(model, run / "weights.safetensors", result["weights_sha256"])
    return model.to(device), problem, cfg, result


def cmd_train(a: argparse.Namespace) -> None:
    if a.resume:
        run = Path(a.resume)
        cfg = read_run_config(run)
        problem = Problem.load(run / "problem.npz")
        check(sha256(run / "problem.npz") == cfg["problem"]["sha256"], f"{run}/problem.npz was modified")
        device = a.device if a.device_given else torch.device(cfg["device"])
        trainer = make_trainer(run, cfg, problem, device)
        if (run / "progress.json").exists():
            trainer.resume()
            print(f"resuming {run} at stage {trainer.c['stage'] + 1}/{len(trainer.stages)}, "
                  f"step {trainer.c['step']}, {trainer.c['samples']:,} samples")
    else:
        trainer, cfg = new_run(a)
        run = Path(a.out)
        print(f"training {cfg['model']} (K={cfg['model_config']['K']}) with the {cfg['schedule']} schedule: "
              f"{len(trainer.stages)} stage(s), budget {a.budget_samples:,} samples, device {trainer.device}")
    trainer.run()
    finish_run(trainer)
    print(f"done: {trainer.c['samples']:,} samples in {trainer.seconds:.0f} s; "
          f"weights in {run / 'weights.safetensors'}")


# -- eval ---------------------------------------------------------------------------------------


def evaluate_run(run: Path, a: argparse.Namespace, baselines: bool = True) -> list[dict]:
    from .cli import load_test, test_snr

    overrides = parse_sets(getattr(a, "set", None))
    model, problem, cfg, result = load_run(run, a.device, overrides)
    split = getattr(a, "split", "test")
    if split == "validation":
        check(not a.test_x and a.snr is None and a.test_size is None,
              "--split validation evaluates the run's own validation set; drop --test-x, --snr and --test-size")
        x, y = problem.validation(torch.float64)
    else:
        x, y = load_test(problem, a)
    meta = dict(run=str(run), samples=result["samples"], seconds=round(result["seconds"], 1),
                device=result["device"], seed=cfg["options"]["seed"], schedule=cfg["schedule"], split=split,
                overrides=json.dumps(overrides, sort_keys=True) if overrides else "",
                test_size=len(x), torch=torch.__version__)
    rows = E.evaluate_model(model, x, y, cfg["model"])
    if baselines:
        rows += E.baseline_rows(problem, x, y, model.K)
    rows += E.oracle_rows(problem.A, x, y, test_snr(problem, a))
    return [{**meta, **r} for r in rows]


def eval_csv_name(split: str, overrides: dict[str, str]) -> str:
    """``eval.csv`` for the plain test evaluation; otherwise a name that says what differs."""
    if split == "test" and not overrides:
        return "eval.csv"
    tag = ",".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", f"eval-{split}" + (f"-{tag}" if tag else "")) + ".csv"


def cmd_eval(a: argparse.Namespace) -> None:
    run = Path(a.run)
    rows = evaluate_run(run, a)
    which = "validation set" if a.split == "validation" else "test set"
    changed = f"; config changed: {rows[0]['overrides']}" if rows[0]["overrides"] else ""
    print(f"{run}: {rows[0]['samples']:,} training samples, {rows[0]['seconds']} s; "
          f"{which} {rows[0]['test_size']}{changed}")
    print(E.format_table(rows))
    out = run / eval_csv_name(a.split, parse_sets(a.set))
    E.to_csv(rows, out)
    print(f"wrote {out}")


# -- demo (main job) ----------------------------------------------------------------------------

# model: (samples, lr, config) — end to end, count-form support selection with the |z| > theta
# condition (docs/results.md: what mattered); sized for 5 minutes on 2 CPU cores.
DEMO_MODELS = {
    "alista": (300_000, 2e-3, ["ss=count", "ss_theta=true"]),
    "na-alista": (150_000, 1e-3, ["ss=count", "ss_theta=true", "head=reference"]),
}


def cmd_demo(a: argparse.Namespace) -> None:
    """Standard 250x500 problem: train ALISTA and NA-ALISTA, compare with ISTA/FISTA and the oracle."""
    from .plots import plot_layers

    start = time.perf_counter()
    out = Path(a.out)
    problem = Problem(ProblemSpec(m=250, n=500, p=0.1, snr=a.snr, seed=a.seed, test_size=a.test_size))
    path = problem.save(out / "problem.npz")
    print(f"problem: {problem} -> {path}")
    rows = []
    for name, (samples, lr, sets) in DEMO_MODELS.items():
        run = out / name
        if (run / "result.json").exists():
            print(f"{name}: already trained in {run}")
        else:
            args = argparse.Namespace(problem=str(path), model=name, layers=a.layers, out=str(run), set=sets,
                                      batch=512, loss="mse", loss_lam=0.1, eval_every=50, seed=a.seed,
                                      budget_samples=samples, lr=lr, patience=None, schedule="end-to-end",
                                      device=torch.device("cpu"), resume=None, init_from=None)
            if (run / "progress.json").exists():
                args.resume, args.device_given = str(run), False
            cmd_train(args)
        ev = argparse.Namespace(device="cpu", test_x=None, test_size=None, snr=None)
        rows += [r for r in evaluate_run(run, ev, baselines=not rows) if r["layer"] != "" or not rows]
    print(E.format_table(rows))
    E.to_csv(rows, out / "demo.csv")
    plot_layers(rows, out / "demo.png", f"250x500, p=0.1, {a.snr:g} dB, test set of {a.test_size}")
    print(f"wrote {out / 'demo.csv'} and {out / 'demo.png'} ({time.perf_counter() - start:.0f} s in all)")


def add_commands(sub) -> None:
    from .cli import add_test_options, device_arg, number, positive_int
    from .repro import add_repro_command
    from .train import LOSSES, SCHEDULES

    pt = sub.add_parser("train", help="train a model into a resumable run directory")
    pt.add_argument("problem", nargs="?", help="problem file (.npz) from `unrolled problem create`")
    pt.add_argument("--model", help=f"one of: {', '.join(sorted(MODELS))}")
    pt.add_argument("--layers", type=positive_int, default=16, help="K (default %(default)s)")
    pt.add_argument("--out", help="new run directory")
    pt.add_argument("--resume", metavar="RUN", help="continue an interrupted run")
    pt.add_argument("--schedule", choices=sorted(SCHEDULES), default="end-to-end")
    pt.add_argument("--loss", choices=LOSSES, default="mse")
    pt.add_argument("--loss-lam", type=number, default=0.1, help="lambda of the Lasso loss (lasso, semi)")
    pt.add_argument("--budget-samples", type=positive_int, default=2_000_000)
    pt.add_argument("--batch", type=positive_int, default=512)
    pt.add_argument("--lr", type=number, default=None, help="base learning rate (schedule default if omitted)")
    pt.add_argument("--patience", type=positive_int, default=None, help="steps without improvement per stage")
    pt.add_argument("--eval-every", type=positive_int, default=50, help="validate and checkpoint every N steps")
    pt.add_argument("--set", action="append", metavar="KEY=VALUE", help="model config field (repeatable)")
    pt.add_argument("--device", type=device_arg, default=None)
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--init-from", metavar="RUN", help="start from the trained weights of RUN (same model; "
                    "its config may differ, e.g. in support selection: a curriculum)")
    pt.set_defaults(func=train_entry)

    pe = sub.add_parser("eval", help="per-layer NMSE of a run next to ISTA/FISTA and the oracle; writes RUN/eval.csv")
    pe.add_argument("run")
    add_test_options(pe)
    pe.add_argument("--split", choices=["test", "validation"], default="test",
                    help="validation: the run's validation set, to choose inference settings without the test set")
    pe.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="evaluate with a model-config field changed (e.g. ss_ramp=0.5); "
                         "writes RUN/eval-SPLIT-KEY=VALUE.csv")
    pe.add_argument("--device", type=device_arg, default=torch.device("cpu"))
    pe.set_defaults(func=cmd_eval)

    pd = sub.add_parser("demo", help="the main job: train ALISTA and NA-ALISTA, table and plot vs ISTA/FISTA")
    pd.add_argument("--out", default="runs/demo")
    pd.add_argument("--snr", type=number, default=40.0)
    pd.add_argument("--seed", type=int, default=0)
    pd.add_argument("--layers", type=positive_int, default=16)
    pd.add_argument("--test-size", type=positive_int, default=10000)
    pd.set_defaults(func=cmd_demo)
    add_repro_command(sub)


def train_entry(a: argparse.Namespace) -> None:
    a.device_given = a.device is not None
    a.device = a.device or torch.device("cpu")
    if a.resume and (a.out or a.problem or a.model):
        raise UsageError("--resume RUN continues a run as configured; drop PROBLEM, --model and --out")
    cmd_train(a)
