"""unrolled: learned sparse recovery (LISTA, ALISTA, NA-ALISTA, ...) made practical.

The public API (``import unrolled as ur``): :class:`Problem` and :class:`ProblemSpec` (the
data), :func:`train`, :func:`resume`, :func:`load` and :func:`evaluate` (:mod:`unrolled.api`),
the :class:`Run` they return, and the analytic weights of ALISTA. Models are built by name
with :func:`unrolled.models.build`; the registry is :data:`unrolled.models.MODELS`.
"""

from . import pretrained  # callable: unrolled.pretrained(NAME) is a shipped, trained Run
from .analytic import AnalyticW, analytic_weights, coherence
from .api import Run, evaluate, load, resume, train
from .errors import UsageError
from .problem import Problem, ProblemSpec

__all__ = ["AnalyticW", "Problem", "ProblemSpec", "Run", "UsageError", "analytic_weights", "coherence", "evaluate",
           "load", "pretrained", "resume", "train"]
__version__ = "0.1.0"
