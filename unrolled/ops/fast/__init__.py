"""Fast paths of :mod:`unrolled.ops.reference`, with the same signatures (the ``torch`` and ``numba`` backends)."""

from .lstm import lstm_cell, lstm_weights, residual_features, softsign_head
from .shrinkage import shrink, soft_threshold, step_shrink
from .steps import adaptive_threshold, gated_step, gradient_step, pgd_step

__all__ = ["adaptive_threshold", "gated_step", "gradient_step", "lstm_cell", "lstm_weights", "pgd_step",
           "residual_features", "shrink", "soft_threshold", "softsign_head", "step_shrink"]
