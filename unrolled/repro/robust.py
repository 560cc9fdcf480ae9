"""The ``alista-robust`` experiment: recovery when the measurement matrix is perturbed (issue 18).

One problem-level analysis (``[analysis] name = "robust"``) runs the ALISTA README's three steps
and the data-augmented baselines, each a resumable run directory under ``runs``:

1. ``alista-nominal``: ALISTA trained on the nominal matrix (end-to-end, an ordinary run);
   ``tilista-nominal`` likewise for the augmented TiLISTA (skipped with ``tilista_samples = 0``);
2. ``encoder``: the AtoW encoder pre-trained on the rel2 loss at ``encoder_sigma``;
3. ``joint``: encoder + ALISTA decoder (initialised from 1 and 2) on the curriculum;
4. ``augment-alista``, ``augment-tilista``: the nominal decoders trained on the perturbed stream
   with the same curriculum (they never see Ã),

(``runs`` empty: ``alista-robust/`` in the budget's training store, runs/repro/BUDGET/_train), then
evaluates on the fixed test sets (``matrices`` x ``signals`` per sigma, unperturbed draws
shared across sigma, unrolled/perturbed.py), noiseless and at each ``test_snrs``. Rows (one per
estimator, sigma and test SNR; aggregate NMSE over all pairs, and the reference's mean of the
per-matrix dB):

* ``naive ALISTA``: the nominal run on ``y = Ã x`` with its nominal A and W (it cannot know Ã);
* ``ALISTA, Ã + nominal W``: the same gamma_t, theta_t, the residual with Ã, the nominal W;
* ``ALISTA, closed-form W(Ã)``: the same gamma_t, theta_t with Ã and Ã's own closed-form W
  (docs/spec.md §4), the honest upper baseline;
* ``robust ALISTA``: the jointly trained encoder + decoder on Ã;
* ``closed-form W(Ã), robust's decoder``: robust ALISTA's decoder (its gamma_t, theta_t) with Ã's
  closed-form W in place of the encoder's: what the encoder itself contributes;
* ``augmented ALISTA``, ``augmented TiLISTA``;
* ``FISTA on Ã``: K iterations with ``||Ã||^2`` per matrix, lambda tuned on the validation set of
  that sigma and SNR (the grid of docs/spec.md §3);
* ``oracle on Ã``: least squares / MMSE on the true support with Ã (docs/spec.md §3).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from .. import api, metrics, perturbed, solvers
from ..models import build
from ..training.robust import RobustOptions, train_perturbed

DEFAULTS = dict(K=16, sigmas=list(perturbed.SIGMAS), test_snrs=[40], matrices=100, signals=100,
                val_matrices=20, val_signals=50, runs="", alista_samples=300_000, alista_lr=2e-3,
                tilista_samples=300_000, tilista_lr=1e-3, encoder_sigma=0.01, encoder_steps=200,
                encoder_matrices=16, encoder_lr=1e-4, psigma_max=0.02, psteps=5, abs=4, xbs=16, joint_steps=150,
                joint_lr=1e-4, joint_encoder_lr=1e-9, augment_steps=1000, augment_tilista_steps=0, augment_lr=1e-4,
                eval_every=25, fista_val_matrices=20, fista_val_signals=50)  # augment_tilista_steps = 0: augment_steps
ESTIMATORS = ("naive ALISTA", "ALISTA, Ã + nominal W", "ALISTA, closed-form W(Ã)", "robust ALISTA",
              "closed-form W(Ã), robust's decoder",
              "augmented ALISTA", "augmented TiLISTA", "FISTA on Ã", "oracle on Ã")


def _aggregate(x_hat: torch.Tensor, x: torch.Tensor) -> dict:
    """Aggregate NMSE over every pair, and the mean over matrices of each matrix's NMSE (dB)."""
    x_hat, x = x_hat.double(), x.double()
    err, energy = ((x_hat - x) ** 2).sum((1, 2)), (x ** 2).sum((1, 2))
    per = [metrics.db(float(e) / float(s)) for e, s in zip(err, energy) if float(s) > 0]
    return dict(nmse_db=metrics.nmse_db(x_hat.reshape(-1, x.shape[-1]), x.reshape(-1, x.shape[-1])),
                nmse_db_matrix_mean=sum(per) / len(per))


def _fista(b: perturbed.PerturbedBatch, lam: float, K: int, L: torch.Tensor) -> torch.Tensor:
    return solvers.final(perturbed.fista_iterates(b.y, b.A, lam, K, L))


def tune_fista(val: perturbed.PerturbedBatch, K: int) -> float:
    """Lambda of FISTA on each Ã minimising the aggregate validation NMSE (coarse 1e-5..3.16, refined)."""
    L = torch.linalg.matrix_norm(val.A, ord=2) ** 2

    def score(lam: float) -> float:
        return _aggregate(_fista(val, lam, K, L), val.x)["nmse_db"]

    table = {lam: score(lam) for lam in (10 ** (e / 2) for e in range(-10, 2))}
    best = min(table, key=table.get)
    table.update({best * 10 ** (e / 8): score(best * 10 ** (e / 8)) for e in (-3, -2, -1, 1, 2, 3)})
    return min(table, key=table.get)


def oracle(b: perturbed.PerturbedBatch, snr: float) -> torch.Tensor:
    est = [metrics.oracle_estimates(A, x, y, snr)["oracle-mmse"] for A, x, y in zip(b.A, b.x, b.y)]
    return torch.stack(est)


def evaluate(problem, decoders: dict, p: dict, log=print) -> list[dict]:
    """Rows of every estimator at every sigma and test SNR (``decoders``: label -> trained model)."""
    K, rows = p["K"], []
    nominal = decoders["naive ALISTA"]
    gammas = [q.gamma.detach().double() for q in nominal.layers]
    thetas = [q.theta.detach().double() for q in nominal.layers]
    snrs = [math.inf, *(float(s) for s in p["test_snrs"])]
    for sigma in p["sigmas"]:
        sets = {snr: perturbed.fixed_set(problem, "test", sigma, p["matrices"], p["signals"], snr) for snr in snrs}
        A = sets[math.inf].A
        start = time.perf_counter()
        W_cf = perturbed.closed_form_batch(A)  # = analytic.closed_form per matrix (tests/test_robust.py)
        cf_seconds = (time.perf_counter() - start) / len(A)
        W_rob = None
        if "robust ALISTA" in decoders:
            rob = decoders["robust ALISTA"]
            with torch.no_grad():
                start = time.perf_counter()
                W_rob = rob.weights(A.to(rob.A.dtype))
                enc_seconds = (time.perf_counter() - start) / len(A)
        for snr, b in sets.items():
            where = dict(sigma=sigma, test_snr="inf" if math.isinf(snr) else snr, layer=K, final=1)
            out = {}
            with torch.no_grad():
                for label in ("naive ALISTA", "augmented ALISTA", "augmented TiLISTA"):
                    if label in decoders:
                        m = decoders[label]
                        out[label] = m(b.y.reshape(-1, problem.m).to(m.A.dtype)).reshape(b.x.shape)
                W_nom = nominal.W.double().expand_as(A)
                out["ALISTA, Ã + nominal W"] = list(perturbed.alista_iterates(b.y, A, W_nom, gammas, thetas,
                                                                               nominal.cuts))[-1]
                out["ALISTA, closed-form W(Ã)"] = list(perturbed.alista_iterates(b.y, A, W_cf, gammas, thetas,
                                                                                  nominal.cuts))[-1]
                if W_rob is not None:
                    dt = rob.A.dtype
                    out["robust ALISTA"] = rob.decode(b.y.to(dt), A.to(dt), W_rob)
                    out["closed-form W(Ã), robust's decoder"] = rob.double().decode(b.y, A, W_cf)
                    rob.to(dt)
                val = perturbed.fixed_set(problem, "val", sigma, p["fista_val_matrices"], p["fista_val_signals"], snr)
                lam = tune_fista(val, K)
                out["FISTA on Ã"] = _fista(b, lam, K, torch.linalg.matrix_norm(A, ord=2) ** 2)
                out["oracle on Ã"] = oracle(b, snr)
            for label in ESTIMATORS:
                if label in out:
                    extra = dict(lam=lam) if label.startswith("FISTA") else {}
                    if label == "ALISTA, closed-form W(Ã)":
                        extra = dict(w_seconds_per_matrix=cf_seconds)
                    if label == "robust ALISTA":
                        extra = dict(w_seconds_per_matrix=enc_seconds)
                    rows.append(dict(estimator=label, **where, **_aggregate(out[label], b.x), **extra))
            log(f"  sigma={sigma:g} snr={where['test_snr']}: " + ", ".join(
                f"{r['estimator']} {r['nmse_db']:.2f}" for r in rows[-len(out):]))
    return rows


def _nominal(problem, model: str, samples: int, lr: float, K: int, runs: Path, log):
    """``model`` trained end-to-end on the nominal matrix in ``runs/<model>-nominal`` (a finished run is loaded
    as it was, even if the model's config has gained fields since)."""
    rd = runs / f"{model}-nominal"
    if (rd / "result.json").exists():
        return api.load(rd).model
    return api.train(problem, model, {"K": K}, "end-to-end", samples, rd, lr=lr, resume=True, log=log).model


def train_all(problem, p: dict, log=print) -> dict:
    """The trainings of the experiment (each resumable under ``runs``); label -> trained model."""
    runs, K = Path(p["runs"]), p["K"]
    sigmas = perturbed.curriculum(p["psigma_max"], p["psteps"])
    common = dict(sigmas=sigmas, matrices=p["abs"], signals=p["xbs"], eval_every=p["eval_every"],
                  val_matrices=min(8, p["val_matrices"]), val_signals=min(64, p["val_signals"]))
    out = {}
    out["naive ALISTA"] = _nominal(problem, "alista", p["alista_samples"], p["alista_lr"], K, runs, log).double()
    aug = build("alista", problem, {"K": K})
    out["augmented ALISTA"] = train_perturbed(
        aug, problem, RobustOptions(task="augment", steps=p["augment_steps"], lr=p["augment_lr"], **common),
        runs / "augment-alista", init=[runs / "alista-nominal"], log=log).double()
    init = []
    if p["tilista_samples"]:
        _nominal(problem, "tilista", p["tilista_samples"], p["tilista_lr"], K, runs, log)
        init = [runs / "tilista-nominal"]
    til = build("tilista", problem, {"K": K})
    out["augmented TiLISTA"] = train_perturbed(
        til, problem, RobustOptions(task="augment", steps=p["augment_tilista_steps"] or p["augment_steps"],
                                    lr=p["augment_lr"], **common),
        runs / "augment-tilista", init=init, log=log).double()
    enc = build("robust-alista", problem, {"K": K})
    train_perturbed(enc, problem, RobustOptions(task="encoder", sigmas=[p["encoder_sigma"]], steps=p["encoder_steps"],
                                                matrices=p["encoder_matrices"], lr=p["encoder_lr"],
                                                eval_every=p["eval_every"], val_matrices=8), runs / "encoder", log=log)
    rob = build("robust-alista", problem, {"K": K})
    out["robust ALISTA"] = train_perturbed(
        rob, problem, RobustOptions(task="joint", steps=p["joint_steps"], lr=p["joint_lr"],
                                    encoder_lr=p["joint_encoder_lr"], **common), runs / "joint",
        init=[runs / "encoder", runs / "alista-nominal"], log=log)
    return out


def robust_sweep(ctx) -> list[dict]:
    """The analysis: train everything (resuming), then evaluate every estimator against sigma."""
    p = dict(ctx.params)
    if not p["runs"]:  # the budget's training store, beside the other experiments' trainings
        p["runs"] = str(ctx.store / "alista-robust")
    decoders = train_all(ctx.problem, p)
    return evaluate(ctx.problem, decoders, p)


def tables(rows: list[dict]) -> str:
    """Markdown: one table per test SNR, estimators down, sigma across (aggregate NMSE in dB), from result rows."""
    out = []
    for snr in dict.fromkeys(str(r["test_snr"]) for r in rows):
        sel = [r for r in rows if str(r["test_snr"]) == snr]
        sigmas = sorted({float(r["sigma"]) for r in sel})
        head = "noiseless" if snr == "inf" else f"{float(snr):g} dB"
        out += [f"Test measurements {head}:", "", "| estimator | " + " | ".join(f"σ = {s:g}" for s in sigmas) + " |",
                "|---" * (len(sigmas) + 1) + "|"]
        for label in dict.fromkeys(r["estimator"] for r in sel):
            vals = {float(r["sigma"]): float(r["nmse_db"]) for r in sel if r["estimator"] == label}
            out.append(f"| {label} | " + " | ".join(f"{vals[s]:.2f}" if s in vals else "" for s in sigmas) + " |")
        out.append("")
    return "\n".join(out)
