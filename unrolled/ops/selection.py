"""Support selection as one object (docs/spec.md §5).

:class:`Selection` is what a model config nests (``ss``); :meth:`Selection.cuts` turns it
into one :class:`Cut` per layer, which is what the ops take. At a layer with a cut, the
entries of ``z`` strictly larger in magnitude than the ``(keep + 1)``-th largest ``|z|`` of
their sample (and, with ``above_theta``, larger than the threshold too) bypass the
shrinkage; the selection carries no gradient.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..errors import check, choice

MODES = ("none", "percentage", "count")


@dataclass(frozen=True)
class Cut:
    """One layer's selection: ``keep`` entries (ties aside) may bypass; ``above_theta``: only where ``|z| > theta``."""

    keep: int
    above_theta: bool


@dataclass(frozen=True)
class Selection:
    """Support selection of a network.

    * ``mode="percentage"`` (ALISTA, LISTA-CPSS): at layer t, ``q_t = min(p t, p_max)`` percent
      of the n entries, above the threshold too (``theta=None`` means true here).
    * ``mode="count"`` (NA-ALISTA): ``p_k = linspace(floor(1.2 s / K), 1.2 s, K)`` entries
      from the expected sparsity ``s``, growing over the first ``ceil(ramp K)`` layers; no
      threshold condition unless ``theta=True``.
    * ``mode="none"``: the plain soft threshold.
    """

    mode: str = "none"
    p: float = 1.2
    p_max: float = 13.0
    theta: bool | None = None
    ramp: float = 1.0

    def __post_init__(self) -> None:
        choice(self.mode, MODES, "support selection")
        check(self.p >= 0 and self.p_max >= 0, f"ss.p={self.p} and ss.p_max={self.p_max} must be >= 0")
        check(0 < self.ramp <= 1, f"ss.ramp={self.ramp} must be in (0, 1]")

    @property
    def above_theta(self) -> bool:
        """Whether a selected entry must also exceed the threshold (the form's default unless ``theta`` is set)."""
        return (self.mode != "count") if self.theta is None else bool(self.theta)

    def keeps(self, K: int, n: int, sparsity: float) -> list[int]:
        """Per layer, how many entries may bypass the shrinkage (0: none)."""
        if self.mode == "percentage":
            return [percentage_keep(t, n, self.p, self.p_max) for t in range(1, K + 1)]
        if self.mode == "count":
            return [max(0, pk - 1) for pk in count_schedule(sparsity, K, self.ramp)]
        return [0] * K

    def cuts(self, K: int, n: int, sparsity: float) -> list[Cut | None]:
        """One :class:`Cut` per layer, ``None`` where nothing is selected."""
        return [Cut(k, self.above_theta) if k > 0 else None for k in self.keeps(K, n, sparsity)]

    def replace(self, **changes) -> Selection:
        return dataclasses.replace(self, **changes)


def percentage_keep(t: int, n: int, p: float = 1.2, p_max: float = 13.0) -> int:
    """Entries strictly above the (100 - q_t)-th percentile of ``n`` values, ``q_t = min(p t, p_max)``.

    The percentile uses the 'nearest' rule of the reference code (TensorFlow's default):
    the order statistic at ascending index ``round((1 - q/100)(n - 1))``. Entries strictly
    above it are the ``n - 1 - index`` largest (ties aside).
    """
    q = min(p * t, p_max)
    index = round((1 - q / 100) * (n - 1))
    return max(0, n - 1 - index)


def count_schedule(s: float, K: int, ramp: float = 1.0) -> list[int]:
    """NA-ALISTA's ``p_k = linspace(floor(1.2 s / K), 1.2 s, K)`` as integers.

    With ``ramp < 1`` the linspace covers only the first ``ceil(ramp K)`` layers and the
    rest keep ``1.2 s`` (the support is settled earlier, later layers refine it).
    """
    lo, hi = math.floor(1.2 * s / K), 1.2 * s
    R = max(1, min(K, math.ceil(ramp * K)))
    if R == 1:
        return [int(hi)] * K
    return [int(lo + (hi - lo) * min(k, R - 1) / (R - 1)) for k in range(K)]
