"""A scikit-learn estimator around :func:`unrolled.train`: ``fit(Y, X)``, ``fit(Y)``, ``predict(Y)``.

In scikit-learn's terms the *features* are the measurements ``Y`` (``n_samples x m``) and the
*targets* the sparse signals ``X`` (``n_samples x n``), so ``UnrolledRegressor(A=A).fit(Y, X)``
reads as every other regressor's ``fit(features, targets)``. The measurement matrix ``A`` is a
parameter (the unrolled networks are built for it). Three ways to train:

- ``fit(Y, X)``: supervised, on the given pairs (a finite pool, ``val_fraction`` of it held out
  for model selection; :mod:`unrolled.training.data`), with the NMSE loss;
- ``fit(Y)``: unsupervised, on the measurements alone, with the Lasso loss (``loss_lam``);
- ``fit(None)``: fresh samples from the problem's own prior (``p``, ``snr``) every step.

Training runs in memory (no run directory); ``run_`` is the :class:`~unrolled.Run` afterwards.
Requires scikit-learn (``unrolled[baselines]``). The estimator checks that apply and those that
do not (with the reason) are in tests/test_estimator.py.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from .errors import check, require

_sk = require("sklearn.base", extra="baselines", feature="the scikit-learn estimator (unrolled.estimator)")
from sklearn.utils.validation import check_is_fitted, validate_data  # noqa: E402  (after the check above)

__all__ = ["UnrolledRegressor"]


class UnrolledRegressor(_sk.RegressorMixin, _sk.MultiOutputMixin, _sk.BaseEstimator):
    """An unrolled network (``model``, ``layers`` deep) trained for the measurement matrix ``A``.

    ``config``: the model's config fields (``unrolled list``); ``budget``: training samples;
    ``p`` and ``snr``: the problem's prior and noise (fresh samples, and the measurement noise of
    ``fit(None)``); ``seed``: everything random (matrix-free: A is given). ``score`` is scikit-learn's
    R^2 over all signal entries; :func:`unrolled.metrics.nmse_db` gives the NMSE.
    """

    def __init__(self, A=None, model: str = "alista", layers: int = 16, config: dict | None = None,
                 budget: int = 200_000, batch: int = 128, lr: float | None = None, loss_lam: float = 0.1,
                 val_fraction: float = 0.1, p: float = 0.1, snr: float = 40.0, seed: int = 0) -> None:
        self.A = A
        self.model = model
        self.layers = layers
        self.config = config
        self.budget = budget
        self.batch = batch
        self.lr = lr
        self.loss_lam = loss_lam
        self.val_fraction = val_fraction
        self.p = p
        self.snr = snr
        self.seed = seed

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False  # fit(Y) trains unsupervised
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        return tags

    def _problem(self):
        from .problem import Problem, ProblemSpec

        check(self.A is not None, "UnrolledRegressor needs the measurement matrix: UnrolledRegressor(A=A)")
        A = np.asarray(self.A, dtype=np.float64)
        check(A.ndim == 2, f"A must be a matrix (m x n), got shape {A.shape}")
        m, n = A.shape
        spec = ProblemSpec(m=m, n=n, p=self.p, snr=self.snr, seed=self.seed, val_size=min(2000, 10 * n),
                           test_size=1)
        return Problem(spec, A)

    def fit(self, Y, X=None):
        """Train on measurements ``Y`` (``n_samples x m``) and signals ``X`` (``n_samples x n``), on ``Y``
        alone (the Lasso loss), or with ``Y=None`` on fresh samples of the problem's prior."""
        from . import api
        from .training.data import DataSpec

        problem = self._problem()
        options = dict(batch=self.batch, seed=self.seed, eval_every=max(1, min(50, self.budget // self.batch // 4)))
        with tempfile.TemporaryDirectory(prefix="unrolled-fit-") as tmp:
            data = None
            if Y is not None:
                if X is None:
                    Y = validate_data(self, Y, dtype=np.float64)
                else:
                    Y, X = validate_data(self, Y, X, dtype=np.float64, multi_output=True, y_numeric=True)
                    X = X.reshape(len(X), -1)
                    check(X.shape[1] == problem.n, f"X has {X.shape[1]} columns, A has n={problem.n}")
                check(Y.shape[1] == problem.m, f"Y has {Y.shape[1]} columns, A has m={problem.m} rows")
                np.save(Path(tmp) / "y.npy", Y)
                files = dict(train_y=str(Path(tmp) / "y.npy"))
                if X is not None:
                    np.save(Path(tmp) / "x.npy", X)
                    files["train_x"] = str(Path(tmp) / "x.npy")
                data = DataSpec(**files, val_fraction=self.val_fraction)
                if X is None:
                    options.update(loss="lasso", loss_lam=self.loss_lam)
            config = {**(self.config or {}), "K": self.layers}
            self.run_ = api.train(problem, self.model, config, budget=self.budget, lr=self.lr, data=data,
                                  log=lambda message: None, **options)
        self.n_targets_ = problem.n
        return self

    def predict(self, Y) -> np.ndarray:
        """Estimated signals (``n_samples x n``, float64) for measurements ``Y`` (``n_samples x m``)."""
        check_is_fitted(self, "run_")
        Y = validate_data(self, Y, dtype=np.float64, reset=False)
        return np.asarray(self.run_.predict(Y), dtype=np.float64)
