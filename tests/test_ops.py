"""The ops (docs/spec.md §5, §6, §11.3): hand values, closed forms, and every backend against the reference.

Backend comparisons run in float64 at odd sizes (batch 7, m 23, n 41) without ties (at a kink
the backends may differ, §11.3). "Agree" means, for outputs and for the gradient of every
input: ``|fast - reference| <= RTOL (|reference| + max |reference|)``, ``RTOL = 1e-10``; the
inference forward (``torch.no_grad``) equals the training forward to ``INFER_RTOL = 1e-12``.
"""

from __future__ import annotations

import inspect
import math
import sys

import numpy as np
import pytest
import torch
from torch import Tensor

from unrolled import UsageError, ops
from unrolled.ops import Cut, Selection, fast, reference
from unrolled.ops.fast import steps as fast_steps
from unrolled.ops.fast.shrinkage import kth_largest, selection_cut

D = torch.float64
B, M, N = 7, 23, 41
RTOL = 1e-10
INFER_RTOL = 1e-12
FAST = ["torch", pytest.param("numba", marks=pytest.mark.skipif(not ops.numba_available(), reason="Numba missing"))]
ALL = ["reference", *FAST]
CUTS = [None, Cut(5, True), Cut(5, False)]
CUT_IDS = ["plain", "percentage", "count"]


def t(*v) -> Tensor:
    return torch.tensor(v, dtype=D)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def close(got: Tensor, want: Tensor, rtol: float = RTOL, what: str = "") -> None:
    """``|got - want| <= rtol (|want| + max |want|)`` entry by entry."""
    assert got.shape == want.shape and got.dtype == want.dtype, what
    scale = float(want.detach().abs().max()) if want.numel() else 0.0
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * scale, msg=lambda m: f"{what}: {m}")


def run(fn, inputs, backend: str, seed: int = 99):
    """Under ``backend``: the outputs of ``fn(*inputs)`` (a tuple), the inference outputs, and the
    gradients of ``sum_i <G_i, out_i>`` (fixed random ``G_i``) for every input tensor that requires grad."""
    leaves = [v.detach().clone().requires_grad_(v.requires_grad) if isinstance(v, Tensor) else v for v in inputs]
    wrt = [v for v in leaves if isinstance(v, Tensor) and v.requires_grad]
    originals = [v.detach().clone() for v in leaves if isinstance(v, Tensor)]
    with ops.backend(backend):
        with torch.no_grad():
            inferred = fn(*leaves)
        outs = fn(*leaves)
        inferred, outs = (o if isinstance(o, tuple) else (o,) for o in (inferred, outs))
        g = gen(seed)
        cotangents = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
        used = [(o, c) for o, c in zip(outs, cotangents) if o.requires_grad]
        grads = torch.autograd.grad([o for o, _ in used], wrt, [c for _, c in used], allow_unused=True) if wrt else ()
    for before, after in zip(originals, (v for v in leaves if isinstance(v, Tensor))):
        assert torch.equal(before, after), f"backend {backend} wrote into an input"  # buffer reuse stays inside
    return [o.detach() for o in outs], list(inferred), list(grads)


def check(fn, inputs, backend: str, names: str = "") -> None:
    """``fn`` under ``backend`` agrees with the reference backend: outputs, inference outputs, gradients."""
    want, want_inferred, want_grads = run(fn, inputs, "reference")
    got, got_inferred, got_grads = run(fn, inputs, backend)
    names = names.split() or [f"input {i}" for i in range(len(inputs))]
    grad_names = [n for n, v in zip(names, inputs) if isinstance(v, Tensor) and v.requires_grad]
    for i, (a, b) in enumerate(zip(got, want)):
        close(a, b, what=f"output {i}")
    for i, (a, b) in enumerate(zip(want_inferred, want)):  # the reference's inference path too
        close(a, b, INFER_RTOL, what=f"reference inference output {i}")
    for i, (a, b) in enumerate(zip(got_inferred, got)):
        close(a, b, INFER_RTOL, what=f"inference output {i}")
    for name, a, b in zip(grad_names, got_grads, want_grads):
        assert b is not None, f"the reference gives no gradient of {name}"
        assert a is not None, f"backend {backend} gives no gradient of {name} (the reference does)"
        close(a, b, what=f"gradient of {name}")


def threshold(kind: str, seed: int, negative: bool = False, grad: bool = True) -> Tensor | float:
    """A threshold of ``kind``: ``float``, ``scalar`` (0-d), ``sample`` (B, 1), ``coord`` (N,), ``entry`` (B, N);
    ``negative``: a scalar below 0, else every third entry below 0."""
    if kind == "float":
        return -0.25 if negative else 0.45
    shape = {"scalar": (), "sample": (B, 1), "coord": (N,), "entry": (B, N)}[kind]
    th = 0.3 + 0.4 * torch.rand(shape, generator=gen(seed), dtype=D)
    if negative:
        th = -th if kind == "scalar" else th * torch.where(torch.arange(th.numel()) % 3 == 0, -0.5, 1.0).reshape(shape)
    return th.requires_grad_(grad)


def step_size(kind: str, seed: int) -> Tensor | float:
    """A step size of ``kind`` (as :func:`threshold`), in [0.2, 0.5]: a contraction for the unit-norm columns below."""
    if kind == "float":
        return 0.35
    shape = {"scalar": (), "sample": (B, 1), "coord": (N,), "entry": (B, N)}[kind]
    return (0.2 + 0.3 * torch.rand(shape, generator=gen(seed), dtype=D)).requires_grad_()


def operators(seed: int, fixed: bool):
    """``(A, W)``, ``(M, N)`` with unit-norm columns; ``fixed``: without gradient (the fast nodes' case)."""
    g = gen(seed)
    A, W = (torch.randn(M, N, generator=g, dtype=D) for _ in range(2))
    A, W = A / A.norm(dim=0), W / W.norm(dim=0)
    return A.requires_grad_(not fixed), W.requires_grad_(not fixed)


def signal(seed: int, sparse: bool = False) -> tuple[Tensor, Tensor]:
    """``(x, y)``: ``(B, N)`` and ``(B, M)``, both requiring grad; ``sparse``: half of x exactly 0."""
    g = gen(seed)
    x, y = torch.randn(B, N, generator=g, dtype=D), torch.randn(B, M, generator=g, dtype=D)
    if sparse:
        x[torch.rand(B, N, generator=g) < 0.5] = 0.0
    return x.requires_grad_(), y.requires_grad_()


# -- the public surface ---------------------------------------------------------------------------------

COVERED: set[str] = set()


def covers(*names: str):
    """Marks a test as the backend comparison of the ops ``names``."""
    def mark(test):
        COVERED.update(names)
        return test
    return mark


DISPATCHED = ["soft_threshold", "shrink", "gradient_step", "pgd_step", "step_shrink", "gated_step", "lstm_weights",
              "lstm_cell", "residual_features", "softsign_head"]


def test_every_dispatched_op_has_one_signature_and_a_backend_test():
    # The ops that run the active backend's version (defined in unrolled/ops/__init__.py) are
    # exactly those tested against the reference below, with the reference's signature.
    own = sorted(n for n in ops.__all__ if inspect.isfunction(getattr(ops, n))
                 and getattr(ops, n).__module__ == "unrolled.ops" and n not in ("active", "backend"))
    assert own == sorted(DISPATCHED)
    for name in DISPATCHED:
        ref = inspect.signature(getattr(reference, name)).parameters
        for impl in (getattr(ops, name), getattr(fast, name)):
            assert list(inspect.signature(impl).parameters) == list(ref), name
    assert COVERED == set(DISPATCHED)  # each has a test_backend_* below
    for name in set(ops.__all__) - set(DISPATCHED):  # the rest are the reference's own functions
        if getattr(reference, name, None) is not None:
            assert getattr(ops, name) is getattr(reference, name)


def test_backend_selection():
    fast_name = "numba" if ops.numba_available() else "torch"
    assert ops.active() in ("reference", "torch", "numba")
    for name, resolved in (("reference", "reference"), ("torch", "torch"), ("fast", fast_name)):
        with ops.backend(name) as got:
            assert got == resolved and ops.active() == resolved and ops.selected() == name
            with ops.backend("reference"):
                assert ops.active() == "reference"
            assert ops.active() == resolved
    with pytest.raises(UsageError, match="valid: fast, reference, torch, numba"), ops.backend("cuda"):
        pass


def test_capture_runs_the_reference(monkeypatch):
    # While torch.compile (or export) captures a graph, the ops run the reference maths.
    with ops.backend("torch"):
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        assert ops.active() == "reference"


def test_numba_backend_needs_numba(monkeypatch):
    backend_module = sys.modules["unrolled.ops.dispatch"]  # the module, beside the ops.backend function
    monkeypatch.setattr(backend_module, "numba_available", lambda: False)
    with pytest.raises(UsageError, match=r"backend 'numba' needs Numba; install it with pip install") as err:
        with ops.backend("numba"):
            pass
    assert "\n" not in str(err.value)
    with ops.backend("fast") as resolved:
        assert resolved == "torch" and ops.active() == "torch"


def test_backend_environment_variable(monkeypatch):
    monkeypatch.setenv("UNROLLED_BACKEND", "reference")
    assert ops.active() == "reference"
    with ops.backend("torch"):  # the context wins
        assert ops.active() == "torch"
    monkeypatch.setenv("UNROLLED_BACKEND", "nope")
    with pytest.raises(UsageError, match="unknown backend 'nope'"):
        ops.active()


# -- soft threshold: hand values ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ALL)
def test_soft_threshold_scalar(backend):
    z = t(-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.5)
    with ops.backend(backend):
        assert torch.equal(ops.soft_threshold(z, 1.0), t(-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5))
        assert torch.equal(ops.soft_threshold(z, t(1.0)), t(-2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.5))
        assert torch.equal(ops.soft_threshold(z, 0.0), z)
        assert torch.equal(ops.shrink(z, 1.0), ops.soft_threshold(z, 1.0))


@pytest.mark.parametrize("backend", ALL)
def test_soft_threshold_broadcasting(backend):
    z = torch.tensor([[3.0, -2.0, 0.5], [-1.0, 4.0, -6.0]], dtype=D)
    with ops.backend(backend):
        per_coord = ops.soft_threshold(z, t(1.0, 2.0, 3.0))
        assert torch.equal(per_coord, torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, -3.0]], dtype=D))
        per_sample = ops.soft_threshold(z, torch.tensor([[1.0], [5.0]], dtype=D))
        assert torch.equal(per_sample, torch.tensor([[2.0, -1.0, 0.0], [0.0, 0.0, -1.0]], dtype=D))
        per_entry = ops.soft_threshold(z, torch.tensor([[0.0, 2.0, 0.25], [0.5, 1.0, 6.0]], dtype=D))
        assert torch.equal(per_entry, torch.tensor([[3.0, 0.0, 0.25], [-0.5, 3.0, 0.0]], dtype=D))


@pytest.mark.parametrize("backend", ALL)
def test_soft_threshold_gradients(backend):
    z = t(-3.0, -0.5, 0.2, 2.0).requires_grad_()
    theta = t(1.0).requires_grad_()
    with ops.backend(backend):
        gz, gt = torch.autograd.grad(ops.soft_threshold(z, theta).sum(), (z, theta))
        assert torch.equal(gz, t(1.0, 0.0, 0.0, 1.0))
        assert float(gt) == 0.0  # -1 from +2.0, +1 from -3.0
        (gt,) = torch.autograd.grad((ops.soft_threshold(z, theta) * t(1.0, 1.0, 1.0, 5.0)).sum(), theta)
        assert float(gt) == 1.0 - 5.0


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("cut", [None, Cut(2, True), Cut(2, False)], ids=CUT_IDS)
def test_negative_threshold_shifts_every_entry(backend, cut):
    # eta_theta(z) = z - clamp(z, -theta, theta) = z - theta for theta < 0 (spec §5.1), zeros included:
    # d/dz = 1 and d/dtheta = -1 for every shrunk entry; a cut lets its entries (|z| = 3, 2) pass as z.
    z = t(-3.0, -0.5, 0.0, 0.2, 2.0)
    shifted = z + 0.5
    bypass = torch.zeros(5, dtype=torch.bool) if cut is None else torch.tensor([True, False, False, False, True])
    for theta in (-0.5, t(-0.5), torch.full((1, 1), -0.5, dtype=D), torch.full((1, 5), -0.5, dtype=D)):
        zz = z[None].clone().requires_grad_()
        th = theta.clone().requires_grad_() if isinstance(theta, Tensor) else theta
        with ops.backend(backend):
            out = ops.shrink(zz, th, cut)
            assert torch.equal(out.detach()[0], torch.where(bypass, z, shifted))
            if isinstance(th, Tensor):
                gz, gt = torch.autograd.grad(out.sum(), (zz, th))
                expected = -(~bypass).to(D).sum() if th.numel() == 1 else -(~bypass).to(D)[None]
                assert torch.equal(gt, expected.reshape(th.shape))
            else:
                (gz,) = torch.autograd.grad(out.sum(), zz)
            assert torch.equal(gz, torch.ones(1, 5, dtype=D))
            with torch.no_grad():
                assert torch.equal(ops.shrink(z[None], theta, cut)[0], torch.where(bypass, z, shifted))


@pytest.mark.parametrize("backend", ALL)
def test_kink_convention(backend):
    # At |z| = theta (spec §11.3) the reference's autograd splits min/max ties: d/dz = 1/2 and
    # d/dtheta = -sign(z)/2; the fast nodes use clamp's convention and give 0 for both.
    z = t(-1.0, 1.0, 2.0).requires_grad_()
    theta = t(1.0).requires_grad_()
    with ops.backend(backend):
        gz, gt = torch.autograd.grad(ops.soft_threshold(z, theta).sum(), (z, theta))
    half = 0.5 if backend == "reference" else 0.0
    assert torch.equal(gz, t(half, half, 1.0))
    assert float(gt) == half - half - 1.0


# -- support selection: schedules and hand vectors -------------------------------------------------------


def test_percentage_keep_hand_values():
    # n=500: index = round((1 - q/100) * 499); keep = 499 - index
    assert ops.percentage_keep(1, 500) == 6  # q=1.2: round(493.012) = 493
    assert ops.percentage_keep(10, 500) == 60  # q=12: round(439.12) = 439
    assert ops.percentage_keep(11, 500) == 65  # q=min(13.2, 13): round(434.13) = 434
    assert ops.percentage_keep(16, 500) == 65  # capped at p_max = 13 %
    assert ops.percentage_keep(1, 41) == 0  # q=1.2: round(39.52) = 40 = n-1: nothing above the maximum
    assert ops.percentage_keep(5, 41) == 2  # q=6: round(37.6) = 38
    assert ops.percentage_keep(3, 500, p=1.2, p_max=0.0) == 0  # the reference default p_max=0 disables it


@pytest.mark.parametrize("tt, n", [(1, 500), (4, 500), (11, 500), (5, 41), (9, 37), (13, 1000)])
def test_percentage_keep_matches_nearest_percentile(tt, n):
    a = np.random.default_rng(tt * n).permutation(n).astype(float)  # distinct values
    q = min(1.2 * tt, 13.0)
    cut = np.percentile(a, 100 - q, method="nearest")
    assert ops.percentage_keep(tt, n) == int((a > cut).sum())


def test_count_schedule_hand_values():
    assert ops.count_schedule(10, 4) == [3, 6, 9, 12]  # floor(12/4)=3 ... 12
    assert ops.count_schedule(5, 3) == [2, 4, 6]
    assert ops.count_schedule(50, 1) == [60]
    # s=50, K=16: linspace(3, 60, 16) = 3 + 3.8 k, truncated
    assert ops.count_schedule(50, 16) == [3, 6, 10, 14, 18, 22, 25, 29, 33, 37, 41, 44, 48, 52, 56, 60]
    # ramp: the linspace covers the first ceil(ramp K) layers, then 1.2 s
    assert ops.count_schedule(10, 4, ramp=0.75) == [3, 7, 12, 12]  # R=3: 3 + 9 k / 2
    assert ops.count_schedule(10, 4, ramp=0.5) == [3, 12, 12, 12]  # R=2
    assert ops.count_schedule(10, 4, ramp=0.1) == [12] * 4  # R=1
    assert ops.count_schedule(10, 4, ramp=1.0) == ops.count_schedule(10, 4)


def test_selection_modes_and_defaults():
    assert Selection() == Selection("none") and Selection().cuts(5, N, 4.0) == [None] * 5
    pct = Selection("percentage")
    assert (pct.p, pct.p_max, pct.theta, pct.ramp) == (1.2, 13.0, None, 1.0)
    assert pct.above_theta  # the percentage form requires |z| > theta by default ...
    assert not Selection("count").above_theta  # ... the count form does not
    assert not Selection("percentage", theta=False).above_theta and Selection("count", theta=True).above_theta
    # n = 41: keep = 40 - round((1 - 1.2 t / 100) 40) = 0, 1, 1, 2, 2, 3 for t = 1..6
    assert pct.cuts(6, 41, 4.0) == [None, Cut(1, True), Cut(1, True), Cut(2, True), Cut(2, True), Cut(3, True)]
    assert pct.keeps(6, 41, 4.0) == [ops.percentage_keep(tt, 41) for tt in range(1, 7)]
    # count form: keep = p_k - 1 with p_k = count_schedule(s, K, ramp)
    assert Selection("count").cuts(4, 41, 10.0) == [Cut(2, False), Cut(5, False), Cut(8, False), Cut(11, False)]
    assert Selection("count", ramp=0.5).keeps(4, 41, 10.0) == [2, 11, 11, 11]
    assert Selection("count", theta=True).cuts(1, 41, 10.0) == [Cut(11, True)]
    assert Selection("count").cuts(3, 41, 0.5) == [None, None, None]  # p_k <= 1: nothing passes
    assert pct.replace(p_max=0.0).cuts(3, 500, 50.0) == [None] * 3
    with pytest.raises(AttributeError):
        pct.mode = "count"  # frozen: configs are values
    with pytest.raises(AttributeError):
        Cut(1, True).keep = 2


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "top"}, "unknown support selection 'top'; valid: none, percentage, count"),
    ({"mode": "count", "p": -1.0}, "ss.p=-1.0 and ss.p_max=13.0 must be >= 0"),
    ({"mode": "percentage", "p_max": -0.5}, "must be >= 0"),
    ({"mode": "count", "ramp": 0.0}, r"ss.ramp=0.0 must be in \(0, 1\]"),
    ({"mode": "count", "ramp": 1.5}, r"ss.ramp=1.5 must be in \(0, 1\]"),
])
def test_selection_validation_is_one_line(kwargs, message):
    with pytest.raises(UsageError, match=message) as err:
        Selection(**kwargs)
    assert "\n" not in str(err.value)


Z = t(0.5, -3.0, 2.0, 0.1, -1.0, 4.0)  # |z| descending: 4 (i5), 3 (i1), 2 (i2), 1 (i4), 0.5 (i0), 0.1 (i3)


def test_support_mask_hand_vectors():
    def mask(theta, keep, above):
        return ops.support_mask(Z, theta, Cut(keep, above)).tolist()

    assert mask(0.0, 2, False) == [False, True, False, False, False, True]
    assert mask(0.0, 3, False) == [False, True, True, False, False, True]
    assert mask(0.0, 0, False) == [False] * 6
    assert mask(0.0, 6, False) == [True] * 6  # keep >= n: every entry (still subject to theta)
    assert mask(0.3, 6, True) == [True, True, True, False, True, True]
    assert mask(3.5, 2, True) == [False, False, False, False, False, True]
    assert mask(3.5, 2, False) == [False, True, False, False, False, True]
    assert mask(t(9.0, 9.0, 9.0, 9.0, 9.0, 0.0), 2, True) == [False, False, False, False, False, True]  # per coord
    # ties at the cut: 'strictly above' the (keep+1)-th largest lets fewer entries through
    assert ops.support_mask(t(2.0, -2.0, 1.0), 0.0, Cut(1, False)).tolist() == [False, False, False]
    assert ops.support_mask(Z[None].repeat(3, 1), 0.0, Cut(2, False)).shape == (3, 6)


@pytest.mark.parametrize("backend", ALL)
def test_percentage_form_hand_vectors(backend):
    # keep=2 entries (|z| = 4, 3) bypass if also |z| > theta; the rest is soft-thresholded.
    with ops.backend(backend):
        for z in (Z, Z[None]):
            assert torch.equal(ops.shrink(z, 1.5, Cut(2, True)), t(0.0, -3.0, 0.5, 0.0, 0.0, 4.0).reshape(z.shape))
            assert torch.equal(ops.shrink(z, 3.5, Cut(2, True)), t(0.0, 0.0, 0.0, 0.0, 0.0, 4.0).reshape(z.shape))
            assert torch.equal(ops.shrink(z, 1.5, Cut(3, True)), t(0.0, -3.0, 2.0, 0.0, 0.0, 4.0).reshape(z.shape))
            assert torch.equal(ops.shrink(z, 1.5, Cut(0, True)), ops.soft_threshold(z, 1.5))
            assert torch.equal(ops.shrink(z, 1.5, Cut(6, True)), t(0.0, -3.0, 2.0, 0.0, 0.0, 4.0).reshape(z.shape))


@pytest.mark.parametrize("backend", ALL)
def test_count_form_hand_vectors(backend):
    # Count form (NA-ALISTA): entries strictly larger than the p_k-th largest, no theta test.
    # p_k = 3: the 3rd largest |z| is 2, so |z| = 4, 3 bypass; Selection.cuts passes keep = p_k - 1.
    with ops.backend(backend):
        for z in (Z, Z[None]):
            expect = t(0.0, -3.0, 0.0, 0.0, 0.0, 4.0).reshape(z.shape)
            assert torch.equal(ops.shrink(z, 3.5, Cut(3 - 1, False)), expect)
            assert torch.equal(ops.shrink(z, 1.5, Cut(3, False)), t(0.0, -3.0, 2.0, 0.0, 0.0, 4.0).reshape(z.shape))
            assert torch.equal(ops.shrink(z, 9.0, Cut(6, False)), z)  # keep >= n, no theta test: the identity


@pytest.mark.parametrize("backend", ALL)
def test_support_selection_per_sample_and_with_tensor_theta(backend):
    z = torch.stack([Z, -Z.flip(0)])
    theta = torch.tensor([[1.5], [3.5]], dtype=D)
    with ops.backend(backend):
        out = ops.shrink(z, theta, Cut(2, True))
    assert torch.equal(out[0], t(0.0, -3.0, 0.5, 0.0, 0.0, 4.0))
    assert torch.equal(out[1], -t(0.0, 0.0, 0.0, 0.0, 0.0, 4.0).flip(0))


@pytest.mark.parametrize("backend", ALL)
def test_support_mask_carries_no_gradient(backend):
    z = Z.clone()[None].requires_grad_()
    theta = t(1.5).requires_grad_()
    with ops.backend(backend):
        gz, gt = torch.autograd.grad(ops.shrink(z, theta, Cut(2, True)).sum(), (z, theta))
        # bypassed (i1, i5): 1; thresholded: 1 where |z| > theta (i2) else 0
        assert torch.equal(gz[0], t(0.0, 1.0, 1.0, 0.0, 0.0, 1.0))
        assert float(gt) == -1.0  # only from the thresholded +2.0; bypassed entries give none
        theta_c = torch.full((6,), 1.5, dtype=D, requires_grad=True)
        (gc,) = torch.autograd.grad(ops.shrink(Z[None], theta_c, Cut(2, False)).sum(), theta_c)
        assert torch.equal(gc, t(0.0, 0.0, -1.0, 0.0, 0.0, 0.0))
    assert not ops.support_mask(z, theta, Cut(2, False)).requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kth_largest_matches_topk(dtype):
    # The CPU path (np.partition) must give exactly the value torch.topk gives, ties included.
    a = torch.randn(37, 41, generator=gen(5), dtype=dtype).abs()
    a[0, :5] = a[0, 5]  # ties
    for k in (1, 2, 6, 20, 41):
        expected = a.topk(k, dim=-1).values[:, -1:]
        assert torch.equal(kth_largest(a, k), expected)
        scratch = a.clone()
        assert torch.equal(kth_largest(scratch, k, overwrite=True), expected)  # reorders scratch's rows
        assert torch.equal(scratch.sort(-1).values, a.sort(-1).values)


def test_kth_largest_row_parallel_matches_topk():
    # Large batches are split by rows over the intra-op threads: the same values as topk.
    threads = torch.get_num_threads()
    a = torch.randn(4099, 37, generator=gen(9)).abs()
    try:
        torch.set_num_threads(3)
        got = kth_largest(a, 7)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(got, a.topk(7, dim=-1).values[:, -1:])


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_selection_cut_is_the_order_statistic(backend, dtype):
    # The level is max((keep+1)-th largest |z|, theta) in every row, ties and theta < 0 included,
    # whichever short cut the backend takes (spec §11.3: selection values are exact).
    a = torch.randn(37, 41, generator=gen(11), dtype=dtype).abs()
    a[0, :6] = 0.7  # ties at the threshold
    a[1] = 0.0
    thetas = (0.7, torch.tensor(0.7, dtype=dtype), 0.2 + 2 * torch.rand(37, 1, generator=gen(12), dtype=dtype),
              torch.tensor(-0.1, dtype=dtype), 1.5 * torch.ones(37, 1, dtype=dtype))
    with ops.backend(backend):
        for theta in thetas:
            for keep in (0, 1, 5, 6, 12, 40):
                level = a.topk(keep + 1, dim=-1).values[:, -1:]
                expected = torch.maximum(level, torch.as_tensor(theta, dtype=dtype))
                assert torch.equal(selection_cut(a, keep, theta), expected)
                assert torch.equal(selection_cut(a.clone(), keep, theta, overwrite=True), expected)
                assert torch.equal(selection_cut(a, keep), level)
            every = torch.maximum(torch.full((37, 1), -1.0, dtype=dtype), torch.as_tensor(theta, dtype=dtype))
            assert torch.equal(selection_cut(a, 41, theta), every)  # keep >= n: every entry above theta


# -- closed forms ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ALL)
def test_gradient_and_pgd_step_match_matrix_form(backend):
    g = gen(0)
    A = torch.randn(M, N, generator=g, dtype=D)
    W = torch.randn(M, N, generator=g, dtype=D)
    x, y = torch.randn(B, N, generator=g, dtype=D), torch.randn(B, M, generator=g, dtype=D)
    expect = (x.T + 0.3 * W.T @ (y.T - A @ x.T)).T
    with ops.backend(backend):
        close(ops.gradient_step(x, y, A, W, 0.3), expect, 1e-12)
        close(ops.pgd_step(x, y, A, W, 0.3, 0.7), reference.soft_threshold(expect, 0.7), 1e-12)
        base = torch.randn(B, N, generator=g, dtype=D)
        close(ops.gradient_step(x, y, A, W, 0.3, base), expect - x + base, 1e-12)
        close(ops.pgd_step(x, y, A, W, 0.3, 0.7, eps=0.1), reference.soft_threshold(expect, 0.7 / (x.abs() / 0.1 + 1)),
              1e-12)
        d = torch.randn(B, N, generator=g, dtype=D)
        close(ops.step_shrink(x, t(0.3), d, t(0.7)), reference.soft_threshold(x + 0.3 * d, 0.7), 1e-12)


def test_aglista_gates_match_their_formulas():
    g = gen(8)
    x, x_new = torch.randn(6, 13, generator=g, dtype=D), torch.randn(6, 13, generator=g, dtype=D)
    c, v, a = t(0.3), t(1.7), t(0.05)
    for impl in (reference, fast_steps):
        close(impl.gain_gate(x, c, v), x + c * x * torch.exp(-v * x.abs()), 1e-14)
        # o x_new + (1 - o) x = x_new + a (x_new - x) / (|x_new - x| + eps)
        close(impl.overshoot(x_new, x, a), x_new + a * (x_new - x) / ((x_new - x).abs() + 0.01), 1e-12)
        close(impl.adaptive_threshold(x, c, 0.1), c * 0.1 / (x.abs() + 0.1), 1e-14)


def test_lstm_cell_is_nn_lstm_cell():
    cell = torch.nn.LSTMCell(2, 15, dtype=D)
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn(p.shape, generator=gen(3), dtype=D))
    inp, h, c = (torch.randn(B, k, generator=gen(4 + k), dtype=D) for k in (2, 15, 15))
    want_h, want_c = cell(inp, (h, c))
    for backend in ("reference", *(["torch", "numba"] if ops.numba_available() else ["torch"])):
        with ops.backend(backend):
            got_h, got_c = ops.lstm_cell(inp, h, c, ops.lstm_weights(cell.weight_ih, cell.weight_hh, cell.bias_ih,
                                                                     cell.bias_hh))
        close(got_h, want_h, 1e-12 if backend == "reference" else RTOL)
        close(got_c, want_c, 1e-12 if backend == "reference" else RTOL)


def test_softsign_head_and_residual_features_closed_forms():
    c, U = torch.randn(B, 9, generator=gen(7), dtype=D), torch.randn(2, 9, generator=gen(8), dtype=D)
    gamma, theta = reference.softsign_head(c, U)
    u = c @ U.T
    close(gamma, u[:, 1:] / (u[:, 1:].abs() + 1), 1e-14)
    close(theta, u[:, :1] / (u[:, :1].abs() + 1), 1e-14)
    x, y = signal(9)
    A, W = operators(10, fixed=True)
    scale = t(2.0, 0.5)
    d, feats = reference.residual_features(x, y, A, W, "both", scale)
    r = y - x @ A.T
    close(d, r @ W, 1e-14)
    close(feats, torch.stack([r.abs().sum(1) / 2.0, (r @ W).abs().sum(1) / 0.5], 1), 1e-14)
    for inputs, column in (("r", 0), ("u", 1)):
        _, one = reference.residual_features(x, y, A, W, inputs, scale[column:column + 1])
        close(one, feats[:, column:column + 1], 1e-14)


def test_fista_momentum():
    t1, b1 = ops.fista_momentum(1.0)
    assert t1 == pytest.approx((1 + 5 ** 0.5) / 2, rel=1e-15) and b1 == 0.0
    t2, b2 = ops.fista_momentum(t1)
    assert t2 == pytest.approx((1 + (1 + 4 * t1 * t1) ** 0.5) / 2, rel=1e-15)
    assert b2 == pytest.approx((t1 - 1) / t2, rel=1e-15)


def test_lipschitz_is_the_largest_eigenvalue():
    A = torch.randn(M, N, generator=gen(13), dtype=D)
    assert ops.lipschitz(A) == pytest.approx(float(torch.linalg.eigvalsh(A.T @ A).max()), rel=1e-12)
    assert ops.lipschitz(A.float()) == pytest.approx(ops.lipschitz(A), rel=1e-6)  # computed in float64
    assert ops.lipschitz(3.0 * torch.eye(5, dtype=D)) == pytest.approx(9.0, rel=1e-15)


def test_lasso_objective_and_kkt_hand_values():
    A = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=D)
    y = t(3.0, 2.0)[None]
    x = t(1.0, 0.0)[None]
    # r = (2, 2): F = 4 + lam * 1
    assert float(ops.lasso_objective(x, y, A, 0.5)) == 4.5
    # g = A^T (Ax - y) = (-2, -4): on-support |g1 + lam| = 1.5, off-support |g2| - lam = 3.5
    assert float(ops.kkt_residual(x, y, A, 0.5)) == 3.5
    # the solution: x1 = 3 - lam, x2 = (2*2 - lam)/4 for lam < 4
    lam = 0.5
    xs = t(3.0 - lam, (4.0 - lam) / 4.0)[None]
    assert float(ops.kkt_residual(xs, y, A, lam)) < 1e-15
    assert float(ops.kkt_residual(torch.zeros(1, 2, dtype=D), y, A, 10.0)) == 0.0  # lam >= ||A^T y||_inf


def test_bg_denoise_is_the_posterior_mean():
    # x ~ (1 - eps) delta_0 + eps N(0, var), r = x + N(0, tau2): E[x | r] by Bayes' rule with the two
    # Gaussian marginals N(0, tau2) and N(0, var + tau2), and d/dr of it by autograd.
    r = torch.randn(B, N, generator=gen(14), dtype=D).mul_(1.5).requires_grad_()
    tau2 = 0.2 + torch.rand(B, 1, generator=gen(15), dtype=D)
    eps, var = 0.1, 1.3

    def density(v, s2):
        return torch.exp(-v * v / (2 * s2)) / torch.sqrt(2 * math.pi * s2)

    x, dx = ops.bg_denoise(r, tau2, eps, var)
    on, off = eps * density(r, var + tau2), (1 - eps) * density(r, tau2)
    expect = on / (on + off) * (var / (var + tau2)) * r
    close(x, expect, 1e-12)
    (grad,) = torch.autograd.grad(x.sum(), r)  # entries are independent: the diagonal of d x / d r
    close(dx, grad.mean(-1, keepdim=True), 1e-12)
    x_t, dx_t = ops.bg_denoise(r, tau2, t(eps), t(var))  # tensor parameters, the same values
    close(x_t, x, 1e-14)
    close(dx_t, dx, 1e-14)


def test_soft_denoise_and_amp_step():
    r = torch.randn(B, N, generator=gen(16), dtype=D)
    tau2 = 0.2 + torch.rand(B, 1, generator=gen(17), dtype=D)
    out, dx = ops.soft_denoise(r, tau2, 1.4)
    theta = 1.4 * tau2.sqrt()
    assert torch.equal(out, reference.soft_threshold(r, theta))
    assert torch.equal(dx, (r.abs() > theta).to(D).mean(-1, keepdim=True))
    # one AMP iteration by hand (Donoho, Maleki & Montanari 2009): B = A, gain 1
    A, _ = operators(18, fixed=True)
    x, y = (v.detach() for v in signal(19))
    v_prev = torch.randn(B, M, generator=gen(20), dtype=D)
    onsager = 0.3 + torch.rand(B, 1, generator=gen(21), dtype=D)
    x1, v1, b1 = ops.amp_step(x, v_prev, onsager, y, A, A, lambda r, s2: ops.soft_denoise(r, s2, 1.4))
    v = y - x @ A.T + onsager * v_prev
    tau2 = (v * v).sum(-1, keepdim=True) / M
    u = x + v @ A
    close(v1, v, 1e-14)
    close(x1, reference.soft_threshold(u, 1.4 * tau2.sqrt()), 1e-12)
    close(b1, (N / M) * (u.abs() > 1.4 * tau2.sqrt()).to(D).mean(-1, keepdim=True), 1e-14)
    _, _, b_gain = ops.amp_step(x, v_prev, onsager, y, A, A, lambda r, s2: (r, s2), gain=2.0)  # denoise' = tau2
    close(b_gain, (N / M) * (2.0 * tau2).mean(-1, keepdim=True), 1e-12)


# -- gradcheck of the reference ops (float64, central differences; eps 1e-6, atol 1e-5, rtol 1e-3) ----------


def small(seed, *shapes):
    g = gen(seed)
    return [torch.randn(s, generator=g, dtype=D).requires_grad_() for s in shapes]


@pytest.mark.parametrize("theta_shape", [(), (5, 1), (11,), (5, 11)])
@pytest.mark.parametrize("cut", CUTS, ids=CUT_IDS)
def test_reference_shrink_gradcheck(theta_shape, cut):
    (z,) = small(3, (5, 11))
    theta = (0.3 + 0.4 * torch.rand(theta_shape, generator=gen(4), dtype=D)).requires_grad_()
    assert torch.autograd.gradcheck(lambda z, th: reference.shrink(z, th, cut), (z, theta))


def test_reference_steps_gradcheck():
    x, y, A, W, base, d = small(5, (5, 11), (5, 7), (7, 11), (7, 11), (5, 11), (5, 11))
    gamma, theta = (0.2 + torch.rand((5, 1), generator=gen(6), dtype=D)).requires_grad_(), t(0.4).requires_grad_()
    ref = reference
    assert torch.autograd.gradcheck(lambda *a: ref.gradient_step(*a[:5], a[5]), (x, y, A, W, gamma, base))
    assert torch.autograd.gradcheck(lambda *a: ref.pgd_step(*a, Cut(3, True)), (x, y, A, W, gamma, theta))
    assert torch.autograd.gradcheck(lambda *a: ref.pgd_step(*a, Cut(3, False), eps=0.1), (x, y, A, W, gamma, theta))
    assert torch.autograd.gradcheck(lambda *a: ref.step_shrink(*a, Cut(3, False)), (x, gamma, d, theta))
    c, v, a = (s.clone().requires_grad_() for s in (t(0.3), t(1.7), t(0.05)))
    assert torch.autograd.gradcheck(lambda *p: ref.gated_step(*p, Cut(3, True)), (x, y, A, W, c, v, gamma, theta, a))
    assert torch.autograd.gradcheck(ref.gain_gate, (x, c, v))
    assert torch.autograd.gradcheck(ref.overshoot, (d, x, a))
    assert torch.autograd.gradcheck(lambda x, th: ref.adaptive_threshold(x, th, 0.1), (x, theta))


def test_reference_network_pieces_gradcheck():
    inp, h, c, w_ih, w_hh, b_ih, b_hh = small(7, (5, 2), (5, 3), (5, 3), (12, 2), (12, 3), (12,), (12,))
    assert torch.autograd.gradcheck(lambda i, h, c, *w: reference.lstm_cell(i, h, c, reference.lstm_weights(*w)),
                                    (inp, h, c, w_ih, w_hh, b_ih, b_hh))
    x, y, A, W, feats, U = small(8, (5, 11), (5, 7), (7, 11), (7, 11), (5, 4), (2, 4))
    scale = t(2.0, 0.5)
    for inputs, s in (("both", scale), ("r", scale[:1]), ("u", scale[1:])):
        assert torch.autograd.gradcheck(lambda *a, i=inputs, s=s: reference.residual_features(*a, i, s), (x, y, A, W))
    assert torch.autograd.gradcheck(reference.softsign_head, (feats, U))
    r, tau2 = small(9, (5, 11), (5, 1))
    tau2 = (0.5 + tau2.detach().abs()).requires_grad_()
    assert torch.autograd.gradcheck(lambda r, s2: reference.bg_denoise(r, s2, 0.1, 1.3), (r, tau2))
    assert torch.autograd.gradcheck(lambda r, s2: reference.soft_denoise(r, s2, 1.4)[0], (r, tau2))


# -- every backend against the reference ----------------------------------------------------------------

THETAS = ["float", "scalar", "sample", "coord", "entry"]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("cut", [*CUTS, Cut(N, False), Cut(N + 3, True)],
                         ids=[*CUT_IDS, "count-all", "percentage-all"])
@pytest.mark.parametrize("negative", [False, True], ids=["positive", "negative"])
@pytest.mark.parametrize("kind", THETAS)
@covers("shrink", "soft_threshold")
def test_backend_shrink_and_soft_threshold(backend, kind, negative, cut):
    z = torch.randn(B, N, generator=gen(1), dtype=D).requires_grad_()
    theta = threshold(kind, 2, negative)
    check(lambda z, th: ops.shrink(z, th, cut), (z, theta), backend, "z theta")
    if cut is None:
        check(ops.soft_threshold, (z, theta), backend, "z theta")
    check(lambda z, th: ops.shrink(z, th, cut), (z.detach(), theta), backend, "z theta")  # theta's gradient alone


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("with_base", [False, True], ids=["x", "base"])
@pytest.mark.parametrize("fixed", [False, True], ids=["learned", "fixed"])
@pytest.mark.parametrize("kind", THETAS)
@covers("gradient_step")
def test_backend_gradient_step(backend, kind, fixed, with_base):
    x, y = signal(3)
    A, W = operators(4, fixed)
    base = torch.randn(B, N, generator=gen(5), dtype=D).requires_grad_() if with_base else None
    check(ops.gradient_step, (x, y, A, W, step_size(kind, 6), base), backend, "x y A W gamma base")


PGD = [("float", "float"), ("scalar", "scalar"), ("sample", "sample"), ("scalar", "entry"), ("coord", "coord"),
       ("entry", "sample"), ("sample", "scalar"), ("float", "sample"), ("scalar", "float")]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("eps", [None, 0.1], ids=["alista", "alista-at"])
@pytest.mark.parametrize("cut", CUTS, ids=CUT_IDS)
@pytest.mark.parametrize("fixed", [False, True], ids=["learned", "fixed"])
@pytest.mark.parametrize("negative", [False, True], ids=["positive", "negative"])
@pytest.mark.parametrize("kinds", PGD, ids=["-".join(k) for k in PGD])
@covers("pgd_step")
def test_backend_pgd_step(backend, kinds, negative, fixed, cut, eps):
    x, y = signal(7, sparse=True)  # the adaptive threshold's |x| has its kink at 0
    A, W = operators(8, fixed)
    gamma, theta = step_size(kinds[0], 9), threshold(kinds[1], 10, negative)
    check(lambda *a: ops.pgd_step(*a, cut, eps), (x, y, A, W, gamma, theta), backend, "x y A W gamma theta")


@pytest.mark.parametrize("backend", FAST)
def test_pgd_step_adaptive_float_threshold_in_training(backend):
    # pgd_step takes theta: Tensor | float; ALISTA-AT's threshold theta / (|x| / eps + 1) from a float
    # theta must train as the reference does (e.g. proximal_gradient(..., eps=0.1) with y requiring grad).
    x, y = signal(7)
    A, W = operators(8, fixed=True)
    check(lambda *a: ops.pgd_step(*a, 0.35, 0.45, None, 0.1), (x, y, A, W), backend, "x y A W")


STEP = [("scalar", "scalar"), ("sample", "sample"), ("sample", "entry"), ("scalar", "coord"), ("entry", "scalar"),
        ("coord", "sample")]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("cut", CUTS, ids=CUT_IDS)
@pytest.mark.parametrize("negative", [False, True], ids=["positive", "negative"])
@pytest.mark.parametrize("kinds", STEP, ids=["-".join(k) for k in STEP])
@covers("step_shrink")
def test_backend_step_shrink(backend, kinds, negative, cut):
    x, _ = signal(11)
    d = torch.randn(B, N, generator=gen(12), dtype=D).requires_grad_()
    gamma, theta = step_size(kinds[0], 13), threshold(kinds[1], 14, negative)
    check(lambda *a: ops.step_shrink(*a, cut), (x, gamma, d, theta), backend, "x gamma d theta")


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("cut", CUTS, ids=CUT_IDS)
@pytest.mark.parametrize("fixed", [False, True], ids=["learned", "fixed"])
@pytest.mark.parametrize("negative", [False, True], ids=["positive", "negative"])
@pytest.mark.parametrize("kind", ["scalar", "sample"])
@pytest.mark.parametrize("eps", [0.01, 0.2])
@covers("gated_step")
def test_backend_gated_step(backend, kind, negative, fixed, cut, eps):
    x, y = signal(15, sparse=True)  # AGLISTA's iterates are sparse: the gate's |x| at its kink
    x.detach()[2, :5] = 0.2  # and some entries where shrink(z) - x may come out near 0
    A, W = operators(16, fixed)
    c, v, a = (torch.tensor(s, dtype=D, requires_grad=True) for s in (0.3, 1.7, 0.05))
    gamma, theta = step_size(kind, 17), threshold(kind, 18, negative)
    check(lambda *p: ops.gated_step(*p, cut, eps), (x, y, A, W, c, v, gamma, theta, a), backend,
          "x y A W c v gamma theta a")


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("width", [1, 2, 3])
@covers("lstm_cell", "lstm_weights")
def test_backend_lstm_cell_and_weights(backend, width):
    H = 15
    g = gen(19)
    inp, h, c = (torch.randn(B, k, generator=g, dtype=D).requires_grad_() for k in (width, H, H))
    w_ih, w_hh = (0.5 * torch.randn(4 * H, k, generator=g, dtype=D) for k in (width, H))
    b_ih, b_hh = (torch.randn(4 * H, generator=g, dtype=D) for _ in range(2))
    weights = [w.requires_grad_() for w in (w_ih, w_hh, b_ih, b_hh)]
    check(lambda i, h, c, *w: ops.lstm_cell(i, h, c, ops.lstm_weights(*w)), (inp, h, c, *weights), backend,
          "inp h c w_ih w_hh b_ih b_hh")


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("inputs", ["both", "r", "u"])
@covers("residual_features")
def test_backend_residual_features(backend, inputs):
    x, y = signal(20)
    A, W = operators(21, fixed=True)  # NA-ALISTA's fixed (analytic) operators
    scale = t(2.0, 0.5) if inputs == "both" else t(0.7)
    check(lambda *a: ops.residual_features(*a, inputs, scale), (x, y, A, W), backend, "x y A W")


@pytest.mark.parametrize("backend", FAST)
def test_residual_features_with_learned_operators(backend):
    # The reference differentiates A and W too; a fast path must not drop their gradients silently
    # (NA-ALISTA keeps them as buffers, but ops.residual_features is public).
    x, y = signal(20)
    A, W = operators(21, fixed=False)
    check(lambda *a: ops.residual_features(*a, "both", t(2.0, 0.5)), (x, y, A, W), backend, "x y A W")


@pytest.mark.parametrize("backend", FAST)
@covers("softsign_head")
def test_backend_softsign_head(backend):
    c, U = (torch.randn(s, generator=gen(22 + i), dtype=D).requires_grad_() for i, s in enumerate([(B, 9), (2, 9)]))
    check(ops.softsign_head, (c, U), backend, "c U")


@pytest.mark.parametrize("backend", FAST)
def test_backend_gates_and_adaptive_threshold(backend):
    # The pieces of AGLISTA's and ALISTA-AT's layers, fast against reference, at x = 0 too.
    x, y = signal(23, sparse=True)
    c, v, a = (torch.tensor(s, dtype=D, requires_grad=True) for s in (0.3, 1.7, 0.05))
    theta = threshold("sample", 24)
    x_new = torch.randn(B, N, generator=gen(25), dtype=D).requires_grad_()
    for fast_fn, ref_fn, inputs in ((fast_steps.gain_gate, reference.gain_gate, (x, c, v)),
                                    (fast_steps.overshoot, reference.overshoot, (x_new, x, a)),
                                    (lambda x, th: fast.adaptive_threshold(x, th, 0.1),
                                     lambda x, th: reference.adaptive_threshold(x, th, 0.1), (x, theta))):
        want, want_inf, want_grads = run(ref_fn, inputs, "reference")
        got, got_inf, got_grads = run(fast_fn, inputs, backend)
        for u, w in zip([*got, *got_inf, *got_grads], [*want, *want_inf, *want_grads]):
            close(u, w)


# -- capture --------------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning")
def test_tracing_takes_the_reference_graph():
    # Tracing under the default (fast) backend records the reference maths: the fast nodes read
    # gamma and theta as numbers, which a trace would freeze. The traced function follows new
    # values of its inputs, as the eager one does.
    g = gen(25)
    A, W = operators(26, fixed=True)
    U = torch.randn(2, 2, generator=g, dtype=D)

    def layers(x, y, gamma, theta):
        x = ops.pgd_step(x, y, A, W, gamma, theta, Cut(5, True))
        d, feats = ops.residual_features(x, y, A, W, "both", t(1.0, 2.0))
        gamma_t, theta_t = ops.softsign_head(feats, U)
        return ops.step_shrink(x, gamma_t, d, theta_t.abs(), Cut(5, False))

    def inputs(seed):
        x, y = (v.detach() for v in signal(seed))
        return x, y, torch.tensor(0.2 + 0.1 * seed, dtype=D), torch.tensor(0.05 * seed, dtype=D)

    traced = torch.jit.trace(layers, inputs(1), check_trace=False)
    with ops.backend("reference"):
        traced_ref = torch.jit.trace(layers, inputs(1), check_trace=False)
    assert "PythonOp" not in str(traced.graph)  # no custom autograd node was recorded
    assert str(traced.graph) == str(traced_ref.graph)
    for seed in (2, 3):
        new = inputs(seed)
        with ops.backend("reference"):
            want = layers(*new)
        close(traced(*new), want, 1e-12)
        close(layers(*new), want)  # the eager default backend



@pytest.mark.parametrize("backend", FAST)
def test_fast_inference_gives_the_training_bits_in_float32(backend):
    # The fast nodes run the same forward operations with and without autograd (inference only
    # reuses buffers): the same bits, in float32 too (float64 agreement is checked above).
    g = gen(27)
    A, W = (torch.randn(25, 51, generator=g) for _ in range(2))
    x, y = torch.randn(9, 51, generator=g), torch.randn(9, 25, generator=g)
    c, v, a = torch.tensor(0.3), torch.tensor(1.7), torch.tensor(0.05)
    with ops.backend(backend):
        for gamma, theta in ((torch.tensor(0.7), torch.tensor(0.2)), (torch.rand(9, 1, generator=g),
                                                                      torch.rand(9, 1, generator=g))):
            for cut in CUTS:
                for eps in (None, 0.1):
                    with torch.no_grad():
                        want = ops.pgd_step(x, y, A, W, gamma, theta, cut, eps)
                    got = ops.pgd_step(x, y, A, W, gamma.clone().requires_grad_(), theta.clone().requires_grad_(),
                                       cut, eps)
                    assert torch.equal(got, want)
        with torch.no_grad():
            gain, over, adaptive = (fast_steps.gain_gate(x, c, v), fast_steps.overshoot(y @ W, x, a),
                                    fast.adaptive_threshold(x, c, 0.1))
        assert torch.equal(gain, fast_steps.gain_gate(x, c.clone().requires_grad_(), v))
        assert torch.equal(over, fast_steps.overshoot(y @ W, x, a.clone().requires_grad_()))
        assert torch.equal(adaptive, fast.adaptive_threshold(x, c.clone().requires_grad_(), 0.1))
