"""``unrolled train --perturb SIGMA_MAX``: training on perturbed matrices (docs/spec.md §7.3).

Any model trains on ``colnorm(A + sigma G)`` measurements with the curriculum
``linspace(0, SIGMA_MAX, psteps)[1:]`` (a data-augmented decoder: it never sees Ã);
``robust-alista`` trains its encoder and decoder jointly (``--perturb-task joint``) or pre-trains
its encoder at sigma = SIGMA_MAX on the coherence loss (``--perturb-task encoder``). Running the
same command again on the same ``--out`` resumes it (unrolled/training/robust.py).
"""

from __future__ import annotations

import argparse

import torch

from ..errors import check
from ..models import build
from ..perturbed import curriculum
from ..problem import Problem
from ..training.robust import TASKS, RobustOptions, train_perturbed
from .args import positive, positive_int


def add_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("perturbed matrices (robust ALISTA, data-augmented decoders; docs/spec.md §7.3)")
    g.add_argument("--perturb", type=positive, metavar="SIGMA_MAX", default=None,
                   help="train on colnorm(A + sigma G), sigma rising to SIGMA_MAX (the README: 0.02)")
    g.add_argument("--psteps", type=positive_int, default=5, help="curriculum points incl. sigma = 0 (default 5)")
    g.add_argument("--perturb-task", choices=TASKS, default=None,
                   help="augment (any model; default), joint (robust-alista's default), encoder (pre-training)")
    g.add_argument("--abs", type=positive_int, default=4, help="perturbed matrices per step (Abs; default 4)")
    g.add_argument("--xbs", type=positive_int, default=16, help="signals per matrix (xbs; default 16)")
    g.add_argument("--encoder-lr", type=positive, default=1e-9, help="joint: the encoder's learning rate")
    g.add_argument("--init-encoder", metavar="RUN", default=None, help="joint: the encoder's pre-training run")


def train(a: argparse.Namespace, sets: dict) -> None:
    """Run the perturbed training described by the parsed ``train`` arguments ``a``."""
    task = a.perturb_task or ("joint" if a.model == "robust-alista" else "augment")
    check(a.schedule == "end-to-end" and a.loss == "mse" and a.patience is None,
          "--perturb has its own curriculum and loss; drop --schedule, --loss and --patience")
    problem = Problem.load(a.problem)
    model = build(a.model, problem, {**sets, "K": a.layers})
    sigmas = [a.perturb] if task == "encoder" else curriculum(a.perturb, a.psteps)
    per_step = a.abs * (1 if task == "encoder" else a.xbs)
    steps = max(1, a.budget_samples // (per_step * len(sigmas)))
    opts = RobustOptions(task=task, sigmas=sigmas, steps=steps, matrices=a.abs, signals=a.xbs,
                         lr=a.lr if a.lr is not None else 1e-4, encoder_lr=a.encoder_lr, eval_every=a.eval_every,
                         seed=a.seed, snr=problem.spec.snr)
    init = [p for p in (a.init_encoder, a.init_from) if p]
    print(f"training {a.model} (K={model.K}) on perturbed matrices: task {task}, sigma "
          f"{', '.join(f'{s:g}' for s in sigmas)}, {steps:,} steps per stage of {a.abs} x "
          f"{1 if task == 'encoder' else a.xbs}")
    train_perturbed(model.to(a.device or torch.device("cpu")), problem, opts, a.out, init)
    print(f"done; weights in {a.out}/weights.safetensors")
