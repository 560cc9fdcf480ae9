"""The scikit-learn estimator (unrolled/estimator.py): scikit-learn's own checks, and the same
properties on data that fit the estimator's measurement matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from unrolled import Problem, ProblemSpec, UsageError  # noqa: E402
from unrolled.estimator import UnrolledRegressor  # noqa: E402
from unrolled.metrics import nmse_db  # noqa: E402

SHAPE = ("scikit-learn's checks draw random features and targets (1 to 10 columns) that no fixed measurement "
         "matrix A fits: fit refuses Y whose width is not m or X whose width is not n; the property is "
         "tested below on data of A's shape")
# Which checks do not apply, and why (every other check runs and passes).
NOT_APPLICABLE = {name: SHAPE for name in (
    "check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
    "check_estimators_fit_returns_self", "check_readonly_memmap_input", "check_n_features_in_after_fitting",
    "check_estimators_dtypes", "check_dtype_object", "check_pipeline_consistency", "check_estimators_nan_inf",
    "check_f_contiguous_array_estimator", "check_regressors_train", "check_regressor_data_not_an_array",
    "check_regressor_multioutput", "check_regressors_no_decision_function", "check_regressors_int",
    "check_methods_sample_order_invariance", "check_methods_subset_invariance", "check_dict_unchanged",
    "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in", "check_fit2d_predict1d",
    "check_fit2d_1sample", "check_fit2d_1feature", "check_positive_only_tag_during_fit")}
NOT_APPLICABLE["check_estimators_pickle"] = ("pickling is the user's choice; we never unpickle (weights are "
                                             "safetensors, unrolled.load) and the checks' data do not fit A")

A = np.random.default_rng(0).standard_normal((7, 13))


def small(**kw) -> UnrolledRegressor:
    return UnrolledRegressor(A=A, layers=3, budget=3000, batch=64, p=0.2, snr=40.0, **kw)


@parametrize_with_checks([small()], expected_failed_checks=lambda est: NOT_APPLICABLE)
def test_sklearn_checks(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def data():
    problem = Problem(ProblemSpec(m=7, n=13, p=0.2, snr=40.0, seed=5, val_size=400, test_size=300), A)
    xt, yt = problem.sample(600, torch.Generator().manual_seed(1))
    x, y = problem.test()
    return yt.double().numpy(), xt.double().numpy(), y.double().numpy(), x.double().numpy()


def test_supervised_fit_predict_clone_and_reproducibility(data):
    Yt, Xt, Y, X = data
    est = small()
    assert est.fit(Yt, Xt) is est and est.n_features_in_ == 7
    X_hat = est.predict(Y)
    assert X_hat.shape == X.shape and X_hat.dtype == np.float64
    assert nmse_db(torch.from_numpy(X_hat), torch.from_numpy(X)) < -1  # m=7 of n=13, 3 layers: a hard problem
    again = clone(est).fit(Yt, Xt).predict(Y)  # same parameters, same seed: the same bits
    assert np.array_equal(again, X_hat)
    order = np.random.default_rng(2).permutation(len(Y))
    assert np.allclose(est.predict(Y[order]), X_hat[order], atol=1e-6)  # sample order and subsets (float32 model)
    assert np.allclose(est.predict(Y[:5]), X_hat[:5], atol=1e-6)
    assert est.get_params()["layers"] == 3 and clone(est).set_params(layers=4).layers == 4
    assert not hasattr(clone(est), "run_")


def test_unsupervised_and_fresh_sample_fits(data):
    Yt, _, Y, X = data

    est = small(loss_lam=0.05).fit(Yt)  # measurements alone: the Lasso loss
    assert est.run_.config["options"]["loss"] == "lasso"
    assert nmse_db(torch.from_numpy(est.predict(Y)), torch.from_numpy(X)) < 0
    fresh = small().fit(None)
    assert fresh.predict(Y).shape == X.shape


def test_bad_input_is_one_line(data):
    Yt, Xt, _, _ = data
    with pytest.raises(UsageError, match="needs the measurement matrix"):
        UnrolledRegressor().fit(Yt, Xt)
    with pytest.raises(UsageError, match="A has m=7 rows"):
        small().fit(np.ones((10, 5)), Xt[:10])
    bad = Yt.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        small().fit(bad, Xt)
    est = small().fit(Yt, Xt)
    with pytest.raises(ValueError, match="features"):
        est.predict(np.ones((3, 6)))
