"""A small training loop over a schedule of stages, checkpointing into a run directory.

Fresh training batches come from a seeded generator every step; model selection uses the
fixed validation set only. With a :class:`~unrolled.training.RunDir` the trainer checkpoints
after every validation and :meth:`Trainer.resume` continues from the last checkpoint to the
same bits as an uninterrupted run.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .. import ops
from ..errors import UsageError, check, choice
from ..metrics import nmse_db
from ..models import UnrolledNet
from ..problem import Problem
from . import verdict
from .data import TrainingData
from .rundir import RunDir
from .schedule import LOSSES, Stage

GOOD_MARGIN_DB = 3.0  # a validated state counts as "last good" if within this of the stage's best (NMSE)
GOOD_MARGIN_LASSO = 0.1  # ... or, for the Lasso loss, within this fraction above the best objective
MAX_ROLLBACKS = 20  # per stage: the learning rate halves each time (x 1e-6 at the end)


class Diverged(UsageError):
    """Training diverged again and again; the best weights were kept."""


@dataclass
class TrainOptions:
    """Everything about training that is not the model or the schedule."""

    batch: int = 512
    loss: str = "mse"  # mse | mse-layers | lasso | semi
    loss_lam: float = 0.1  # lambda of the Lasso objective (lasso / semi losses)
    labelled: float = 0.1  # semi: labelled fraction of every batch
    semi_weight: float = 1.0  # semi: weight of the supervised term
    eval_every: int = 50
    val_size: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        choice(self.loss, LOSSES, "loss")
        check(self.batch >= 1, f"batch={self.batch} must be >= 1")
        check(self.eval_every >= 1, f"eval_every={self.eval_every} must be >= 1")
        check(0 < self.labelled <= 1, f"labelled={self.labelled} must be in (0, 1]")


class Trainer:
    """Runs ``stages`` on ``model``; with ``run_dir`` it checkpoints after every validation."""

    def __init__(self, model: UnrolledNet, problem: Problem, stages: list[Stage], options: TrainOptions,
                 run_dir: RunDir | str | Path | None = None, log: Callable[[str], None] | None = None,
                 data: TrainingData | None = None) -> None:
        check(len(stages) > 0, "the schedule has no stage")
        check(all(s.depth <= model.K for s in stages), f"a stage supervises a layer beyond K={model.K}")
        self.model, self.problem, self.stages, self.opt = model, problem, stages, options
        self.run_dir = run_dir if isinstance(run_dir, RunDir) or run_dir is None else RunDir(run_dir)
        self.log = log or self._default_log
        self.device, self.dtype = model.A.device, model.A.dtype
        self.data = data  # a finite pool (unrolled/training/data.py); None: fresh samples every step
        x, y = problem.validation(torch.float64) if data is None else data.validation
        self.x_val = None if x is None else x[: options.val_size].to(self.device, self.dtype)
        self.y_val = y[: options.val_size].to(self.device, self.dtype)
        self.params = dict(model.named_parameters())
        self.gen = torch.Generator().manual_seed(options.seed)
        self.c = dict(stage=0, step=0, total_steps=0, samples=0, best=math.inf, since_best=0, lr_scale=1.0,
                      loss_sum=0.0, loss_count=0, metrics_bytes=0, nan_events=0, stage_rollbacks=0, done=False,
                      retried="", failed="")
        self.best = self._snapshot()
        self.optim: torch.optim.Optimizer | None = None
        self.last_good: tuple[dict, dict] | None = None
        self.seconds = 0.0
        self._bar = None  # the terminal's progress bar of the current stage (tqdm)

    @staticmethod
    def _default_log(message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)  # above an open progress bar, which is redrawn below it
        sys.stderr.flush()

    # -- losses and validation ----------------------------------------------------------------

    def loss(self, stage: Stage, x: Tensor, y: Tensor) -> Tensor:
        o = self.opt
        if o.loss == "mse-layers":
            outs = self.model(y, all_layers=True, depth=stage.depth)[1:]
            return sum(((self.signal(xk) - x) ** 2).sum(1).mean() for xk in outs) / len(outs)
        x_hat = self.model(y, depth=stage.depth)
        if o.loss == "mse":
            return ((self.signal(x_hat) - x) ** 2).sum(1).mean()
        lasso = ops.lasso_objective(x_hat, y, self.model.A, o.loss_lam)
        if o.loss == "lasso":
            return lasso.mean()
        k = max(1, round(o.labelled * len(x)))  # semi: the first k samples carry labels
        supervised = ((self.signal(x_hat[:k]) - x[:k]) ** 2).sum(1).mean()
        return o.semi_weight * supervised + (lasso[k:].mean() if k < len(x) else 0.0)

    @torch.no_grad()
    def validate(self, stage: Stage) -> float:
        """Validation NMSE (dB) at the stage's depth, or the mean Lasso objective when unsupervised."""
        x_hat = self.model(self.y_val, depth=stage.depth)
        if self.opt.loss == "lasso":
            return float(ops.lasso_objective(x_hat, self.y_val, self.model.A, self.opt.loss_lam).mean())
        return nmse_db(self.signal(x_hat).double(), self.x_val.double())

    def signal(self, x_hat: Tensor) -> Tensor:
        """What the loss compares with the target: the output, or the problem's ``decode`` of it where it has one
        (patch compressive sensing, unrolled/images/cs.py: the patch ``D x`` of a code)."""
        decode = getattr(self.problem, "decode", None)
        return x_hat if decode is None else decode(x_hat)

    # -- optimiser ----------------------------------------------------------------------------

    def _make_optim(self, stage: Stage) -> torch.optim.Optimizer:
        # Shared (tied) parameters act in every layer, the newest included: they train at the
        # newest layer's rate. Decaying them as "layer 1" (0.3^(t-1)) would freeze tied LISTA.
        shared = {id(p) for p in self.model.shared_parameters()}
        groups = []
        for layer in stage.layers:
            ps = [p for p in self.model.layer_parameters(layer) if p.requires_grad]
            for part, lr in ([p for p in ps if id(p) in shared], stage.lr_of(stage.depth)), \
                            ([p for p in ps if id(p) not in shared], stage.lr_of(layer)):
                if part:
                    groups.append({"params": part, "lr": lr, "base_lr": lr})
        check(groups, f"stage {stage.name} has no trainable parameter (model {self.model.name!r} is fixed)")
        return torch.optim.Adam(groups, fused=True)  # one kernel for all tensors: 81 scalars (AGLISTA) 1.1 -> 0.24 ms

    def _set_lr(self, stage: Stage) -> None:
        f = self.c["lr_scale"]
        if stage.cosine:
            f *= 0.5 * (1 + math.cos(math.pi * self.c["step"] / stage.max_steps))
        for g in self.optim.param_groups:
            g["lr"] = g["base_lr"] * f

    def _snapshot(self) -> dict[str, Tensor]:
        return {k: p.detach().clone() for k, p in self.params.items()}

    def _restore(self, snap: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for k, p in self.params.items():
                p.copy_(snap[k])

    def _optim_tensors(self, state: dict | None = None, prefix: str = "optim/") -> dict[str, Tensor]:
        out = {}
        if self.optim is None:
            return out
        state = self.optim.state if state is None else state
        index = {id(p): k for k, p in self.params.items()}
        for group in self.optim.param_groups:
            for p in group["params"]:
                for name, v in state.get(p, {}).items():
                    out[f"{prefix}{index[id(p)]}/{name}"] = torch.as_tensor(v)
        return out

    def _optim_state_from(self, tensors: dict[str, Tensor], prefix: str = "optim/") -> dict:
        state: dict = {}
        for key, v in tensors.items():
            if key.startswith(prefix):
                pname, name = key[len(prefix):].split("/")
                p = self.params[pname]
                state.setdefault(p, {})[name] = v.to(p.device) if name != "step" else v.to(torch.float32)
        return state

    # -- checkpoints --------------------------------------------------------------------------

    def _write_state(self) -> None:
        if self.run_dir is None:
            return
        tensors = {f"param/{k}": v for k, v in self._snapshot().items()}
        tensors.update({f"best/{k}": v for k, v in self.best.items()})
        tensors.update(self._optim_tensors())
        if self.last_good is not None and self.optim is not None:
            tensors.update({f"good/{k}": v for k, v in self.last_good[0].items()})
            tensors.update(self._optim_tensors(self.last_good[1], "good-optim/"))
        tensors["generator"] = self.gen.get_state()
        self.run_dir.save_state(tensors, {**self.c, "seconds": self.seconds})

    def resume(self) -> None:
        """Continue from ``run_dir``'s last checkpoint (exactly where it was written)."""
        check(self.run_dir is not None, "resume needs a run directory")
        prog, tensors = self.run_dir.load_state()
        self.seconds = prog.pop("seconds", 0.0)
        self.c.update(prog)
        self._restore({k[6:]: v for k, v in tensors.items() if k.startswith("param/")})
        self.best = {k[5:]: v.to(self.device) for k, v in tensors.items() if k.startswith("best/")}
        self.gen.set_state(tensors["generator"])
        self.run_dir.truncate_metrics(self.c["metrics_bytes"])  # lines written after the checkpoint
        if not self.c["done"] and self.c["stage"] < len(self.stages):
            self.optim = self._make_optim(self.stages[self.c["stage"]])
            for p, st in self._optim_state_from(tensors).items():
                self.optim.state[p].update(st)
            if any(k.startswith("good/") for k in tensors):
                good = {k[5:]: v.to(self.device) for k, v in tensors.items() if k.startswith("good/")}
                self.last_good = (good, self._optim_state_from(tensors, "good-optim/"))
            else:  # format v1: the checkpoint was the last good state
                self.last_good = (self._snapshot(), self._optim_state_copy())

    def _append_metrics(self, row: dict) -> None:
        if self.run_dir is None:
            return
        self.c["metrics_bytes"] += self.run_dir.append_metrics(row)

    def _optim_state_copy(self) -> dict:
        return {p: {k: v.clone() for k, v in st.items()} for p, st in self.optim.state.items()}

    # -- the loop -----------------------------------------------------------------------------

    def _rollback(self, stage: Stage, reason: str) -> None:
        """Non-finite loss or gradient, or a validation NMSE above 0 dB after a better one: restore
        the last good state (see :meth:`_is_good`) and halve the learning rate; after
        ``MAX_ROLLBACKS`` in one stage, stop with the best weights kept."""
        if self.c["stage_rollbacks"] >= MAX_ROLLBACKS:
            self._restore(self.best)
            where = self.run_dir.finish(self, diverged=f"{stage.name}: {reason}") if self.run_dir else None
            unit = "" if self.opt.loss == "lasso" else " dB"
            raise Diverged(f"training diverged in stage {stage.name} ({reason} after {MAX_ROLLBACKS} rollbacks, "
                           f"learning rate x{self.c['lr_scale']:g}); the best weights (validation "
                           f"{self.c['best']:.2f}{unit}) are kept" + (f" in {self.run_dir.weights_file}" if where
                                                                      else " in the model"))
        snap, ostate = self.last_good
        self._restore(snap)
        self.optim.state.clear()
        for p, st in ostate.items():
            self.optim.state[p] = {k: v.clone() for k, v in st.items()}
        self.c["lr_scale"] *= 0.5
        self.c["nan_events"] += 1
        self.c["stage_rollbacks"] += 1
        self._append_metrics({"event": "rollback", "reason": reason, "stage": stage.name,
                              "step": self.c["step"], "lr_scale": self.c["lr_scale"]})
        self.log(f"  {stage.name} step {self.c['step']}: {reason}; restored the last good state, "
                 f"learning rate halved (x{self.c['lr_scale']:g})")

    def _validate_and_checkpoint(self, stage: Stage) -> None:
        val = self.validate(stage)
        c = self.c
        improved = val < c["best"]
        if improved:
            c["best"], c["since_best"] = val, 0
            self.best = self._snapshot()
        row = {"stage": stage.name, "stage_index": c["stage"], "step": c["step"], "samples": c["samples"],
               "train_loss": c["loss_sum"] / max(c["loss_count"], 1), "val": val, "best": c["best"],
               "lr": self.optim.param_groups[-1]["lr"]}
        c["loss_sum"], c["loss_count"] = 0.0, 0
        self._append_metrics(row)
        self._progress(stage, val)
        if self.opt.loss != "lasso" and val > 0 > c["best"]:  # worse than x_hat = 0 after being better
            self._rollback(stage, f"validation NMSE {val:+.2f} dB, worse than x_hat = 0 (best {c['best']:.2f} dB)")
        elif self._is_good(val):
            self.last_good = (self._snapshot(), self._optim_state_copy())
        self._write_state()

    def _is_good(self, val: float) -> bool:
        """A state to roll back to: finite parameters and a validation value within the margin
        (``GOOD_MARGIN_DB``, or ``GOOD_MARGIN_LASSO`` relative for the Lasso loss) of the best."""
        best = self.c["best"]
        if not (math.isfinite(val) and all(bool(torch.isfinite(p).all()) for p in self.params.values())):
            return False
        if self.opt.loss == "lasso":
            return val <= best + GOOD_MARGIN_LASSO * abs(best)
        return val <= best + GOOD_MARGIN_DB

    def _progress(self, stage: Stage, val: float) -> None:
        """A tqdm bar per stage with the current validation value on a terminal (cleared when the
        stage ends), a line per validation in a log file; a caller's own ``log`` gets the stage
        summaries only."""
        c = self.c
        unit = "" if self.opt.loss == "lasso" else " dB"
        status = f"val {val:.2f}{unit} best {c['best']:.2f}{unit} ({c['samples']:,} samples, {self.seconds:.0f} s)"
        name = f"stage {c['stage'] + 1}/{len(self.stages)}"
        if self.log is not self._default_log:
            return
        if not sys.stderr.isatty():
            print(f"{name} step {c['step']}/{stage.max_steps} {status}", file=sys.stderr, flush=True)
            return
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=stage.max_steps, desc=name, unit="step", file=sys.stderr, leave=False,
                             dynamic_ncols=True)
        self._bar.n = c["step"]
        self._bar.set_postfix_str(status)  # refreshes

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _finish_stage(self, stage: Stage) -> None:
        self._close_bar()
        self._restore(self.best)
        c = self.c
        unit = "dB" if self.opt.loss != "lasso" else "(Lasso objective)"
        self.log(f"stage {c['stage'] + 1}/{len(self.stages)} {stage.name}: {c['step']} steps, "
                 f"best validation {c['best']:.2f} {unit} at layer {stage.depth}, {c['samples']:,} samples, "
                 f"{self.seconds:.0f} s")
        c.update(stage=c["stage"] + 1, step=0, best=math.inf, since_best=0, lr_scale=1.0, stage_rollbacks=0)
        self.optim = None

    def run(self) -> None:
        """Train through every remaining stage."""
        c, o = self.c, self.opt
        if c["stage"] == 0 and c["total_steps"] == 0 and self.optim is None and not c["retried"]:
            c["retried"] = verdict.retry_start(self)  # a diverging start: smaller steps (unrolled/training/verdict.py)
            if c["retried"]:
                self.log(f"note: {c['retried']}")
        while c["stage"] < len(self.stages):
            stage = self.stages[c["stage"]]
            start = time.perf_counter()
            if self.optim is None:
                self.optim = self._make_optim(stage)
                c["best"] = self.validate(stage)  # the incoming weights are the first candidate
                self.best = self._snapshot()
                self.last_good = (self._snapshot(), self._optim_state_copy())
            while c["step"] < stage.max_steps and c["since_best"] < stage.patience:
                self._set_lr(stage)
                x, y = (self.problem.sample(o.batch, self.gen, torch.float64) if self.data is None
                        else self.data.batch(c["samples"], o.batch))  # a pool's position: samples drawn so far
                x, y = None if x is None else x.to(self.device, self.dtype), y.to(self.device, self.dtype)
                loss = self.loss(stage, x, y)
                if not torch.isfinite(loss):
                    self._rollback(stage, "non-finite loss")
                    continue
                self.optim.zero_grad(set_to_none=True)
                loss.backward()
                params = [p for g in self.optim.param_groups for p in g["params"]]
                if stage.clip is not None:
                    norm = torch.nn.utils.clip_grad_norm_(params, stage.clip)
                else:
                    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
                if not torch.isfinite(norm):
                    self._rollback(stage, "non-finite gradient")
                    continue
                self.optim.step()
                c["step"] += 1
                c["total_steps"] += 1
                c["samples"] += o.batch
                c["since_best"] += 1
                c["loss_sum"] += float(loss.detach())
                c["loss_count"] += 1
                if c["step"] % o.eval_every == 0 or c["step"] == stage.max_steps:
                    self.seconds += time.perf_counter() - start
                    start = time.perf_counter()
                    self._validate_and_checkpoint(stage)
            self.seconds += time.perf_counter() - start
            self._finish_stage(stage)
        c["failed"] = verdict.verdict(self)  # above 0 dB or worse than FISTA: a failed run, not a result
        c["done"] = True
        self._write_state()
