"""Patches of an image, the image back from its patches, PSNR.

As the ALISTA reference (``utils/cs.py``): the image is zero-padded at the bottom and right
to ``size + k * stride`` pixels, patches are taken row by row with ``stride`` (``stride = size``:
non-overlapping, the reference's setting; smaller: overlapping), each flattened row-major
to ``size * size`` values; reconstruction adds each patch back at its place, divides every
pixel by the number of patches covering it (the average of the overlaps) and crops the padding.
Mean removal (the reference's, stated in every table): each patch loses its own mean
("DC") before measurement and gets it back after reconstruction -- the DC is taken from the
*original* patch, as in the reference's test code, so it is not measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import check


@dataclass(frozen=True)
class Layout:
    """Where the patches of one image sit: image and padded sizes, patch size and stride."""

    height: int
    width: int
    size: int
    stride: int

    def _count(self, n: int) -> int:
        return (max(n - self.size, 0) + self.stride - 1) // self.stride + 1

    @property
    def rows(self) -> int:
        return self._count(self.height)

    @property
    def cols(self) -> int:
        return self._count(self.width)

    @property
    def padded(self) -> tuple[int, int]:
        return self.size + (self.rows - 1) * self.stride, self.size + (self.cols - 1) * self.stride


def layout(shape: tuple[int, int], size: int = 16, stride: int | None = None) -> Layout:
    """The :class:`Layout` of an ``(H, W)`` image; ``stride=None`` means ``size`` (non-overlapping)."""
    stride = size if stride is None else stride
    check(size >= 1 and 1 <= stride <= size, f"patch size {size} and stride {stride} must satisfy 1 <= stride <= size")
    h, w = shape
    check(h >= size and w >= size, f"the image is {h}x{w} pixels, smaller than a {size}x{size} patch")
    return Layout(h, w, size, stride)


def extract(image: np.ndarray, size: int = 16, stride: int | None = None) -> tuple[np.ndarray, Layout]:
    """``(patches (count, size * size), layout)`` of a grey ``(H, W)`` image, row by row."""
    check(image.ndim == 2, f"expected a grey (H, W) image, got shape {image.shape}")
    lay = layout(image.shape, size, stride)
    ph, pw = lay.padded
    pad = np.zeros((ph, pw), dtype=np.float64)
    pad[: lay.height, : lay.width] = image
    win = np.lib.stride_tricks.sliding_window_view(pad, (size, size))[:: lay.stride, :: lay.stride]
    return win.reshape(-1, size * size).copy(), lay


def reconstruct(patches: np.ndarray, lay: Layout) -> np.ndarray:
    """The ``(H, W)`` image from its patches: overlaps averaged, padding cropped."""
    s = lay.size
    check(patches.shape == (lay.rows * lay.cols, s * s),
          f"patches have shape {patches.shape}, the layout needs ({lay.rows * lay.cols}, {s * s})")
    ph, pw = lay.padded
    acc, count = np.zeros((ph, pw)), np.zeros((ph, pw))
    blocks = patches.reshape(lay.rows, lay.cols, s, s)
    for i in range(lay.rows):
        r = i * lay.stride
        for j in range(lay.cols):
            c = j * lay.stride
            acc[r:r + s, c:c + s] += blocks[i, j]
            count[r:r + s, c:c + s] += 1
    return (acc / count)[: lay.height, : lay.width]


def remove_mean(patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(patches - dc, dc)`` with ``dc`` each patch's mean, shape ``(count, 1)``."""
    dc = patches.mean(axis=1, keepdims=True)
    return patches - dc, dc


def psnr(estimate: np.ndarray, reference: np.ndarray, peak: float = 255.0, clip: bool = True) -> float:
    """``10 log10(peak^2 / MSE)`` in dB, the estimate clipped to ``[0, peak]`` first (as the reference);
    ``inf`` for identical images."""
    check(estimate.shape == reference.shape, f"shapes differ: {estimate.shape} vs {reference.shape}")
    est = np.clip(estimate, 0, peak) if clip else estimate
    mse = float(np.mean((est - reference) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak ** 2 / mse)


def random_patches(images: list[np.ndarray], count: int, size: int, generator: np.random.Generator) -> np.ndarray:
    """``count`` patches ``(count, size * size)`` at uniform random places of the images, each image
    weighted by its number of patch positions."""
    check(images, "no training image")
    for im in images:
        layout(im.shape, size, 1)
    spots = np.array([(im.shape[0] - size + 1) * (im.shape[1] - size + 1) for im in images], dtype=np.float64)
    which = generator.choice(len(images), size=count, p=spots / spots.sum())
    out = np.empty((count, size * size))
    for k, i in enumerate(which):
        im = images[i]
        r = generator.integers(0, im.shape[0] - size + 1)
        c = generator.integers(0, im.shape[1] - size + 1)
        out[k] = im[r:r + size, c:c + size].ravel()
    return out
