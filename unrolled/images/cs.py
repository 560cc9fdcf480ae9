"""Patch compressive sensing with a learned dictionary (design-space Table 3; LISTA-CPSS §4.2).

A 16x16 patch ``f`` (mean removed, 0-1 scale; :mod:`.patches`) is measured by a Gaussian
``Phi: (m, 256)`` (entries ``N(0, 1/m)``; ``m = round(ratio * 256)``: 128 at 50 %) and sparsely
coded in a dictionary ``D: (256, 512)``; ``A = Phi D`` is an ordinary :class:`~unrolled.problem.Problem`
matrix, so every registered model trains on :class:`PatchCSProblem` unchanged.

Training pairs ``(x, y)``: ``y = Phi f`` for a random training patch and ``x = f`` itself; the
problem's :meth:`PatchCSProblem.decode` maps a network's code ``x_hat`` to the patch ``D x_hat``,
which the trainer compares with ``f`` (:meth:`unrolled.training.Trainer.signal`): the patch error of
the reference (its ``LISTA_cpss_cs`` loss on ``D x``), with ``D`` fixed (the reference also trains ``D``
in the last layer). Reconstruction: ``D x_hat * 255 + dc``, the patches put back
(:func:`~unrolled.images.patches.reconstruct`), PSNR against the original.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import check
from ..problem import Problem, ProblemSpec
from . import patches as P


@dataclass
class PatchPool:
    """Mean-removed patches (0-1 scale, ``(count, size^2)``) of the training images: ``train``, ``val``, ``test``."""

    patches: dict[str, np.ndarray]

    @classmethod
    def build(cls, images: list[np.ndarray], size: int = 16, count: int = 100_000, val: int = 2000,
              test: int = 2000, seed: int = 0) -> PatchPool:
        raw = P.random_patches(images, count + val + test, size, np.random.default_rng(seed))
        F = P.remove_mean(raw)[0] / 255.0
        cut = {"train": slice(0, count), "val": slice(count, count + val), "test": slice(count + val, None)}
        return cls({k: F[s] for k, s in cut.items()})


def sensing_matrix(ratio: float, size: int = 256, seed: int = 0) -> np.ndarray:
    """Gaussian ``Phi: (round(ratio * size), size)``, entries ``N(0, 1/m)``."""
    check(0 < ratio <= 1, f"ratio={ratio} must be in (0, 1]")
    m = max(1, round(ratio * size))
    return np.random.default_rng(seed).standard_normal((m, size)) / math.sqrt(m)


class PatchCSProblem(Problem):
    """``A = Phi D`` (``(m, atoms)``) with training pairs ``(f, Phi f)`` from a :class:`PatchPool`."""

    def __init__(self, D: np.ndarray, pool: PatchPool, ratio: float = 0.5, seed: int = 0) -> None:
        check(D.shape[0] == pool.patches["train"].shape[1],
              f"the dictionary has {D.shape[0]} rows, the patches {pool.patches['train'].shape[1]} pixels")
        self.pool, self.ratio, self.D = pool, ratio, np.asarray(D, dtype=np.float64)
        self.Phi = sensing_matrix(ratio, D.shape[0], seed)
        m, n = self.Phi.shape[0], D.shape[1]
        spec = ProblemSpec(m=m, n=n, p=0.1, seed=seed, matrix="file", a_file=f"patch-cs:ratio={ratio:g}",
                           val_size=len(pool.patches["val"]), test_size=len(pool.patches["test"]))
        super().__init__(spec, self.Phi @ self.D)
        self._D = torch.from_numpy(self.D)
        self._pairs = {k: (torch.from_numpy(f), torch.from_numpy(f @ self.Phi.T)) for k, f in pool.patches.items()}

    @property
    def size(self) -> int:
        return int(round(math.sqrt(self.D.shape[0])))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes ``(batch, atoms)`` -> patches ``D x: (batch, size^2)`` (0-1 scale, mean removed)."""
        D = self._D if self._D.device == x.device and self._D.dtype == x.dtype else self._D.to(x.device, x.dtype)
        self._D = D
        return x @ D.T

    def sample(self, batch: int, generator: torch.Generator, dtype: torch.dtype = torch.float32,
               snr: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        check(batch >= 1, f"batch size must be positive, got {batch}")
        x, y = self._pairs["train"]
        idx = torch.randint(0, len(x), (batch,), generator=generator)
        return x[idx].to(dtype), y[idx].to(dtype)

    def _fixed(self, which: str, size: int, dtype: torch.dtype, snr: float | None = None):
        x, y = self._pairs["val" if which == "val" else "test"]
        check(size <= len(x), f"the {which} split holds {len(x)} patches, {size} asked")
        return x[:size].to(dtype), y[:size].to(dtype)

    def test_matrix(self) -> torch.Tensor:
        return self.A

    def measure_image(self, image: np.ndarray, stride: int | None = None):
        """``(y (count, m), dc (count, 1), layout)`` of an image's patches (mean removed, 0-1 scale)."""
        raw, lay = P.extract(image, self.size, stride)
        f, dc = P.remove_mean(raw)
        return (f / 255.0) @ self.Phi.T, dc, lay

    def reconstruct_image(self, codes: np.ndarray, dc: np.ndarray, lay: P.Layout) -> np.ndarray:
        """The image from the codes of its patches: ``D x * 255 + dc``, overlaps averaged."""
        return P.reconstruct(codes @ self.D.T * 255.0 + dc, lay)

    def __repr__(self) -> str:
        return f"PatchCSProblem({self.m}x{self.n}, ratio {self.ratio:g}, {len(self.pool.patches['train'])} patches)"


def evaluate_images(problem: PatchCSProblem, solve: Callable[[np.ndarray], np.ndarray],
                    images: dict[str, np.ndarray], stride: int | None = None) -> tuple[dict[str, float], dict]:
    """PSNR per image and the reconstructions, for ``solve: y (count, m) -> codes (count, atoms)``."""
    scores, recs = {}, {}
    for name, im in images.items():
        y, dc, lay = problem.measure_image(im, stride)
        rec = problem.reconstruct_image(np.asarray(solve(y), dtype=np.float64), dc, lay)
        scores[name], recs[name] = P.psnr(rec, im), rec
    return scores, recs
