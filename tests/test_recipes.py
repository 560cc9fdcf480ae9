"""Recipes and derived initialisations (issue 15): one table for the CLI, the API and the demo;
gamma0 from rho(W^T A); bounded NA-ALISTA/AGLISTA steps; a diverging start retried with smaller
steps; a training worse than FISTA (or than 0 dB) is a failed run with a one-line error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import unrolled as ur
from unrolled import recipes
from unrolled.cli import main
from unrolled.models import build
from unrolled.models.alista import STEP_MARGIN, spectral_radius, step_bound, support_radius


def problem(**kw) -> ur.Problem:
    base = dict(m=32, n=128, p=0.04, snr=40, seed=1, val_size=300, test_size=300, matrix="dct")
    return ur.Problem(ur.ProblemSpec(**{**base, **kw}))


def test_gamma0_is_derived_from_rho_and_rho_is_the_spectral_radius():
    p = problem()
    net = build("alista", p, dict(K=4), torch.float64)
    rho = max(abs(np.linalg.eigvals(net.W.numpy().T @ p.A.numpy())))
    assert net.rho == pytest.approx(rho, rel=1e-10) and rho > 3  # n/m = 4: rho >= 4 (docs/spec.md §6.5)
    assert all(float(layer.gamma.detach()) == pytest.approx(min(1.0, STEP_MARGIN / rho)) for layer in net.layers)
    at = build("alista-at", p, dict(K=2))
    assert float(at.layers[0].gamma.detach()) == pytest.approx(min(0.5, STEP_MARGIN / rho))
    assert float(build("alista", p, dict(K=2, gamma0=0.7)).layers[0].gamma) == pytest.approx(0.7)
    assert spectral_radius(net.W, p.A) == net.rho


@pytest.mark.parametrize("head", ["paper", "reference"])
def test_na_alista_steps_are_bounded_by_default(head):
    p = problem()
    net = build("na-alista", p, dict(K=3, head=head), torch.float64)
    with torch.no_grad():
        for layer in [mod for mod in net.head.modules() if isinstance(mod, torch.nn.Linear)][-1:]:
            layer.weight.fill_(5.0)  # outputs far beyond the stable range
            if layer.bias is not None:
                layer.bias.fill_(5.0)
        ctx = {}
        _, y = p.test(dtype=torch.float64)
        x = net.begin(y, ctx)
        from unrolled import ops

        _, features = ops.residual_features(x, y, net.A, net.W, net.config.inputs, net.feature_scale)
        gamma, _ = net.thresholds(1, features, ctx)
    edge = step_bound(net.W, net.A, p.spec.sparsity)
    if head == "reference":  # softplus: unbounded without the clamp
        assert float(gamma.max()) == pytest.approx(edge)
    else:  # softsign: below 1 anyway
        assert float(gamma.max()) <= min(edge, 1.0)
    free = build("na-alista", p, dict(K=3, head=head, bound=False), torch.float64)  # the reference code's range
    assert free.step_max is None


def test_aglista_steps_are_clamped():
    net = build("aglista", problem(), dict(K=2, gamma0=10.0), torch.float64)
    assert float(net.bounded(net.layers[0].gamma)) == pytest.approx(net.step_max)
    assert build("aglista", problem(), dict(K=2, bound=False)).step_max is None


def test_step_bound_is_the_stable_edge_on_supports_and_never_below_the_global_one():
    p = problem()
    W, A = build("alista", p, dict(K=1), torch.float64).W, p.A.double()
    s = p.spec.sparsity
    rho, rho_s = spectral_radius(W, A), support_radius(W, A, s)
    G = W.T @ A  # the n x n operator, only at this test's size
    g = torch.Generator().manual_seed(0)
    draws = [float(torch.linalg.eigvals(G[S][:, S]).abs().max())
             for S in (torch.randperm(p.n, generator=g)[:round(s)] for _ in range(64))]
    assert rho_s == pytest.approx(max(draws), rel=1e-12) and rho_s == support_radius(W, A, s)  # same draws, same bits
    assert 1 <= rho_s < rho  # diag(W^T A) = 1; a support sees less than the whole operator
    assert step_bound(W, A, s) == max(STEP_MARGIN / rho, 2 / rho_s)
    assert step_bound(W, A, p.n) == pytest.approx(max(STEP_MARGIN / rho, 2 / rho))  # S = everything: rho_S = rho


def test_a_run_from_before_a_default_changed_loads_as_it_was_trained():
    from unrolled.training.rundir import with_later_fields

    old = {"model": "na-alista", "model_config": {"K": 2}}  # written before `bound` existed
    assert with_later_fields(old)["model_config"] == {"bound": False, "guard": False, "K": 2}
    assert with_later_fields({"model": "alista", "model_config": {"K": 2}})["model_config"] == {"guard": False, "K": 2}
    assert with_later_fields({"model": "na-alista", "model_config": {"bound": True}})["model_config"]["bound"]


def test_recipe_table_and_reproduction_pins():
    assert recipes.recipe("alista").lr == 2e-3 and recipes.recipe("lfista") == recipes.DEFAULT
    assert recipes.recipe("lista").lr == 3e-3 and recipes.recipe("lista").batch == 128
    assert recipes.schedule("lista") == {"name": "end-to-end", "fine": ()}
    assert recipes.recipe("lista").budget == 1_280_000
    assert recipes.schedule("lista", "stagewise") == "stagewise"  # another schedule keeps its own defaults
    assert recipes.schedule("alista") == recipes.schedule("alista", "end-to-end") == "end-to-end"
    assert recipes.config("alista") == {"ss": "count", "ss.theta": True}
    assert recipes.config("alista", {"ss": "none"}) == {"ss": "none"}  # a mode given drops the recipe's ss.*
    assert recipes.reproduction_config("na-alista", {}) == {"bound": False, "guard": False}
    assert recipes.reproduction_config("alista", {"gamma0": 0.5}) == {"gamma0": 0.5, "guard": False}
    cfg = build("na-alista", problem(), recipes.reproduction_config("na-alista", {"K": 2})).config
    assert "bound" not in recipes.config_record(cfg)
    with pytest.raises(ur.UsageError, match="unknown model"):
        recipes.recipe("nope")


def test_cli_train_with_no_option_uses_the_recipe_and_the_dct_case_trains_well(tmp_path, capsys):
    """The +57 dB partial-DCT case of issue 15 (gamma0 = 1 with rho = 4): with the recipe it trains
    to better than FISTA at the same depth; a start pinned to gamma0 = 8 is retried with halved steps."""
    path = problem().save(tmp_path / "dct.npz")
    assert main(["train", str(path), "--model", "alista", "--layers", "8", "--out", str(tmp_path / "a"),
                 "--budget-samples", "20000"]) == 0
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["model_config"]["ss"]["mode"] == "count" and cfg["stages"][0]["lr"] == 2e-3
    result = json.loads((tmp_path / "a" / "result.json").read_text())
    assert "failed" not in result
    assert main(["eval", str(tmp_path / "a"), "--test-size", "300"]) == 0
    out = capsys.readouterr().out
    last = [line.split() for line in out.splitlines() if line.split()[:1] == ["8"]][0]
    assert float(last[1]) < float(last[3])  # alista beats fista (columns: alista ista fista amp...)
    assert "test vectors above 0 dB at the final layer: alista 0" in out
    assert main(["train", str(path), "--model", "alista", "--layers", "8", "--out", str(tmp_path / "b"),
                 "--budget-samples", "2048", "--set", "gamma0=8"]) in (0, 2)
    out = capsys.readouterr().out
    assert "initial model diverged" in out and "halved" in out


def test_cli_and_api_train_lista_with_the_recipes_single_cosine(tmp_path):
    path = problem().save(tmp_path / "p.npz")
    assert main(["train", str(path), "--model", "lista", "--layers", "3", "--out", str(tmp_path / "a"),
                 "--budget-samples", "12800"]) in (0, 2)
    stages = json.loads((tmp_path / "a" / "config.json").read_text())["stages"]
    assert [(s["lr"], s["max_steps"], s["cosine"]) for s in stages] == [(3e-3, 100, True)]  # one cosine
    assert main(["train", str(path), "--model", "lista", "--layers", "3", "--out", str(tmp_path / "b"),
                 "--budget-samples", "12800", "--lr", "1e-3", "--batch", "64"]) in (0, 2)
    stages = json.loads((tmp_path / "b" / "config.json").read_text())["stages"]
    assert [(s["lr"], s["max_steps"]) for s in stages] == [(1e-3, 200)]
    run = ur.train(problem(), "lista", budget=12800, log=lambda s: None)
    assert [s["max_steps"] for s in run.config["stages"]] == [100]


def test_training_worse_than_fista_is_a_failed_run(tmp_path, capsys):
    path = problem().save(tmp_path / "dct.npz")
    run = tmp_path / "r"
    code = main(["train", str(path), "--model", "alista", "--layers", "6", "--out", str(run), "--budget-samples",
                 "512", "--set", "gamma0=0.01", "--set", "ss=none", "--lr", "1e-9"])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # (the lines before are the progress bar's)
    assert code == 2 and last.startswith("error: training failed") and "worse than FISTA" in last and "try" in last
    result = json.loads((run / "result.json").read_text())
    assert "worse than FISTA" in result["failed"] and (run / "weights.safetensors").exists()
    assert main(["eval", str(run), "--test-size", "100"]) == 0
    assert "FAILED" in capsys.readouterr().out


def test_api_train_with_no_config_is_the_recipe():
    run = ur.train(problem(), "alista", budget=1024, lr=1e-3)
    assert run.model.config.ss.mode == "count" and run.model.config.ss.theta is True


def test_help_shows_defaults_and_version(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "(default: 16)" in out and "alista: end-to-end, lr 0.002" in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("unrolled ")


def test_support_radius_beyond_m_columns_takes_the_m_x_m_product():
    p = problem()
    W, A = build("alista", p, dict(K=1), torch.float64).W, p.A.double()
    G, k = W.T @ A, 3 * p.m  # k > m: A_S W_S^T has the non-zero eigenvalues of (W^T A)_SS
    g = torch.Generator().manual_seed(0)
    direct = max(float(torch.linalg.eigvals(G[S][:, S]).abs().max())
                 for S in (torch.randperm(p.n, generator=g)[:k] for _ in range(8)))
    assert support_radius(W, A, k, draws=8) == pytest.approx(direct, rel=1e-9)


def test_step_guard_caps_only_atypical_samples_and_stops_their_blow_up():
    """An iterate with many more non-zeros than s meets a larger rho_S: the guard caps its step at
    2 / rho_S(k) (never below 1.9 / rho) and leaves samples with k <= s, and small steps, alone."""
    p = problem()  # 32 x 128 partial DCT, s = 5.12, rho > 3
    cfg = dict(K=30, gamma0=0.9, ss="none")  # 0.9 rho > 2: unstable on the full space, fine on a support
    net, free = build("alista", p, cfg, torch.float64), build("alista", p, {**cfg, "guard": False}, torch.float64)
    guard = net.guard
    assert free.guard is None and guard.sizes[0] == 5 and guard.sizes[-1] == p.n
    assert guard.radii == sorted(guard.radii) and guard.radii[-1] == pytest.approx(net.rho)
    x = torch.zeros(4, p.n, dtype=torch.float64)
    for i, k in enumerate((3, 5, 40, p.n)):
        x[i, :k] = 1.0
    caps = guard.caps(x).flatten()
    assert torch.isinf(caps[:2]).all() and caps[2] > caps[3] >= STEP_MARGIN / net.rho
    assert float(caps[3]) == pytest.approx(max(STEP_MARGIN / net.rho, 2 / net.rho))
    gamma = net.layers[0].gamma
    assert net.guarded(gamma, x[:2]) is gamma  # no sample needs it: the scalar (and its fused kernels) stays
    assert net.guarded(torch.tensor(0.01, dtype=torch.float64), x) is not None
    # a dense signal: every entry active, the unguarded step diverges, the guarded one does not
    g = torch.Generator().manual_seed(3)
    xd = torch.randn(8, p.n, generator=g, dtype=torch.float64)
    yd = xd @ p.A.double().T
    with torch.no_grad():
        err = {name: ur.metrics.nmse_db(m(yd), xd) for name, m in (("guarded", net), ("free", free))}
        with ur.ops.backend("reference"):
            ref = net(yd)
        assert torch.allclose(ref, net(yd), rtol=1e-10, atol=1e-12)  # fast path = reference with the guard engaged
    assert err["free"] > 20 and err["guarded"] < 3, err
    twin = net.initial_twin(yd)[-1]  # the twin takes the same guarded steps
    with torch.no_grad():
        assert torch.allclose(twin, net(yd), rtol=1e-10, atol=1e-12)
