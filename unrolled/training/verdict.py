"""Divergence is an error or a flag, never a result (issue 15): the checks around a training.

* :func:`retry_start`: an initial model whose validation NMSE is above 0 dB (its iterates blow
  up, e.g. a step pinned beyond the stable range) has its step sizes halved, up to
  ``MAX_START_RETRIES`` times, before training starts; the trainer says so.
* :func:`verdict`: a finished training fails when its validation NMSE at the final depth is
  above 0 dB (worse than ``x_hat = 0``) or worse than FISTA at the same depth (lambda tuned on
  the same validation vectors, the best FISTA can do there). The reason, with what to try, goes
  into ``result.json`` (``failed``); the CLI ends with it as a one-line error, weights kept.
"""

from __future__ import annotations

import math

import torch

from .. import solvers
from ..metrics import nmse_db

MAX_START_RETRIES = 4  # the step is halved at most this often (1/16 of the initial one)
FISTA_SIZE = 1000  # validation vectors FISTA's lambda is tuned and scored on


def _supervised(trainer) -> bool:
    decoded = getattr(trainer.problem, "decode", None) is not None  # patch CS: the NMSE of D x, not of x
    matrix = trainer.model.A.dim() == 2  # a convolutional problem's A holds filters (unrolled/images/conv.py)
    return trainer.x_val is not None and trainer.opt.loss != "lasso" and not decoded and matrix


def _val_db(trainer, depth: int) -> float:
    with torch.no_grad():
        x_hat = trainer.model(trainer.y_val, depth=depth)
    db = nmse_db(x_hat.double(), trainer.x_val.double())
    return db if math.isfinite(db) else math.inf


def halve_steps(model) -> int:
    """Halve every learned step size (parameters named ``gamma``); how many were halved."""
    steps = [p for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] == "gamma"]
    with torch.no_grad():
        for p in steps:
            p.mul_(0.5)
    return len(steps)


def retry_start(trainer) -> str:
    """Halve the steps of a diverging initial model (``> 0 dB`` on validation); the note, or ``""``."""
    if not _supervised(trainer):
        return ""
    depth = max(s.depth for s in trainer.stages)
    first = db = _val_db(trainer, depth)
    tries = 0
    while db > 0 and tries < MAX_START_RETRIES and halve_steps(trainer.model):
        tries += 1
        db = _val_db(trainer, depth)
    if not tries:
        return ""
    return (f"the initial model diverged (validation {first:+.1f} dB at layer {depth}); its step sizes were "
            f"halved {tries} time(s), to x{0.5 ** tries:g} (validation {db:+.1f} dB)")


def fista_db(trainer, depth: int) -> float:
    """FISTA's validation NMSE at ``depth`` with lambda tuned on the same vectors."""
    x, y = trainer.x_val[:FISTA_SIZE].double().cpu(), trainer.y_val[:FISTA_SIZE].double().cpu()
    _, table = solvers.tune_lambda("fista", trainer.model.A.double().cpu(), x, y, depth)
    return min(db for _, db in table)


def verdict(trainer) -> str:
    """Why the finished training failed (one line with what to try), or ``""`` when it did not."""
    if not _supervised(trainer):
        return ""
    depth = max(s.depth for s in trainer.stages)
    db = _val_db(trainer, depth)
    if db > 0:
        return (f"the best validation NMSE is {db:+.1f} dB at layer {depth}, worse than x = 0; try a smaller --lr, "
                f"a smaller step (--set gamma0=...) or the model's recipe (no --set, no --lr)")
    fista = fista_db(trainer, depth)
    if db > fista:
        return (f"the validation NMSE {db:.2f} dB at layer {depth} is worse than FISTA's {fista:.2f} dB at the same "
                f"depth; try a larger --budget-samples, a smaller --lr, or the model's recipe (no --set, no --lr)")
    return ""
