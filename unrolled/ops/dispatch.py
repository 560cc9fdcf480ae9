"""The one dispatch point: which implementation of the ops runs.

* ``"reference"``: :mod:`unrolled.ops.reference`, plain PyTorch autograd, the definition.
* ``"torch"``: :mod:`unrolled.ops.fast`, hand-written autograd nodes in PyTorch.
* ``"numba"``: the same nodes with the fused CPU kernels of :mod:`unrolled.ops.kernels`
  (needs the optional Numba: ``pip install 'unrolled[fast]'``).
* ``"fast"`` (the default): ``"numba"`` where Numba is installed, else ``"torch"``.

Select one with ``with unrolled.ops.backend("reference"): ...`` or the environment variable
``UNROLLED_BACKEND``. While PyTorch traces, scripts, compiles or exports a model the
reference maths runs whatever is selected: the fast nodes read parameters as Python
numbers, which a traced graph would freeze as constants, so the graph is taken from the
definition instead and is exact.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import os
from collections.abc import Iterator

import torch

from ..errors import UsageError, choice

BACKENDS = ("fast", "reference", "torch", "numba")
ENV = "UNROLLED_BACKEND"
_selected: contextvars.ContextVar[str | None] = contextvars.ContextVar("unrolled_backend", default=None)


@functools.cache
def numba_available() -> bool:
    """Whether the optional Numba kernels can run (Numba imports)."""
    if importlib.util.find_spec("numba") is None:
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(name: str) -> str:
    """``name`` as one of ``reference``, ``torch``, ``numba``; fails for ``numba`` without Numba."""
    if name in ("reference", "torch"):  # the common cases first: this runs for every op
        return name
    choice(name, BACKENDS, "backend")
    if name == "fast":
        return "numba" if numba_available() else "torch"
    if name == "numba" and not numba_available():
        raise UsageError("backend 'numba' needs Numba; install it with pip install 'unrolled[fast]' "
                         "or use the backend 'torch'")
    return name


def selected() -> str:
    """The backend asked for: the innermost :func:`backend` context, else ``$UNROLLED_BACKEND``, else ``fast``."""
    return _selected.get() or os.environ.get(ENV) or "fast"


def _capturing() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting()


def active() -> str:
    """The implementation that runs now: ``reference``, ``torch`` or ``numba``."""
    if _capturing():
        return "reference"
    name = _selected.get() or os.environ.get(ENV) or "fast"
    if name == "fast":
        return "numba" if numba_available() else "torch"
    return resolve(name)


@contextlib.contextmanager
def backend(name: str) -> Iterator[str]:
    """Run the ops with backend ``name`` inside the block; yields the resolved name."""
    resolved = resolve(name)
    token = _selected.set(name)
    try:
        yield resolved
    finally:
        _selected.reset(token)
