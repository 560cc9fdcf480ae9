"""deepinv interop (``unrolled[deepinv]``): a deepinv linear operator becomes a :class:`~unrolled.Problem`,
and a trained :class:`~unrolled.Run` becomes a deepinv reconstructor.

::

    import deepinv as dinv
    import unrolled as ur
    from unrolled.deepinv import Reconstructor, to_problem

    physics = dinv.physics.CompressedSensing(m=32, img_size=(1, 8, 8), rng=torch.Generator().manual_seed(0))
    problem = to_problem(physics, p=0.1, snr=40)      # A built by applying physics.A to the identity
    run = ur.train(problem, "alista", {"K": 8}, budget=20_000)
    model = Reconstructor(run, physics)               # model(y, physics) -> x_hat: (batch, 1, 8, 8)
    dinv.test(model, loader, physics, metrics=[dinv.loss.metric.NMSE()])

The matrix is what the operator computes, ``A[:, j] = physics.A(e_j)`` over the signal shape
``img_size``, checked for linearity on a random signal. The problem keeps unrolled's own
signal prior (``p``, ``signal``) and noise (``snr``, in dB, relative to each sample): the
physics' noise model is not carried over. Estimates come back in the operator's units (the
problem's column normalisation is undone) and with the operator's signal shape.

torchvision (which deepinv imports) has CUDA builds only among its x86-64 wheels; next to the
CPU torch its C++ operators cannot load, and torchvision 0.28 then fails at import while
registering a shape function for ``torchvision::nms``. Where the library does not load, the two
operators' schemas are declared (no kernels) before the import, so torchvision imports without
its C++ operators (``torchvision.ops`` then refuses to run, as it says); deepinv's linear
physics, metrics and test loop do not use them.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .api import Run
from .errors import check, require
from .problem import Problem, ProblemSpec

_NMS = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


def _declared() -> bool:
    """Whether ``torchvision::nms`` exists (its library loaded, or declared by an earlier import of this module)."""
    try:
        torch.ops.torchvision.nms  # noqa: B018
        return True
    except (AttributeError, RuntimeError):
        return False


def _torchvision_without_its_library() -> None:
    """Declare ``torchvision::nms`` and ``::qnms`` where torchvision's C++ library cannot load here."""
    found = importlib.util.find_spec("torchvision")
    if found is None or "torchvision" in sys.modules or not found.submodule_search_locations or _declared():
        return
    library = next(Path(found.submodule_search_locations[0]).glob("_C*.so"), None)
    if library is not None:
        try:
            torch.ops.load_library(str(library))  # torchvision loads it again at import: a no-op
            return
        except OSError:  # a CUDA build next to the CPU torch: libtorch_cuda.so is missing
            pass
    for op in ("nms", "qnms"):
        torch.library.define(f"torchvision::{op}", _NMS)


_torchvision_without_its_library()
dinv = require("deepinv", extra="deepinv", feature="the deepinv adapter (unrolled.deepinv)")

__all__ = ["Reconstructor", "matrix", "to_problem"]

CHUNK = 1024  # basis vectors per call of physics.A
SET_BY_THE_OPERATOR = ("m", "n", "matrix", "a_file")


def _shape(physics, shape) -> tuple[int, ...]:
    shape = getattr(physics, "img_size", None) if shape is None else shape
    check(shape is not None, f"{type(physics).__name__} does not say its signal shape; give shape=(C, H, W)")
    shape = tuple(int(s) for s in shape)
    check(len(shape) >= 1 and all(s >= 1 for s in shape), f"shape={shape} must be positive sizes")
    return shape


def _dtype(physics) -> torch.dtype:
    floats = [b.dtype for b in physics.buffers() if b.is_floating_point() or b.is_complex()]
    return floats[0] if floats else torch.get_default_dtype()


def matrix(physics, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """The ``(m, n)`` float64 matrix of a deepinv ``LinearPhysics`` on signals of ``shape``
    (default ``physics.img_size``): column ``j`` is ``physics.A(e_j)``, ``n = prod(shape)``.

    Refuses a complex operator and one that is not linear (``A(x)`` against ``A @ x`` on a
    random ``x``, to a relative 1e-4)."""
    check(isinstance(physics, dinv.physics.LinearPhysics),
          f"{type(physics).__name__} is not a deepinv LinearPhysics; only linear operators have a matrix")
    shape = _shape(physics, shape)
    dtype = _dtype(physics)
    check(not dtype.is_complex, f"{type(physics).__name__} is complex ({dtype}); unrolled's problems are real")
    device = next((b.device for b in physics.buffers()), torch.device("cpu"))
    n = math.prod(shape)
    with torch.no_grad():
        cols = [physics.A(torch.eye(n, dtype=dtype, device=device)[lo:lo + CHUNK].reshape(-1, *shape))
                for lo in range(0, n, CHUNK)]
        A = torch.cat([c.reshape(c.shape[0], -1) for c in cols]).T.double().cpu()
        x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        direct = physics.A(x.to(device, dtype)).reshape(-1).double().cpu()
    check(not direct.is_complex(), f"{type(physics).__name__} gives complex measurements; unrolled's are real")
    gap = float((direct - A @ x.reshape(-1)).norm() / direct.norm().clamp_min(1e-30))
    check(gap <= 1e-4, f"{type(physics).__name__} is not linear on shape {shape}: A(x) differs from the "
                       f"matrix built from A(e_j) by {gap:.2g} (relative)")
    return A.numpy()


def to_problem(physics, shape: tuple[int, ...] | None = None, **spec) -> Problem:
    """An unrolled :class:`Problem` whose matrix is ``physics``' (:func:`matrix`); ``spec``: the other
    :class:`ProblemSpec` fields (``p``, ``snr``, ``seed``, ``signal``, ``val_size``, ...)."""
    given = sorted(set(spec) & set(SET_BY_THE_OPERATOR))
    check(not given, f"{', '.join(given)} come from the operator; give the other ProblemSpec fields")
    A = matrix(physics, shape)
    m, n = A.shape
    check(m <= n, f"{type(physics).__name__} has m={m} > n={n} measurements: sparse recovery needs m <= n")
    return Problem(ProblemSpec(m=m, n=n, matrix="file", a_file=f"deepinv:{type(physics).__name__}", **spec), A)


class Reconstructor(dinv.models.Reconstructor):
    """A trained unrolled network as a deepinv model: ``x_hat = model(y, physics)``.

    ``y: (batch, m)`` (any leading shape whose entries total ``m`` per sample) -> ``x_hat:
    (batch, *shape)`` in ``physics``' units; ``shape`` defaults to ``physics.img_size``. The
    network is a submodule, so deepinv's training loop can fine-tune it. ``forward`` refuses an
    operator whose matrix is not the run's (checked once per operator, to a relative 1e-4).
    """

    def __init__(self, run: Run, physics, shape: tuple[int, ...] | None = None) -> None:
        check(isinstance(run, Run), f"Reconstructor needs a trained unrolled Run, got {type(run).__name__}")
        super().__init__(device=run.model.A.device)
        self.model = run.model
        self.problem = run.problem
        self.shape = _shape(physics, shape)
        check(math.prod(self.shape) == self.model.n,
              f"shape {self.shape} has {math.prod(self.shape)} entries; the run's signals have n={self.model.n}")
        self._checked: list = []
        self._check(physics)

    def _check(self, physics) -> None:
        if any(p is physics for p in self._checked):
            return
        own = self.problem.A * (1 if self.problem.scale is None else self.problem.scale)
        theirs = torch.from_numpy(matrix(physics, self.shape))
        check(theirs.shape == own.shape, f"the operator is {tuple(theirs.shape)}, the run's matrix {tuple(own.shape)}")
        gap = float((theirs - own).norm() / own.norm())
        check(gap <= 1e-4, f"the operator's matrix differs from the run's by {gap:.2g} (relative): "
                           f"the run was trained for another operator")
        self._checked.append(physics)

    def forward(self, y: Tensor, physics=None, **kwargs) -> Tensor:
        """``x_hat`` for ``y``; ``physics`` (deepinv passes it) is checked against the run's matrix."""
        if physics is not None:
            self._check(physics)
        rows = y.reshape(y.shape[0], -1)
        check(rows.shape[1] == self.model.m, f"y has {rows.shape[1]} entries per sample, the run's m={self.model.m}")
        x = self.problem.to_user(self.model(rows.to(self.model.A.device, self.model.A.dtype)))
        return x.reshape(y.shape[0], *self.shape).to(y.dtype)
