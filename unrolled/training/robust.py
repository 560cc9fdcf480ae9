"""Training on perturbed matrices: encoder pre-training, joint robust ALISTA, data-augmented decoders.

The README of the ALISTA repository trains robust ALISTA in three steps (docs/spec.md §7.3):

1. ``encoder``: the AtoW encoder alone at sigma = 0.01 (``Abs`` = 16 matrices a step), on the
   mean re-weighted coherence loss ``F(W(Ã); Ã)`` (unrolled/models/robust_alista.py);
2. an ALISTA decoder trained on the nominal matrix (an ordinary ``unrolled train`` run);
3. ``joint``: encoder and decoder together on recovery, with the curriculum of
   :func:`unrolled.perturbed.curriculum` (one stage per sigma), ``Abs`` x ``xbs`` = 4 x 16 pairs a
   step and separate learning rates (encoder 1e-9, decoder 1e-4 in the README command).

``augment`` trains any registered model (TiLISTA, ALISTA, ...) on the same perturbed stream and
curriculum. The model does not see Ã: it runs with its own nominal matrix on ``y = Ã x``.

**Why a loop of its own:** :class:`~unrolled.training.Trainer` feeds ``model(y)`` with one fixed
matrix, draws its batches with ``Problem.sample`` and fixes its validation set at construction;
the joint training needs a matrix per group of signals in the forward pass, a sigma per stage
and a validation set per stage. The pieces are the trainer's: Adam (fused), the aggregate NMSE
of docs/spec.md §3, the best validated weights restored at the end of every stage (the incoming
weights are the first candidate), a seeded generator, and a checkpoint after every
validation (weights, best weights, Adam moments and the generator in one atomic safetensors
file), so that a killed run resumes where it was. Learning rate per stage, as the reference:
``lr 0.75^(step / 5000)`` (smooth exponential decay, restarted every stage). A non-finite loss or
gradient skips the step and halves the stage's learning rate; after 20 it is an error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import UsageError, check, choice
from ..io import read_safetensors, save_safetensors, write_json, write_text
from ..metrics import nmse_db
from ..models import UnrolledNet
from ..models.robust_alista import RobustALISTA, rel2_loss
from ..perturbed import PerturbedBatch, curriculum, fixed_set, train_batch
from ..problem import Problem
from .rundir import save_weights

TASKS = ("encoder", "joint", "augment")
MAX_SKIPS = 20


@dataclass
class RobustOptions:
    """One training on perturbed matrices (defaults: the README's joint command, ``maxit`` 50,000)."""

    task: str = "joint"  # encoder | joint | augment
    sigmas: list[float] = field(default_factory=lambda: curriculum(0.02, 5))  # one stage per sigma
    steps: int = 50_000  # per stage (the reference's maxit)
    matrices: int = 4  # Abs
    signals: int = 16  # xbs
    lr: float = 1e-4  # decoder_lr (encoder task: encoder_pre_lr)
    encoder_lr: float = 1e-9  # joint only
    decay: float = 0.75  # lr * decay^(step / decay_steps), per stage
    decay_steps: int = 5000
    snr: float = math.inf  # msigma = 0: noiseless training measurements
    eval_every: int = 50
    val_matrices: int = 8
    val_signals: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        choice(self.task, TASKS, "robust training task")
        self.sigmas = [float(s) for s in self.sigmas]
        check(self.sigmas and all(s >= 0 and math.isfinite(s) for s in self.sigmas),
              f"sigmas={self.sigmas} must be finite numbers >= 0 (one stage each)")
        for name in ("steps", "matrices", "signals", "eval_every", "val_matrices", "val_signals", "decay_steps"):
            check(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        for name in ("lr", "encoder_lr"):
            v = getattr(self, name)
            check(math.isfinite(v) and v > 0, f"{name}={v} must be a finite number > 0")
        check(0 < self.decay <= 1, f"decay={self.decay} must be in (0, 1]")


def encoder_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(model.encoder.parameters()) if isinstance(model, RobustALISTA) else []


def init_from(model: nn.Module, path: str | Path, prefix: str = "") -> list[str]:
    """Copy into ``model`` the parameters of a weights file that fit it (name, shape): an encoder from a
    pre-training run, ALISTA's ``gamma_t, theta_t`` from a nominal run. Returns the names copied."""
    path = Path(path)
    file = path / "weights.safetensors" if path.is_dir() else path
    state, _ = read_safetensors(file)
    own = dict(model.named_parameters())
    copied = [k for k, v in state.items() if k.startswith(prefix) and k in own and own[k].shape == v.shape]
    check(copied, f"{file} holds no parameter of model {getattr(model, 'name', type(model).__name__)!r}")
    with torch.no_grad():
        for k in copied:
            own[k].copy_(state[k])
    return copied


class RobustTrainer:
    """Runs ``options`` on ``model`` over ``problem``'s perturbed stream; checkpoints into ``out``."""

    def __init__(self, model: UnrolledNet, problem: Problem, options: RobustOptions, out: str | Path | None = None,
                 log: Callable[[str], None] = print) -> None:
        o = options
        check(o.task == "augment" or isinstance(model, RobustALISTA),
              f"task {o.task!r} needs model 'robust-alista', got {model.name!r}")
        self.model, self.problem, self.opt, self.log = model, problem, o, log
        self.out = Path(out) if out is not None else None
        self.dtype = model.A.dtype
        enc = {id(p) for p in encoder_parameters(model)}
        if o.task == "encoder":
            groups = [{"params": encoder_parameters(model), "lr": o.lr}]
        else:
            dec = [p for p in model.parameters() if id(p) not in enc]
            groups = [{"params": dec, "lr": o.lr}]
            if enc:
                groups.append({"params": encoder_parameters(model), "lr": o.encoder_lr})
        for g in groups:
            g["base_lr"] = g["lr"]
        self.groups = groups
        self.params = dict(model.named_parameters())
        self.gen = torch.Generator().manual_seed(o.seed)
        self.c = dict(stage=0, step=0, best=math.inf, lr_scale=1.0, skips=0, samples=0, done=False, seconds=0.0)
        self.optim: torch.optim.Adam | None = None
        self.best = self._snapshot()
        self._val: dict[float, PerturbedBatch] = {}

    # -- pieces ---------------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Tensor]:
        return {k: p.detach().clone() for k, p in self.params.items()}

    def _restore(self, snap: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(snap[k])

    def _new_optim(self) -> torch.optim.Adam:
        return torch.optim.Adam([dict(g) for g in self.groups])

    def validation(self, sigma: float) -> PerturbedBatch:
        if sigma not in self._val:
            o = self.opt
            self._val = {sigma: fixed_set(self.problem, "val", sigma, o.val_matrices, o.val_signals, o.snr,
                                          torch.float64).to(self.model.A.device, self.dtype)}
        return self._val[sigma]

    def objective(self, b: PerturbedBatch) -> Tensor:
        """The training loss of a batch: the mean rel2 loss (encoder) or the mean squared error."""
        if self.opt.task == "encoder":
            return rel2_loss(self.model.weights(b.A), b.A).mean()
        return ((self.predict(b) - b.x) ** 2).sum(-1).mean()

    def predict(self, b: PerturbedBatch) -> Tensor:
        if self.opt.task == "augment":
            return self.model(b.y.reshape(-1, b.y.shape[-1])).reshape(b.x.shape)
        return self.model.decode(b.y, b.A)

    @torch.no_grad()
    def validate(self, sigma: float) -> float:
        """Validation at ``sigma``: mean rel2 loss (encoder) or aggregate NMSE in dB."""
        b = self.validation(sigma)
        if self.opt.task == "encoder":
            return float(self.objective(b))
        return nmse_db(self.predict(b).double(), b.x.double())

    # -- checkpoints ------------------------------------------------------------------------------

    def _save(self) -> None:
        if self.out is None:
            return
        t = {f"param/{k}": v for k, v in self._snapshot().items()}
        t.update({f"best/{k}": v for k, v in self.best.items()})
        if self.optim is not None:
            index = {id(p): k for k, p in self.params.items()}
            for g in self.optim.param_groups:
                for p in g["params"]:
                    for name, v in self.optim.state.get(p, {}).items():
                        t[f"optim/{index[id(p)]}/{name}"] = torch.as_tensor(v)
        t["generator"] = self.gen.get_state()
        meta = {"counters": json.dumps(self.c), "options": json.dumps(dataclasses.asdict(self.opt))}
        save_safetensors(self.out / "state.safetensors", t, meta)

    def resume(self) -> bool:
        """Continue from ``out``'s checkpoint if there is one (refused if the options changed)."""
        file = None if self.out is None else self.out / "state.safetensors"
        if file is None or not file.exists():
            return False
        t, meta = read_safetensors(file)
        saved = json.loads(meta["options"])
        now = json.loads(json.dumps(dataclasses.asdict(self.opt)))
        if saved != now:
            diff = sorted(k for k in now if saved.get(k) != now[k])
            raise UsageError(f"{self.out} was started with other options ({', '.join(diff)}); use a new directory")
        self.c.update(json.loads(meta["counters"]))
        self._restore({k[6:]: v for k, v in t.items() if k.startswith("param/")})
        self.best = {k[5:]: v for k, v in t.items() if k.startswith("best/")}
        self.gen.set_state(t["generator"])
        if not self.c["done"]:
            self.optim = self._new_optim()
            for key, v in t.items():
                if key.startswith("optim/"):
                    pname, name = key[6:].rsplit("/", 1)
                    self.optim.state[self.params[pname]][name] = v if name != "step" else v.to(torch.float32)
        return True

    def _metrics(self, row: dict) -> None:
        if self.out is not None:
            with open(self.out / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    # -- the loop -------------------------------------------------------------------------------

    def lock(self) -> None:
        """One writer per directory: ``.lock`` holds the writer's PID (a dead writer's lock is taken over)."""
        self.out.mkdir(parents=True, exist_ok=True)
        lock = self.out / ".lock"
        try:
            pid = int(lock.read_text() or 0)
        except (FileNotFoundError, ValueError):
            pid = 0
        if pid and pid != os.getpid():
            try:
                os.kill(pid, 0)
                raise UsageError(f"{self.out} is being trained by process {pid}; wait for it or stop it")
            except ProcessLookupError:
                pass
        write_text(lock, str(os.getpid()))

    def run(self) -> UnrolledNet:
        o, c = self.opt, self.c
        if self.out is not None:
            self.lock()
            write_json(self.out / "options.json", dataclasses.asdict(o))
        while not c["done"] and c["stage"] < len(o.sigmas):
            sigma = o.sigmas[c["stage"]]
            start = time.perf_counter()
            if self.optim is None:
                self.optim = self._new_optim()
                c["best"] = self.validate(sigma)
                self.best = self._snapshot()
            while c["step"] < o.steps:
                f = c["lr_scale"] * o.decay ** (c["step"] / o.decay_steps)
                for g in self.optim.param_groups:
                    g["lr"] = g["base_lr"] * f
                b = train_batch(self.problem, sigma, o.matrices, o.signals, self.gen, o.snr, torch.float64)
                b = b.to(self.model.A.device, self.dtype)
                loss = self.objective(b)
                self.optim.zero_grad(set_to_none=True)
                if torch.isfinite(loss):
                    loss.backward()
                grads = [p.grad for g in self.optim.param_groups for p in g["params"] if p.grad is not None]
                if not torch.isfinite(loss) or not all(bool(torch.isfinite(gr).all()) for gr in grads):
                    c["skips"] += 1
                    c["lr_scale"] *= 0.5
                    check(c["skips"] < MAX_SKIPS, f"training diverged at sigma={sigma} ({MAX_SKIPS} non-finite "
                                                  f"steps); lower the learning rate")
                    continue
                self.optim.step()
                c["step"] += 1
                c["samples"] += o.matrices * o.signals
                if c["step"] % o.eval_every == 0 or c["step"] == o.steps:
                    val = self.validate(sigma)
                    if val < c["best"]:
                        c["best"], self.best = val, self._snapshot()
                    c["seconds"] += time.perf_counter() - start
                    start = time.perf_counter()
                    self._metrics(dict(stage=c["stage"], sigma=sigma, step=c["step"], loss=float(loss.detach()),
                                       val=val, best=c["best"], seconds=round(c["seconds"], 1)))
                    self._save()
            c["seconds"] += time.perf_counter() - start
            self._restore(self.best)
            unit = "" if o.task == "encoder" else " dB"
            self.log(f"stage {c['stage'] + 1}/{len(o.sigmas)} sigma={sigma:g}: {c['step']} steps, best validation "
                     f"{c['best']:.4g}{unit} ({c['seconds']:.0f} s)")
            c.update(stage=c["stage"] + 1, step=0, best=math.inf, lr_scale=1.0, skips=0)
            self.optim = None
        c["done"] = True
        self._save()
        if self.out is not None:
            sha = save_weights(self.model, self.out / "weights.safetensors")
            write_json(self.out / "result.json", dict(weights_sha256=sha, samples=c["samples"],
                                                      seconds=round(c["seconds"], 1), task=o.task))
            (self.out / ".lock").unlink(missing_ok=True)
        return self.model


def train_perturbed(model: UnrolledNet, problem: Problem, options: RobustOptions, out: str | Path | None = None,
                    init: list[str | Path] = (), log: Callable[[str], None] = print) -> UnrolledNet:
    """Train (or resume) ``model`` on perturbed matrices; ``init``: weights files / run directories to start
    from (e.g. the encoder's pre-training run and a nominal ALISTA run), copied where names and shapes fit."""
    trainer = RobustTrainer(model, problem, options, out, log)
    if not trainer.resume():
        for path in init:
            names = init_from(model, path)
            log(f"initialised {len(names)} tensor(s) from {path}")
        trainer.best = trainer._snapshot()
    elif trainer.c["done"]:
        log(f"{out}: finished earlier")
        return model
    return trainer.run()
