"""Natural images (issue 19): patch compressive sensing with a learned dictionary and
convolutional LISTA/ALISTA denoising.

Needs the ``images`` extra (``pip install -e '.[images]'``: scikit-image, scikit-learn,
PyWavelets; sporco and bm3d where they install). :func:`require` turns a missing package
into a one-line :class:`~unrolled.errors.UsageError` naming the extra.

* :mod:`.data`: image files in and out (grey levels 0-255, colour converted with a note),
  the packaged training images and the Set11 test folder;
* :mod:`.patches`: 16x16 patch extraction, reconstruction (non-overlapping or averaged
  overlaps), PSNR;
* :mod:`.dictionary`: the patch dictionary (scikit-learn) and convolutional dictionaries
  (files in MATLAB or PyTorch layout, or sporco);
* :mod:`.cs`: the patch compressive-sensing problem ``A = Phi D`` every registered model trains on;
* :mod:`.conv`: convolution operators, the analytic convolutional W and the denoising problem;
* :mod:`.baselines`: wavelet, TV, BM3D denoisers.
"""

from __future__ import annotations

from .conv import ConvDenoiseProblem  # torch/SciPy only: no extra needed
from .conv import closed_form as conv_closed_form
from .cs import PatchCSProblem, PatchPool, evaluate_images
from .data import EXTRA, require
from .patches import extract, psnr, reconstruct

__all__ = ["ConvDenoiseProblem", "PatchCSProblem", "PatchPool", "conv_closed_form", "evaluate_images", "extract",
           "psnr", "reconstruct", "require", "EXTRA"]
