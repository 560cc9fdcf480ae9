"""Learned models at initialisation equal their classical algorithms (STYLE rule 1).

float64 throughout, odd sizes 31 x 37; iterates are O(1), so ``ATOL = 1e-12`` (absolute,
about 10^4 float64 epsilons) bounds rounding differences from reordered arithmetic while
any modelling difference (a wrong step, threshold or momentum index) shows at 1e-3 or more.
"""

from __future__ import annotations

import pytest
import torch

from unrolled import ops, solvers
from unrolled.models import MODELS, build
from unrolled.models.design_space import dense_gates, extra_connections, lfista_gates, lista_gates
from unrolled.problem import Problem, ProblemSpec

K = 6
LAM = 0.1  # small enough that every layer keeps many non-zeros (a stronger test than lam = 0.4)
ATOL = 1e-12
F64 = torch.float64


@pytest.fixture(scope="module")
def problem() -> Problem:
    return Problem(ProblemSpec(m=31, n=37, p=0.1, snr=40.0, seed=7))


@pytest.fixture(scope="module")
def y(problem):
    return problem.sample(9, torch.Generator().manual_seed(2), F64)[1]


def assert_iterates(model, y, reference) -> None:
    outs = model(y, all_layers=True)
    ref = list(reference)
    assert len(outs) == len(ref)
    for t, (a, b) in enumerate(zip(outs, ref)):
        err = float((a - b).detach().abs().max())
        assert err <= ATOL, f"layer {t}: max |difference| {err:.3g} > {ATOL}"
    assert float(ref[-1].detach().abs().sum()) > 0, "degenerate test: the reference iterate is zero"


def ista(problem, y, L):
    return solvers.ista(problem.A, y, LAM, K, L=L)


@pytest.mark.parametrize("tied", [False, True])
def test_lista_at_init_is_ista_with_scale(tied, problem, y):
    model = build("lista", problem, {"K": K, "lam": LAM, "tied": tied}, F64)
    assert model.scale == pytest.approx(1.001 * problem.L)
    assert_iterates(model, y, ista(problem, y, model.scale))


def test_alista_with_scaled_A_is_ista(problem, y):
    model = build("alista", problem, {"K": K, "lam": LAM, "ss": "none", "gamma0": 1.0}, F64)
    model.W.copy_(problem.A / model.scale)
    assert_iterates(model, y, ista(problem, y, model.scale))


@pytest.mark.parametrize("tied", [False, True])
def test_lista_cp_at_init_is_ista_with_scale(tied, problem, y):
    model = build("lista-cp", problem, {"K": K, "lam": LAM, "tied": tied}, F64)
    assert_iterates(model, y, ista(problem, y, model.scale))


def test_tilista_at_init_is_ista_with_scale(problem, y):
    model = build("tilista", problem, {"K": K, "lam": LAM, "ss": "none"}, F64)
    assert_iterates(model, y, ista(problem, y, model.scale))


def test_lista_cpss_and_tilista_agree_at_init(problem, y):
    """Both are the ISTA step with percentage support selection before training."""
    cfg = {"K": K, "lam": LAM, "ss.p": 5.0, "ss.p_max": 20.0}
    a = build("lista-cpss", problem, cfg, F64)
    b = build("tilista", problem, cfg, F64)
    assert a.config.ss.mode == b.config.ss.mode == "percentage" and any(a.cuts)
    assert_iterates(a, y, b(y, all_layers=True))


def test_slista_with_steps_one_over_L_is_ista(problem, y):
    model = build("slista", problem, {"K": K, "lam": LAM}, F64)
    assert all(float(p.s.detach()) == 1 / problem.L for p in model.layers)
    assert_iterates(model, y, ista(problem, y, None))


def test_lfista_at_init_is_fista(problem, y):
    model = build("lfista", problem, {"K": K, "lam": LAM}, F64)
    assert_iterates(model, y, solvers.fista(problem.A, y, LAM, K))


def test_lfista_differs_from_ista():
    """Guard against a momentum that is silently zero: FISTA and ISTA part after two steps."""
    p = Problem(ProblemSpec(m=31, n=37, seed=7))
    y = p.sample(9, torch.Generator().manual_seed(2), F64)[1]
    a = build("lfista", p, {"K": K, "lam": LAM}, F64)(y)
    assert float((a - solvers.final(solvers.ista(p.A, y, LAM, K))).detach().abs().max()) > 1e-3


def test_lwa_at_init_is_ista(problem, y):
    model = build("lwa", problem, {"K": K, "lam": LAM}, F64)
    assert_iterates(model, y, ista(problem, y, None))


def test_lwa_without_extra_gates_is_tied_lista(problem, y):
    """Same weights in both parametrisations give the same network (lwa uses L, lista scale)."""
    lwa = build("lwa", problem, {"K": K, "lam": LAM, "gates": lista_gates(K)}, F64)
    lista = build("lista", problem, {"K": K, "lam": LAM, "tied": True}, F64)
    with torch.no_grad():
        lista.B.copy_(lwa.Wb)
        lista.W.copy_(lwa.Wx)
        for a, b in zip(lista.layers, lwa.layers):
            a.theta.copy_(b.theta)
    assert_iterates(lwa, y, lista(y, all_layers=True))


def test_lwa_with_fista_pattern_and_momentum_weights_is_fista(problem, y):
    """x~^(k) = (1 + m_k) x^(k) - m_k x^(k-1) with FISTA's m_k turns the LFISTA pattern into FISTA."""
    model = build("lwa", problem, {"K": K, "lam": LAM, "gates": lfista_gates(K)}, F64)
    s = 1.0
    with torch.no_grad():
        for k, p in enumerate(model.layers):
            s, m = ops.fista_momentum(s)
            p.c[-1] = 1 + m
            if k >= 2:
                p.c[0] = -m  # sources of row k are [k - 1, k]; row 1's x^(0) = 0 link is absent
    assert_iterates(model, y, solvers.fista(problem.A, y, LAM, K))


@pytest.mark.parametrize("injection", ["lwa", "naive", "momentum"])
def test_injections_start_as_ista_or_average(injection, problem, y):
    """With the dense pattern, lwa (c = e_k) and momentum (W_j = 0) start as ISTA; naive does not."""
    model = build("dense-lista", problem, {"K": K, "lam": LAM, "injection": injection}, F64)
    if injection == "naive":
        ref = ista(problem, y, None)
        assert float((model(y) - solvers.final(ref)).detach().abs().max()) > 1e-3
    else:
        assert_iterates(model, y, ista(problem, y, None))


def test_connection_counts():
    assert extra_connections(build_config_gates("dense-lista", 16)) == 105
    assert extra_connections(lfista_gates(16)) == 14
    assert extra_connections(lista_gates(16)) == 0
    for k in (1, 2, 3, 7):
        assert extra_connections(dense_gates(k)) == (k - 1) * (k - 2) // 2
        assert extra_connections(lfista_gates(k)) == max(k - 2, 0)


def build_config_gates(name: str, K: int) -> list[list[int]]:
    from unrolled.models import MODELS, make_config

    return make_config(MODELS[name].Config, {"K": K}).gates


@pytest.mark.parametrize("ss", ["count", "percentage", "none"])
def test_na_alista_with_constant_head_is_alista(ss, problem, y):
    gamma, theta = 0.9, 0.05
    alista = build("alista", problem, {"K": K, "ss": ss, "gamma0": gamma, "theta0": theta}, F64)
    na = build("na-alista", problem, {"K": K, "ss": ss, "H": 5}, F64)
    assert na.cuts == alista.cuts and torch.equal(na.W, alista.W)

    def constant(t, features, ctx):
        one = features.new_ones(features.shape[0], 1)
        return gamma * one, theta * one

    na.thresholds = constant
    assert_iterates(na, y, alista(y, all_layers=True))


def test_na_alista_normalisation_is_saved_and_calibrated(problem):
    model = build("na-alista", problem, {"K": K, "H": 4}, F64)
    assert "feature_scale" in model.state_dict()
    _, y0 = problem.sample(1024, torch.Generator().manual_seed(12345), F64)
    feats = torch.stack([y0.abs().sum(-1), (y0 @ model.W).abs().sum(-1)], 1) / model.feature_scale  # layer 1's inputs
    assert torch.allclose(feats.mean(0), torch.ones(2, dtype=F64), atol=1e-12)
    assert list(model.layer_parameters(1)) == list(model.parameters())
    assert all(model.layer_parameters(t) == [] for t in range(2, K + 1))


# -- AMP and LAMP ------------------------------------------------------------------------------


def test_bg_denoiser_is_the_posterior_mean_and_its_derivative():
    r = torch.linspace(-3, 3, 61, dtype=F64).reshape(1, -1).requires_grad_(True)
    tau2, eps, var = torch.tensor([[0.3]], dtype=F64), 0.1, 1.7

    def pdf(v):
        return torch.exp(-0.5 * r * r / v) / torch.sqrt(2 * torch.pi * v)

    p1, p0 = eps * pdf(var + tau2), (1 - eps) * pdf(tau2)
    direct = p1 / (p0 + p1) * r * var / (var + tau2)  # E[x | r] from the two Gaussian likelihoods
    x, dx = ops.bg_denoise(r, tau2, eps, var)
    assert torch.allclose(x, direct, atol=ATOL, rtol=0)
    grad = torch.autograd.grad(x.sum(), r)[0]
    assert float(dx.detach()) == pytest.approx(float(grad.mean()), abs=ATOL)
    x_soft, d_soft = ops.soft_denoise(r, tau2, 1.5)
    assert torch.equal(x_soft, ops.soft_threshold(r, 1.5 * tau2.sqrt()))
    assert float(d_soft) == pytest.approx(float((r.abs() > 1.5 * tau2.sqrt()).double().mean()))


def amp_reference(A, y, iters, eps, var=1.0):
    """Textbook AMP with the Bernoulli-Gaussian denoiser, its derivative from autograd."""
    m, n = A.shape
    x, v, b, out = torch.zeros(y.shape[0], n, dtype=F64), torch.zeros_like(y), 0.0, []
    out.append(x)
    for _ in range(iters):
        v = y - x @ A.T + b * v
        tau2 = (v * v).sum(-1, keepdim=True) / m
        r = (x + v @ A).requires_grad_(True)
        c = var / (var + tau2)
        pi = 1 / (1 + (1 - eps) / eps * torch.sqrt((var + tau2) / tau2) * torch.exp(-0.5 * r * r * c / tau2))
        xr = pi * c * r
        b = n / m * torch.autograd.grad(xr.sum(), r)[0].mean(-1, keepdim=True)
        x = xr.detach()
        out.append(x)
    return out


@pytest.mark.parametrize("matrix", ["tied", "untied", "fixed"])
def test_amp_matches_textbook_and_lamp_at_init_equals_amp(matrix, problem, y):
    ref = amp_reference(problem.A, y, K, problem.spec.p)
    assert_iterates(build("amp", problem, {"K": K}, F64), y, ref)
    assert_iterates(build("lamp", problem, {"K": K, "matrix": matrix}, F64), y, ref)


def test_amp_reaches_the_support_oracle():
    """Bayes-AMP on a 150 x 300 Gaussian problem at 40 dB ends within 1 dB of least squares on the true support."""
    from unrolled import metrics

    problem = Problem(ProblemSpec(m=150, n=300, p=0.1, snr=40.0, seed=1, test_size=1000))
    x, y = problem.test(dtype=F64)
    amp = build("amp", problem, {"K": 16}, F64)
    floor = metrics.nmse_db(metrics.oracle_estimates(problem.A, x, y, 40.0)["oracle-ls"], x)
    got = metrics.nmse_db(amp(y), x)
    ista = metrics.nmse_db(build("ista", problem, {"K": 16}, F64)(y), x)
    assert got < floor + 1.0 and got < ista - 20, (got, floor, ista)


BACKENDS = ["reference", "torch"] + (["numba"] if ops.numba_available() else [])


@pytest.mark.parametrize("inputs", ["both", "u"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_na_alista_cell_equals_torch_lstm_cell(inputs, backend):
    # The ops compute nn.LSTMCell's update (the fast paths in fewer passes over the gates); float64.
    problem = Problem(ProblemSpec(m=13, n=29, p=0.1, snr=40, seed=2))
    model = build("na-alista", problem, {"K": 3, "H": 7, "inputs": inputs}, dtype=torch.float64)
    cell = model.cell
    g = torch.Generator().manual_seed(0)
    inp, h, c = (torch.randn(5, k, generator=g, dtype=torch.float64) for k in (2 if inputs == "both" else 1, 7, 7))

    def ours(inp, state):
        with ops.backend(backend):
            return ops.lstm_cell(inp, *state, ops.lstm_weights(cell.weight_ih, cell.weight_hh, cell.bias_ih,
                                                                cell.bias_hh))

    for a, b in zip(ours(inp, (h, c)), cell(inp, (h, c)), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    model.float()
    args32 = [v.float() for v in (inp, h, c)]  # float32: the kernels' exp is a polynomial
    for a, b in zip(ours(args32[0], args32[1:]), cell(args32[0], args32[1:]), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    model.double()
    # ... and so are the gradients of the hand-written backward
    dh, dc = torch.randn(5, 7, generator=g, dtype=torch.float64), torch.randn(5, 7, generator=g, dtype=torch.float64)

    def grads(fn):
        leaves = [v.clone().requires_grad_() for v in (inp, h, c)]
        out_h, out_c = fn(leaves[0], (leaves[1], leaves[2]))
        return torch.autograd.grad((out_h * dh).sum() + (out_c * dc).sum(), leaves + list(cell.parameters()))

    for a, b in zip(grads(ours), grads(cell), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_at_init_equals_what_it_reduces_to(name, problem, y):
    """The registry-wide form of the tests above: each model's declared twin (``reduces_to``)."""
    model = build(name, problem, {"K": K, "lam": LAM}, F64)
    assert MODELS[name].reduces_to, f"{name} does not say what it reduces to at initialisation"
    with torch.no_grad():
        assert_iterates(model, y, model.initial_twin(y))
