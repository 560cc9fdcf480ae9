"""unrolled: learned sparse recovery (LISTA, ALISTA, NA-ALISTA, ...) made practical."""

from .analytic import AnalyticW, analytic_weights, coherence
from .errors import UsageError
from .problem import Problem, ProblemSpec

__all__ = ["AnalyticW", "Problem", "ProblemSpec", "UsageError", "analytic_weights", "coherence"]
__version__ = "0.1.0"
