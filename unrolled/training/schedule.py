"""Training schedules as data (docs/spec.md §7): a schedule is a list of :class:`Stage`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import check, choice

LOSSES = ("mse", "mse-layers", "lasso", "semi")


@dataclass(frozen=True)
class Stage:
    """One stage: which layers train, which output is supervised, and how long.

    ``layers`` are the 1-based layers whose parameters train (shared parameters belong to
    layer 1). Layer ``l`` trains at ``lr * decay ** (depth - l)`` — a true learning-rate
    decay for older layers. The stage ends after ``max_steps`` steps or ``patience``
    steps without a validation improvement; the best validated weights are restored.
    """

    name: str
    layers: tuple[int, ...]
    depth: int
    lr: float
    max_steps: int
    patience: int
    decay: float = 1.0
    clip: float | None = None
    cosine: bool = False  # cosine-anneal the learning rate to 0 over max_steps

    def __post_init__(self) -> None:
        check(self.max_steps >= 1, f"stage {self.name}: max_steps must be >= 1")
        check(math.isfinite(self.lr) and self.lr > 0, f"stage {self.name}: lr={self.lr} must be a finite number > 0")
        check(all(1 <= l <= self.depth for l in self.layers), f"stage {self.name}: layers must be in 1..depth")

    def lr_of(self, layer: int) -> float:
        return self.lr * self.decay ** (self.depth - layer)

    def to_dict(self) -> dict:
        return asdict(self)


def stagewise(K: int, lr: float = 5e-4, samples: int = 5_000_000, batch: int = 512, patience: int = 1000,
              decay: float = 0.3, split: tuple[float, float, float] = (0.4, 0.4, 0.2),
              clip: float | None = None, factors: tuple[float, float, float] = (1.0, 0.2, 0.02),
              converge: bool = False) -> list[Stage]:
    """ALISTA / LISTA-CPSS: per layer t, (1) layer t alone at lr, (2) layers <= t at lr*0.2,
    (3) layers <= t at lr*0.02 (``factors``); loss on layer t's output.

    Budget (docs/spec.md §7.1): by default the sample budget is spread evenly over layers
    and split between the three stages (``split``), and ``patience`` may end a stage early.
    With ``converge=True`` (the reference protocol) every stage runs until ``patience`` steps
    pass without a validation improvement, and ``samples`` is the cap *per stage* (the
    reference's ``maxit`` = 200,000 steps is ``samples = 200_000 * batch``).
    """
    check(K >= 1, f"K={K} must be >= 1")
    check(len(factors) == 3 and all(f > 0 for f in factors), f"factors={factors} must be three numbers > 0")
    per_layer = max(1, samples // (K * batch))
    per_stage = max(1, samples // batch)
    stages = []
    for t in range(1, K + 1):
        all_t = tuple(range(1, t + 1))
        for i, (layers, tag) in enumerate([((t,), "new"), (all_t, "all"), (all_t, "fine")]):
            steps = per_stage if converge else max(1, round(per_layer * split[i]))
            stages.append(Stage(f"layer{t}-{tag}", layers, t, lr * factors[i], steps, patience, decay, clip))
    return stages


REFERENCE_MAXIT = 200_000  # VITA reference code: at most this many steps per stage (utils/config.py --maxit)


def paper_stagewise(K: int, lr: float = 5e-4, samples: int | None = None, batch: int = 128, patience: int = 4000,
                    decay: float = 0.3, clip: float | None = None) -> list[Stage]:
    """The stage-wise protocol of LISTA-CPSS / ALISTA / the design-space paper, each stage to convergence.

    Reference code (VITA-Group/ALISTA ``utils/train.py``, ``utils/config.py``): lr 5e-4,
    factors 1, 0.2, 0.02 per layer, a stage ends once its best validation NMSE is more than
    ``better_wait`` steps old (4,000 in the code; its README gives 5,000 for LISTA-CPSS and
    passes 2,000 for ALISTA) or after ``maxit`` = 200,000 steps. "Better" is a strictly lower
    validation NMSE. The design-space paper uses batch 128. ``samples`` caps each stage
    (default ``REFERENCE_MAXIT * batch``). Our deviations (docs/spec.md §7.1): the best
    weights are restored at the end of every stage, and ``decay`` is a true learning-rate
    decay of older layers (``decay=1`` is what the reference's gradient scaling amounts
    to under Adam).
    """
    samples = REFERENCE_MAXIT * batch if samples is None else samples
    return stagewise(K, lr=lr, samples=samples, batch=batch, patience=patience, decay=decay, clip=clip,
                     converge=True)


def end_to_end(K: int, lr: float = 1e-3, samples: int = 2_000_000, batch: int = 512, patience: int = 10**9,
               clip: float | None = 1.0, fine: tuple[float, ...] = (0.1,), fine_share: float = 0.25,
               cosine: bool = True) -> list[Stage]:
    """NA-ALISTA style: all layers, final-layer loss, Adam with gradient clipping.

    The main stage cosine-anneals ``lr``; each factor in ``fine`` adds a short stage at
    ``lr * factor`` (taking ``fine_share`` of the budget together) that restarts from the
    best weights.
    """
    steps = max(1, samples // batch)
    fine_steps = round(steps * fine_share) if fine else 0
    layers = tuple(range(1, K + 1))
    main = Stage("e2e", layers, K, lr, max(1, steps - fine_steps), patience, 1.0, clip, cosine)
    return [main, *fine_stages("e2e", K, lr, fine, fine_steps, patience, clip, cosine)]


def fine_stages(tag: str, K: int, lr: float, fine: tuple[float, ...], steps: int, patience: int,
                clip: float | None, cosine: bool) -> list[Stage]:
    """One full-depth stage per factor in ``fine``, at ``lr * factor``, sharing ``steps``."""
    layers = tuple(range(1, K + 1))
    return [Stage(f"{tag}-x{f:g}", layers, K, lr * f, max(1, steps // len(fine)), patience, 1.0, clip, cosine)
            for f in fine]


def progressive(K: int, lr: float = 3e-3, samples: int = 2_000_000, batch: int = 128, patience: int = 10**9,
                clip: float | None = 1.0, growth: int = 4, fine: tuple[float, ...] = (0.1,), fine_share: float = 0.25,
                cosine: bool = True) -> list[Stage]:
    """Depth-growing warm starts: the network truncated to ``growth``, ``2 * growth``, ... then
    ``K`` layers, each depth trained end to end (every layer up to it, the loss on its output,
    cosine-annealed ``lr``) from the weights of the previous depth, then :func:`end_to_end`'s
    fine stages at full depth. The main share of the budget is split evenly over the depths
    (a shallow stage costs less per sample). Stage-wise training's curriculum at end-to-end
    cost: tied matrices first learn on a short, well-conditioned network.
    """
    check(K >= 1 and growth >= 1, f"K={K} and growth={growth} must be >= 1")
    steps = max(1, samples // batch)
    fine_steps = round(steps * fine_share) if fine else 0
    depths = sorted({*range(growth, K, growth), K})
    per_depth = max(1, (steps - fine_steps) // len(depths))
    stages = [Stage(f"depth{d}", tuple(range(1, d + 1)), d, lr, per_depth, patience, 1.0, clip, cosine)
              for d in depths]
    return stages + fine_stages(f"depth{K}", K, lr, fine, fine_steps, patience, clip, cosine)


SCHEDULES = {"stagewise": stagewise, "paper-stagewise": paper_stagewise, "end-to-end": end_to_end,
             "progressive": progressive}


def make_schedule(name: str, K: int, **kw) -> list[Stage]:
    return SCHEDULES[choice(name, SCHEDULES, "schedule")](K, **kw)
