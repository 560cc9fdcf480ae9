"""The deepinv adapter (unrolled/deepinv.py): a deepinv operator trained on and evaluated here, a trained
run evaluated by deepinv's own test loop. Skipped where deepinv is not installed (the deepinv extra);
the missing-extra error is tested everywhere."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import sys

import numpy as np
import pytest
import torch

import unrolled as ur
from unrolled import UsageError
from unrolled.metrics import nmse_db
from unrolled.training.data import DataSpec

SHAPE = (1, 6, 9)  # odd, non-square: n = 54
M = 27


@pytest.fixture(scope="module")
def adapter():
    if importlib.util.find_spec("deepinv") is None:
        pytest.skip("deepinv is not installed (pip install 'unrolled[deepinv]')")
    import unrolled.deepinv as adapter

    return adapter


@pytest.fixture(scope="module")
def physics(adapter):
    return adapter.dinv.physics.CompressedSensing(m=M, img_size=SHAPE, rng=torch.Generator().manual_seed(3))


def sparse(count: int, seed: int, p: float = 0.1) -> torch.Tensor:
    """Bernoulli-Gaussian signals ``(count, *SHAPE)`` with no all-zero one (deepinv's NMSE divides by ||x||^2)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(count, *SHAPE, generator=g) * (torch.rand(count, *SHAPE, generator=g) < p)
    return x[x.flatten(1).norm(dim=1) > 0]


@pytest.fixture(scope="module")
def run(adapter, tmp_path_factory):
    """ALISTA (6 layers) trained on 400 pairs measured by the deepinv operator, noise included."""
    dinv = adapter.dinv
    physics = dinv.physics.CompressedSensing(m=M, img_size=SHAPE, rng=torch.Generator().manual_seed(3))
    physics.noise_model = dinv.physics.GaussianNoise(sigma=0.01, rng=torch.Generator().manual_seed(4))
    x = sparse(400, seed=5)
    with torch.no_grad():
        y = physics(x)
    folder = tmp_path_factory.mktemp("deepinv-data")
    np.save(folder / "x.npy", x.flatten(1).double().numpy())
    np.save(folder / "y.npy", y.double().numpy())
    problem = adapter.to_problem(physics, p=0.1, snr=40.0, seed=1, val_size=300, test_size=500)
    data = DataSpec(train_x=str(folder / "x.npy"), train_y=str(folder / "y.npy"), val_fraction=0.1)
    return ur.train(problem, "alista", {"K": 6}, budget=4000, batch=40, data=data, eval_every=10,
                    log=lambda message: None)


def test_the_matrix_is_the_operators(adapter, physics):
    A = adapter.matrix(physics)
    assert A.shape == (M, 54) and A.dtype == np.float64
    np.testing.assert_array_equal(A, physics._A.double().numpy())  # the compressed-sensing matrix, bit for bit
    dinv = adapter.dinv
    mask = (torch.rand(SHAPE, generator=torch.Generator().manual_seed(0)) < 0.6).float()
    inpainting = dinv.physics.Inpainting(img_size=SHAPE, mask=mask)  # any LinearPhysics: here diag(mask)
    np.testing.assert_array_equal(adapter.matrix(inpainting), np.diag(mask.flatten().double().numpy()))
    problem = adapter.to_problem(physics, p=0.1, val_size=10, test_size=10)
    scale = problem.scale.numpy()  # deepinv's columns are not unit-norm: the problem normalises them
    np.testing.assert_allclose(problem.A.numpy() * scale, A, rtol=1e-12)
    assert (problem.m, problem.n, problem.spec.a_file) == (M, 54, "deepinv:CompressedSensing")


def test_operators_without_a_real_matrix_are_refused(adapter):
    dinv = adapter.dinv
    square = dinv.physics.LinearPhysics(A=lambda x: x * x, A_adjoint=lambda y: y)
    with pytest.raises(UsageError, match="is not linear"):
        adapter.matrix(square, shape=SHAPE)
    with pytest.raises(UsageError, match="not a deepinv LinearPhysics"):
        adapter.matrix(dinv.physics.Physics(A=lambda x: x), shape=SHAPE)
    with pytest.raises(UsageError, match="give shape"):
        adapter.matrix(dinv.physics.LinearPhysics(A=lambda x: x, A_adjoint=lambda y: y))
    complex_cs = dinv.physics.CompressedSensing(m=4, img_size=(1, 3, 3), dtype=torch.cfloat)
    with pytest.raises(UsageError, match="complex"):
        adapter.matrix(complex_cs)
    with pytest.raises(UsageError, match="come from the operator"):
        adapter.to_problem(dinv.physics.CompressedSensing(m=4, img_size=(1, 3, 3)), m=4)


def test_a_deepinv_operator_trains_and_evaluates_here(run):
    rows = {r["method"]: r for r in ur.evaluate(run, baselines=("ista", "fista"), oracle=False) if r["layer"] == 6}
    # 400 pairs measured by deepinv (its own noise model): ALISTA's 12 numbers beat FISTA's fixed ones at depth 6
    assert rows["fista"]["nmse_db"] < rows["ista"]["nmse_db"]
    assert rows["alista"]["nmse_db"] < rows["fista"]["nmse_db"] - 3
    x, y = run.problem.test()  # the same test set through Run.predict (the operator's units, mapped back)
    assert nmse_db(run.problem.from_user(run.predict(y)), x) == pytest.approx(rows["alista"]["nmse_db"], abs=1e-3)


def test_a_trained_run_through_deepinvs_evaluation(adapter, physics, run):
    dinv = adapter.dinv
    model = adapter.Reconstructor(run, physics)
    x = sparse(300, seed=9)
    with torch.no_grad():
        y = physics.A(x)  # noiseless: deepinv's test loop and ours see the same pairs
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    out = dinv.test(model, loader, physics, metrics=[dinv.loss.metric.NMSE(), dinv.loss.metric.PSNR()],
                    verbose=False, show_progress_bar=False)
    x_hat = torch.from_numpy(run.predict(y.double().numpy()))
    ours = (((x_hat - x.flatten(1)) ** 2).sum(1) / (x.flatten(1) ** 2).sum(1)).mean()
    assert out["NMSE"] == pytest.approx(float(ours), rel=1e-4)  # deepinv's mean NMSE is our per-sample mean
    assert out["NMSE"] < 0.2 * out["NMSE no learning"]  # far better than deepinv's A^T y
    assert model(y, physics).shape == (len(x), *SHAPE)
    other = dinv.physics.CompressedSensing(m=M, img_size=SHAPE, rng=torch.Generator().manual_seed(4))
    with pytest.raises(UsageError, match="trained for another operator"):
        model(y, other)


def test_deepinvs_trainer_fine_tunes_a_run(adapter, physics, run):
    dinv = adapter.dinv
    model = adapter.Reconstructor(copy.deepcopy(run), physics)
    x = sparse(64, seed=11)
    with torch.no_grad():
        y = physics.A(x)
    loss = dinv.loss.SupLoss(metric=dinv.metric.MSE())

    def error() -> float:
        with torch.no_grad():
            return float(loss(x_net=model(y, physics), x=x).mean())

    before = error()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    dinv.Trainer(model, physics=physics, optimizer=torch.optim.Adam(model.parameters(), lr=1e-3), epochs=3,
                 train_dataloader=loader, losses=loss, online_measurements=False, device="cpu", save_path=None,
                 verbose=False, show_progress_bar=False, plot_images=False).train()
    assert error() < before  # the gradient reached the network through the reconstructor


def test_missing_deepinv_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepinv", None)  # `import deepinv` now raises ImportError
    monkeypatch.delitem(sys.modules, "unrolled.deepinv", raising=False)
    with pytest.raises(UsageError) as e:
        importlib.import_module("unrolled.deepinv")
    assert "\n" not in str(e.value) and "pip install 'unrolled[deepinv]'" in str(e.value)
