"""Natural images (issue 19): patches, PSNR, the analytic convolutional W, conv models, bad input.

Tiny sizes, float64. Tests that read or write image files need the ``images`` extra
(scikit-image) and skip without it; the test images come from ``../shared/data/test_images``
relative to the repository (skipped where a clone has none).
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.signal
import torch

from unrolled import api
from unrolled.errors import UsageError
from unrolled.images import conv as C
from unrolled.images import cs, patches
from unrolled.images import dictionary as Dm
from unrolled.models import build

F64 = torch.float64


def filters(M=5, h=3, w=3, seed=0):
    F = np.random.default_rng(seed).standard_normal((M, h, w))
    return F / np.sqrt((F ** 2).sum((1, 2), keepdims=True))


@pytest.fixture(scope="module")
def conv_problem():
    rng = np.random.default_rng(1)
    return C.ConvDenoiseProblem(filters(), [rng.random((19, 23)) * 255, rng.random((21, 17)) * 255], crop=11,
                                sigma=20, val_size=4)


# -- patches and PSNR ------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [16, 7, 1])
def test_patches_then_reconstruction_is_the_identity(stride):
    image = np.random.default_rng(0).random((37, 53)) * 255
    p, lay = patches.extract(image, 16, stride)
    assert p.shape == (lay.rows * lay.cols, 256)
    assert np.allclose(patches.reconstruct(p, lay), image, atol=1e-10)
    f, dc = patches.remove_mean(p)
    assert np.allclose(f.mean(1), 0) and np.allclose(f + dc, p)


def test_overlaps_are_averaged():
    p, lay = patches.extract(np.zeros((4, 6)), 4, 2)  # two patches overlapping in columns 2..3
    p[0], p[1] = 1.0, 3.0
    rec = patches.reconstruct(p, lay)
    assert np.allclose(rec[:, :2], 1) and np.allclose(rec[:, 2:4], 2) and np.allclose(rec[:, 4:], 3)


def test_psnr_of_a_known_pair():
    ref = np.zeros((8, 9))
    assert patches.psnr(ref + 1.0, ref) == pytest.approx(20 * math.log10(255.0))  # MSE 1
    assert patches.psnr(ref + 255 * 10 ** -1.5, ref) == pytest.approx(30.0)
    assert patches.psnr(ref, ref) == math.inf
    assert patches.psnr(ref - 5.0, ref) == math.inf  # the estimate is clipped to [0, 255] first


def test_image_smaller_than_a_patch_is_one_line():
    with pytest.raises(UsageError, match="smaller than a 16x16 patch"):
        patches.extract(np.zeros((15, 40)), 16)


# -- the analytic convolutional W ----------------------------------------------------------------


def test_gram_is_the_sum_of_squared_correlations():
    F, w = filters(4, 3, 4), np.random.default_rng(2).standard_normal((3, 4))
    direct = sum((scipy.signal.correlate2d(w, f, mode="full") ** 2).sum() for f in F)
    assert w.ravel() @ C.gram(F) @ w.ravel() == pytest.approx(direct, rel=1e-12)


def test_conv_W_meets_its_constraint_and_beats_a_random_W():
    F = filters(7, 3, 3)
    W = C.closed_form(F)
    assert np.allclose(C.constraint(W, F), 1, atol=1e-12)  # the conv diag(W^T D) = 1
    # interior columns of the operator: the inner product of W_j and D_j placed at the same pixel is 1
    shape = C.ConvShape(9, 9)
    z = torch.zeros(1, 7 * 11 * 11, dtype=F64)
    z.view(7, 11, 11)[3, 5, 5] = 1
    col_D = C.synth(z, torch.from_numpy(F), shape)
    col_W = C.synth(z, torch.from_numpy(W), shape)
    assert float((col_D * col_W).sum()) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(3)
    for _ in range(5):
        R = C.project(rng.standard_normal(F.shape), F)
        assert np.allclose(C.constraint(R, F), 1)
        assert C.objective(W, F) < C.objective(R, F)
    assert C.objective(W, F) <= C.objective(C.project(F.copy(), F), F)


def test_pgd_reaches_the_closed_form():
    F = filters(6, 3, 3, seed=4)
    Wp, iterations, change = C.pgd(F, iters=5000, tol=1e-13)
    assert change < 1e-13 and iterations < 5000
    assert np.allclose(Wp, C.closed_form(F), atol=1e-9)
    with pytest.raises(UsageError, match="diverges"):
        C.pgd(F, step=10.0)


# -- operator and models ---------------------------------------------------------------------------


def test_torch_operator_equals_the_scipy_reference_and_is_its_adjoint():
    F, rng = filters(3, 3, 2), np.random.default_rng(5)
    shape = C.ConvShape(7, 9)
    z, r = rng.standard_normal((3, 9, 10)), rng.standard_normal((7, 9))
    Ft = torch.from_numpy(F)
    Dz = C.synth(torch.from_numpy(z.reshape(1, -1)), Ft, shape).numpy().reshape(7, 9)
    Dr = C.adjoint(torch.from_numpy(r.reshape(1, -1)), Ft, shape).numpy().reshape(3, 9, 10)
    assert np.allclose(Dz, C.synth_ref(z, F), atol=1e-13) and np.allclose(Dr, C.adjoint_ref(r, F), atol=1e-13)
    assert (Dz * r).sum() == pytest.approx((z * Dr).sum(), rel=1e-12)
    ratio = max(np.linalg.norm(C.synth_ref(rng.standard_normal((3, 9, 10)), F)) ** 2
                for _ in range(20)) / (3 * 9 * 10)
    assert C.lipschitz(F) >= ratio  # a bound, not below what random maps reach


@pytest.mark.parametrize("name", ["conv-lista-cp", "conv-tilista", "conv-alista", "conv-ista", "conv-fista"])
def test_conv_models_at_init_equal_their_reference_iteration(name, conv_problem):
    _, y = conv_problem.sample(3, torch.Generator().manual_seed(0), F64)
    model = build(name, conv_problem, {"K": 4}, F64)
    outs, twin = model(y, all_layers=True), model.initial_twin(y)
    assert outs[-1].shape == (3, 121)
    for a, b in zip(outs, twin):
        assert torch.allclose(a, b, atol=1e-12, rtol=0)
    assert float(outs[-1].detach().abs().max()) > 0


def test_conv_lista_cp_at_init_is_conv_ista(conv_problem):
    _, y = conv_problem.sample(2, torch.Generator().manual_seed(1), F64)
    a = build("conv-lista-cp", conv_problem, {"K": 5}, F64)(y, all_layers=True)
    b = build("conv-ista", conv_problem, {"K": 5}, F64)(y, all_layers=True)
    assert all(torch.allclose(u, v, atol=1e-14, rtol=0) for u, v in zip(a, b))


def test_denoise_runs_on_any_image_size(conv_problem):
    model = build("conv-tilista", conv_problem, {"K": 2}, F64)
    img = torch.randn(1, 13, 8, dtype=F64)
    out = model.denoise(img)
    F = conv_problem.filters
    ref = C.proximal_gradient_ref(F, F / model.scale, img[0].numpy(), 1.0, model.config.lam / model.scale, 2)[-1]
    assert out.shape == img.shape and np.allclose(out[0].numpy(), ref, atol=1e-12)


def test_conv_problem_is_seeded_and_trains(conv_problem):
    a = conv_problem.sample(4, torch.Generator().manual_seed(7), F64)
    b = conv_problem.sample(4, torch.Generator().manual_seed(7), F64)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    run = api.train(conv_problem, "conv-alista", {"K": 2}, budget=32, batch=8, eval_every=2, log=lambda s: None)
    assert math.isfinite(run.result["samples"])


def test_patch_problem_trains_every_model_unchanged():
    rng = np.random.default_rng(0)
    D = rng.standard_normal((16, 24))
    D /= np.linalg.norm(D, axis=0)
    images = [rng.random((20, 30)) * 255]
    pool = cs.PatchPool.build(images, size=4, count=200, val=20, test=20)
    prob = cs.PatchCSProblem(D, pool, 0.5)
    assert (prob.m, prob.n) == (8, 24)
    x, y = prob.sample(5, torch.Generator().manual_seed(0), F64)
    assert x.shape == (5, 16) and torch.allclose(y, x @ torch.from_numpy(prob.Phi).T)
    run = api.train(prob, "lista", {"K": 2}, budget=64, batch=16, eval_every=2, log=lambda s: None)
    scores, recs = cs.evaluate_images(prob, run.predict, {"a": images[0]}, stride=2)
    assert recs["a"].shape == (20, 30) and math.isfinite(scores["a"])
    zero = cs.evaluate_images(prob, lambda y: np.zeros((len(y), prob.n)), {"a": images[0]}, stride=2)[0]["a"]
    assert scores["a"] > zero  # trained codes beat the patch means alone


# -- files and bad input ---------------------------------------------------------------------------


def test_conv_dictionary_layouts_and_wrong_shapes(tmp_path):
    F = filters(6, 3, 3)
    np.save(tmp_path / "torch.npy", F)
    np.save(tmp_path / "matlab.npy", np.moveaxis(F, 0, 2))
    np.save(tmp_path / "torch4.npy", F[:, None])
    for name in ("torch", "matlab", "torch4"):
        assert np.array_equal(Dm.load_conv_dictionary(tmp_path / f"{name}.npy"), F)
    np.save(tmp_path / "flat.npy", F.reshape(6, 9))
    with pytest.raises(UsageError, match="expected filters"):
        Dm.load_conv_dictionary(tmp_path / "flat.npy")
    np.save(tmp_path / "cube.npy", np.ones((3, 3, 3)))
    with pytest.raises(UsageError, match="--layout"):
        Dm.load_conv_dictionary(tmp_path / "cube.npy")
    assert Dm.load_conv_dictionary(tmp_path / "cube.npy", layout="torch").shape == (3, 3, 3)
    import scipy.io
    scipy.io.savemat(tmp_path / "d.mat", {"D": np.moveaxis(F, 0, 2), "other": np.ones(2)})
    assert np.array_equal(Dm.load_conv_dictionary(tmp_path / "d.mat"), F)
    with pytest.raises(UsageError, match="no array named 'X'"):
        Dm.load_conv_dictionary(tmp_path / "d.mat", key="X")


def test_patch_dictionary_of_the_wrong_shape(tmp_path):
    path = Dm.save_dictionary(tmp_path / "d.npz", filters(1, 100, 120)[0], "test")
    with pytest.raises(UsageError, match="16x16 patches needs 256 rows"):
        Dm.load_dictionary(path)


def test_image_files_colour_and_garbage(tmp_path):
    io = pytest.importorskip("skimage.io")
    from unrolled.images import data

    rgb = (np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)
    io.imsave(tmp_path / "c.png", rgb, check_contrast=False)
    grey, note = data.load_image(tmp_path / "c.png")
    assert grey.shape == (20, 24) and "colour converted" in note
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    with pytest.raises(UsageError, match="cannot read .* as an image"):
        data.load_image(tmp_path / "bad.png")
    with pytest.raises(UsageError, match="smaller than a 32x32 patch"):
        data.load_image(tmp_path / "c.png", min_size=32)
    r = subprocess.run([sys.executable, "-m", "unrolled", "images", "psnr", str(tmp_path / "bad.png"),
                        str(tmp_path / "c.png")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: cannot read")
    data.save_png(tmp_path / "g.png", grey)
    r = subprocess.run([sys.executable, "-m", "unrolled", "images", "psnr", str(tmp_path / "g.png"),
                        str(tmp_path / "c.png")], capture_output=True, text=True)
    assert r.returncode == 0 and "colour converted" in r.stdout and "PSNR" in r.stdout


def test_packaged_training_images_exclude_the_test_images():
    pytest.importorskip("skimage")
    pytest.importorskip("pywt")
    from unrolled.images import data

    train = data.packaged_training_images()
    assert "camera" not in train and len(train) >= 10
    if not data.TEST_FOLDER.is_dir():
        pytest.skip(f"no test images at {data.TEST_FOLDER}")
    tests = data.test_images()
    assert set(tests) == set(data.SET11)
    for t in tests.values():
        for im in train.values():
            assert im.shape != t.shape or not np.allclose(im, t)
    house = tests["house"]
    p, lay = patches.extract(house, 16)
    assert np.allclose(patches.reconstruct(p, lay), house)
