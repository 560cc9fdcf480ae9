"""Per-layer evaluation: chunked statistics equal the one-shot metrics; long-format CSV."""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from unrolled import Problem, ProblemSpec
from unrolled import evaluation as E
from unrolled import metrics as M
from unrolled import solvers as S

D = torch.float64


@pytest.fixture(scope="module")
def data():
    # p = 0.05 at n = 41: about 12 % of the signals are zero, which the per-sample dB skips
    p = Problem(ProblemSpec(m=23, n=41, p=0.05, snr=30.0, seed=2, val_size=50, test_size=101))
    x, y = p.test(dtype=D)
    assert ((x != 0).sum(1) == 0).any()
    return p, x, y


def test_chunked_layer_stats_equal_one_shot_metrics(data):
    p, x, y = data
    L = S.lipschitz(p.A)

    def run(yc):
        return S.fista(p.A, yc, 0.05, 6, L)

    rows = E.evaluate_layers(run, x, y, "fista", chunk=13)  # 101 = 7 chunks of 13 + 10
    whole = list(run(y))
    assert [r["layer"] for r in rows] == list(range(7))
    for r, xk in zip(rows, whole):
        assert r["method"] == "fista"
        assert r["nmse_db"] == pytest.approx(M.nmse_db(xk, x), abs=1e-9)
        assert r["nmse_db_sample"] == pytest.approx(M.nmse_db_per_sample(xk, x), abs=1e-9)
        s = M.support_stats(xk, x)
        for k in ("fp", "fn", "f1"):
            assert r[k] == pytest.approx(s[k], abs=1e-12)
    one = E.evaluate_layers(run, x, y, "fista", chunk=1000)
    for a, b in zip(rows, one):
        for k in ("nmse_db", "nmse_db_sample", "fp", "fn", "f1"):
            assert a[k] == pytest.approx(b[k], abs=1e-9)


def test_classical_and_oracle_rows_and_csv(data, tmp_path):
    p, x, y = data
    xv, yv = p.validation(D)
    rows = E.classical_rows(p.A, x, y, xv, yv, 4, ("ista", "fista"), lam=0.1)
    rows += E.oracle_rows(p.A, x, y, 30.0)
    assert [r["method"] for r in rows] == ["ista"] * 5 + ["fista"] * 5 + ["oracle-ls", "oracle-mmse"]
    assert all(r["lam"] == 0.1 for r in rows[:10]) and rows[-1]["layer"] == ""
    text = E.to_csv(rows, tmp_path / "out.csv", meta={"problem": "p.npz", "iters": 4})
    assert (tmp_path / "out.csv").read_text() == text
    table = list(csv.DictReader(io.StringIO(text)))
    header = text.splitlines()[0].split(",")
    assert header[: len(E.FIELDS)] == E.FIELDS and {"lam", "problem", "iters"} <= set(header)
    assert len(table) == 12 and all(t["problem"] == "p.npz" for t in table)
    assert float(table[3]["nmse_db"]) == pytest.approx(rows[3]["nmse_db"], rel=1e-12)
    out = E.format_table(rows)
    assert "floor: oracle-ls" in out and "oracle-mmse" in out and "gap" in out and len(out.splitlines()) == 2 + 5 + 4
    assert "test vectors above 0 dB at the final layer: ista 0, fista 0" in out


def test_classical_rows_auto_lambda_is_the_tuned_one(data):
    p, x, y = data
    xv, yv = p.validation(D)
    rows = E.classical_rows(p.A, x, y, xv, yv, 5, ("fista",), lam="auto")
    assert rows[0]["lam"] == S.tune_lambda("fista", p.A, xv, yv, 5)[0]
    assert not math.isnan(rows[-1]["nmse_db"])


def test_matplotlib_is_imported_only_to_draw_a_figure():
    code = ("import sys, unrolled, unrolled.cli, unrolled.repro, unrolled.plots; "
            "from unrolled.cli import build_parser; build_parser(); print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_a_figure_without_matplotlib_names_the_extra(monkeypatch, tmp_path):
    from unrolled import UsageError, plots

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    rows = [dict(method="ista", layer=0, nmse_db=0.0), dict(method="ista", layer=1, nmse_db=-1.0)]
    with pytest.raises(UsageError) as e:
        plots.plot_layers(rows, tmp_path / "f.png")
    assert "\n" not in str(e.value) and "pip install 'unrolled[plot]'" in str(e.value)
    assert not (tmp_path / "f.png").exists()


def test_the_oracle_floor_is_na_where_the_support_gram_matrix_is_singular():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(23, 41, generator=g, dtype=D)
    A = A / A.norm(dim=0)
    x = torch.zeros(30, 41, dtype=D)
    x[:, :5] = torch.randn(30, 5, generator=g, dtype=D)
    # Well conditioned: the condition number is numpy's, and the floor is a number below the data.
    cond = M.support_gram_condition(A, x, chunk=7)
    AS = A[:, :5].numpy()
    assert cond == pytest.approx(float(np.linalg.cond(AS.T @ AS)), rel=1e-9)
    rows = E.oracle_rows(A, x, x @ A.T, 40.0)
    assert all(isinstance(r["nmse_db"], float) for r in rows)
    # A duplicated column inside the support: A_S^T A_S is singular, the floor is undefined.
    A2 = A.clone()
    A2[:, 1] = A2[:, 0]
    assert M.support_gram_condition(A2, x) > M.ORACLE_COND_MAX
    bad = E.oracle_rows(A2, x, x @ A2.T, 40.0)
    assert [r["nmse_db"] for r in bad] == [None, None] and "ill-conditioned" in bad[0]["reason"]
    # More non-zeros than measurements: no support oracle either.
    dense = torch.randn(4, 41, generator=g, dtype=D)
    assert M.support_gram_condition(A, dense) == math.inf
    table = E.format_table([dict(method="ista", layer=0, nmse_db=0.0), *bad])
    assert "floor: n/a" in table and "gap" not in table


def test_vectors_above_0db_are_counted_and_a_diverged_method_shows_no_number():
    x = torch.randn(6, 5, dtype=torch.float64)
    y = x[:, :3]

    def run(yc):  # layer 1: half the vectors blown up (NMSE +20 dB), layer 2: all exact
        xc = x[: len(yc)]
        blown = xc.clone()
        blown[:3] *= 11.0
        return [torch.zeros_like(xc), blown, xc]

    rows = E.evaluate_layers(run, x, y, "m")
    assert [r["over_0db"] for r in rows] == [0, 3, 0]  # x_hat = 0 is exactly 0 dB: not above
    rows = [{**r, "diverged": "at iteration 1 (3 of 6 signals)"} for r in rows]
    table = E.format_table(rows)
    assert "diverged" in table.splitlines()[3] and "diverged" in table.splitlines()[4]
    assert "0.00" in table.splitlines()[2] and "m: diverged at iteration 1" in table
    assert E.diverged_from("at iteration 12 (1 of 5 signals)") == 12 and E.diverged_from("") is None


def test_test_x_in_user_units_is_mapped_to_the_problem_units(tmp_path):
    """A signal file is in the user's units: on unnormalised columns it is scaled like the problem's A."""
    p = Problem(ProblemSpec(m=20, n=40, p=0.1, col_spread=10.0, val_size=50, test_size=30, seed=4))
    assert p.scale is not None
    x, _ = p.test(30, D)
    np.save(tmp_path / "x.npy", p.to_user(x).numpy())
    x_file, _ = E.evaluation_set(p, "test", str(tmp_path / "x.npy"))
    assert torch.allclose(x_file, x, rtol=1e-12, atol=0)
