"""Image files in and out, the packaged training images and the test folder.

Images are float64 grey levels on the 0-255 scale, shape ``(H, W)``. A colour image is
converted to grey (ITU-R 601 luma by :func:`skimage.color.rgb2gray`) and the conversion is
reported, never silent; an alpha channel is dropped; integer images are scaled by their
type's range (uint16 -> 0-255).

Training images come from packaged data only, never downloaded and never one of the test
images: scikit-image's bundled natural photographs and PyWavelets' ``ascent`` and ``aero``.
Both packages also ship the *cameraman* photograph (``skimage.data.camera``,
``pywt.data.camera``), a Set11 test image, so neither is used. A user folder (e.g. the
400 BSD500 training images) replaces the packaged set with ``folder=``.
"""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path

import numpy as np

from ..errors import UsageError, check
from ..io import atomic_write

EXTRA = "images"


def require(module: str):
    """Import ``module`` or fail in one line naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"{module} is missing: install the '{EXTRA}' extra "
                         f"(pip install -e '.[{EXTRA}]')") from None

SET11 = ("barbara", "boats", "cameraman", "fingerprint", "flinstones", "foreman", "house", "lena256", "Monarch",
         "Parrots", "peppers256")
SKIMAGE_TRAIN = ("astronaut", "brick", "chelsea", "coffee", "coins", "grass", "gravel", "moon", "rocket", "page",
                 "text")  # cell (microscopy) and hubble_deep_field (mostly black sky) are left out
PYWT_TRAIN = ("ascent", "aero")
SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".gif")
TEST_FOLDER = Path(__file__).resolve().parents[3] / "shared" / "data" / "test_images"  # ../shared/data of a clone


def to_grey(image: np.ndarray, name: str = "image") -> tuple[np.ndarray, str]:
    """``(grey 0-255 float64 (H, W), note)``; the note says what was converted ('' if nothing)."""
    a = np.asarray(image)
    notes = []
    if a.dtype.kind in "ui":
        a = a.astype(np.float64) * (255.0 / np.iinfo(a.dtype).max)
    elif a.dtype.kind == "b":
        a = a.astype(np.float64) * 255.0
    else:
        check(a.dtype.kind == "f", f"{name} has pixel type {a.dtype}; expected an integer or float image")
        a = a.astype(np.float64)
        if a.size and a.max() <= 1.0:
            a = a * 255.0
    if a.ndim == 3 and a.shape[-1] in (2, 4):
        a, _ = a[..., :-1], notes.append("alpha channel dropped")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 3 and a.shape[-1] == 3:
        a = require("skimage.color").rgb2gray(a / 255.0) * 255.0
        notes.append("colour converted to grey (ITU-R 601 luma)")
    check(a.ndim == 2, f"{name} has shape {a.shape}; expected a grey (H, W) or colour (H, W, 3) image")
    check(bool(np.isfinite(a).all()), f"{name} contains NaN or Inf pixels")
    return a, "; ".join(notes)


def load_image(path: str | Path, min_size: int = 1) -> tuple[np.ndarray, str]:
    """Read an image file as grey 0-255 float64 ``(H, W)`` with its conversion note.

    A file that is not an image, or an image smaller than ``min_size`` pixels on a side (a patch),
    is a one-line error."""
    path = Path(path)
    check(path.is_file(), f"image file {path} does not exist")
    io = require("skimage.io")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = io.imread(path)
    except Exception as e:  # imageio/tifffile/PIL raise many types for a file that is not an image
        raise UsageError(f"cannot read {path} as an image ({type(e).__name__}); give a PNG, TIFF, JPEG or BMP file") \
            from None
    img, note = to_grey(raw, str(path))
    check(min(img.shape) >= min_size, f"{path} is {img.shape[0]}x{img.shape[1]} pixels, smaller than a "
                                      f"{min_size}x{min_size} patch; use a larger image or a smaller patch")
    return img, note


def folder_images(folder: str | Path, min_size: int = 1, log=None) -> dict[str, np.ndarray]:
    """Every image file of ``folder`` (sorted by name), grey 0-255; conversions go to ``log``."""
    folder = Path(folder)
    check(folder.is_dir(), f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES)
    check(files, f"{folder} holds no image file ({', '.join(SUFFIXES)})")
    out = {}
    for p in files:
        out[p.stem], note = load_image(p, min_size)
        if note and log:
            log(f"{p.name}: {note}")
    return out


def packaged_training_images() -> dict[str, np.ndarray]:
    """The packaged training set: scikit-image's and PyWavelets' bundled photographs (grey 0-255),
    cameraman excluded (it is a test image)."""
    skd, pywt_data = require("skimage.data"), require("pywt.data")
    out = {}
    for name in SKIMAGE_TRAIN:
        out[name], _ = to_grey(getattr(skd, name)(), name)
    for name in PYWT_TRAIN:
        out[name], _ = to_grey(getattr(pywt_data, name)(), name)
    return out


def training_images(folder: str | Path | None = None, min_size: int = 1, log=None) -> dict[str, np.ndarray]:
    """A user folder's images, or the packaged set."""
    return packaged_training_images() if folder is None else folder_images(folder, min_size, log)


def test_images(folder: str | Path | None = None, names: tuple[str, ...] | None = SET11,
                min_size: int = 1) -> dict[str, np.ndarray]:
    """The Set11 test images (by default from ``../shared/data/test_images``); ``names=None``: all of the folder."""
    folder = TEST_FOLDER if folder is None else Path(folder)
    images = folder_images(folder, min_size)
    if names is None:
        return images
    missing = [n for n in names if n not in images]
    check(not missing, f"{folder} lacks the test image(s) {', '.join(missing)}")
    return {n: images[n] for n in names}


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a grey 0-255 image as an 8-bit PNG (clipped, rounded), atomically."""
    iio = require("imageio.v3")
    path = Path(path)
    data = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    atomic_write(path, lambda f: iio.imwrite(f, data, extension=".png"))
    return path
