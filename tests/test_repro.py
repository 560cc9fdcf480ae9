"""Reproduction harness: every experiment runs at the smoke budget, resumes, reports, and rejects bad input."""

from __future__ import annotations

import csv
import math
import re

import pytest

from unrolled.cli import main
from unrolled.errors import UsageError
from unrolled.models.design_space import check_gates, extra_connections
from unrolled.repro import load, run_experiment, summary
from unrolled.repro.analyses import pruned_layers, random_architecture
from unrolled.repro.config import experiment_names
from unrolled.repro.report import check_claim, compute_seconds, read_table, write_report
from unrolled.training import Trainer

NAMES = experiment_names()
OUTPUTS = ("results.csv", "figure.png", "figure.pdf", "report.md")
META = ("experiment", "budget", "method", "device", "seed", "train_seed", "torch", "K", "problem", "cell")

TINY = """
title = "tiny"
reproduces = "a test"
notes = "tiny notes"
[problem]
m = 250
n = 500
p = 0.1
snr = 40
[grid]
seed = [0]
[[models]]
model = "alista"
[schedule]
name = "end-to-end"
lr = 2e-3
[budget.smoke]
about = "tiny"
scale = 0.08
K = 3
problem = { test_size = 100, val_size = 50 }
schedule = { samples = 1920, batch = 64, eval_every = 5 }
[budget.quick]
about = "same"
[budget.paper]
about = "same"
[[paper]]
source = "made up for the test"
keys = ["snr"]
methods = ["alista", "ista"]
rows = [[40, -60.0, -70.0]]
"""


ROWS = "rows = [[40, -60.0, -70.0]]"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("repro")


def fails(capsys, argv, *words):
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.mark.parametrize("name", NAMES)
def test_every_experiment_runs_at_smoke_budget(name, runs, capsys):
    out = runs / "smoke" / name
    assert main(["repro", name, "--budget", "smoke", "--out", str(out)]) == 0
    for f in OUTPUTS:
        assert (out / f).stat().st_size > 0, f
    rows = read_table(out / "results.csv")
    assert rows and all(r[k] != "" for r in rows for k in META)
    assert {r["budget"] for r in rows} == {"smoke"} and {r["experiment"] for r in rows} == {name}
    text = (out / "report.md").read_text()
    assert "## Paper | ours | difference" in text and "## Notes" in text
    exp = load(name)
    numbers = sum(len(p["rows"]) * len(p["methods"]) for p in exp.paper)
    if numbers:  # every paper number has its row, or is named on the line of those not run at this budget
        missing = re.search(r"\n(\d+) of (\d+) paper numbers have no result", text)
        shown = text.count("\n| ") - text.count("\n| cell | ")
        assert shown + (int(missing[1]) if missing else 0) >= numbers
        assert "| cell | method | paper | ours | difference |" in text or (missing and missing[1] == missing[2])
    for c in exp.claims:
        assert c["text"] in text
    if exp.baselines and exp.models:  # classical baselines at the same depth, and the oracle floor
        K = exp.budgets["smoke"].K
        assert {"ista", "fista"} <= {r["method"] for r in rows if r["layer"] == str(K)}
        assert any(r["method"] == "oracle-mmse" for r in rows) or exp.problem.get("signal") == "gamma"


def test_resume_reuses_finished_cells(tmp_path):
    out = tmp_path / "smoke" / "na-alista-n"
    _, first = run_experiment("na-alista-n", "smoke", out, log=lambda s: None)
    assert first["computed"] > 0 and first["trained"] == 4
    before = (out / "results.csv").read_text()
    lines = []
    _, second = run_experiment("na-alista-n", "smoke", out, log=lines.append)
    assert second["computed"] == 0 and second["trained"] == 0 and second["reused"] == first["computed"]
    assert any("reused (finished earlier)" in line for line in lines)
    assert (out / "results.csv").read_text() == before
    # A new experiment that needs the same trainings (same budget, same store) does not retrain them.
    _, third = run_experiment("na-alista-k", "smoke", tmp_path / "smoke" / "na-alista-k", log=lambda s: None)
    assert third["trained"] == 0 and third["computed"] == 5


def test_interrupted_training_resumes_where_it_stopped(tmp_path, monkeypatch):
    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY)
    clean, _ = run_experiment(str(toml), "smoke", tmp_path / "a" / "smoke" / "tiny", log=lambda s: None)
    original = Trainer._validate_and_checkpoint
    calls = []

    def interrupt(self, stage):
        original(self, stage)
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_validate_and_checkpoint", interrupt)
    out = tmp_path / "b" / "smoke" / "tiny"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(str(toml), "smoke", out, log=lambda s: None)
    monkeypatch.setattr(Trainer, "_validate_and_checkpoint", original)
    lines = []
    _, counts = run_experiment(str(toml), "smoke", out, log=lines.append)
    assert counts["resumed"] == 1 and any("resuming" in line for line in lines)
    final = [{k: v for k, v in r.items() if k in ("method", "layer", "nmse_db")}
             for r in read_table(out / "results.csv") if r["method"] == "alista"]
    expect = [{k: v for k, v in r.items() if k in ("method", "layer", "nmse_db")}
              for r in read_table(clean / "results.csv") if r["method"] == "alista"]
    assert final == expect  # the resumed training is the uninterrupted one, bit for bit


def test_editing_the_experiment_invalidates_only_the_cells_it_changes(tmp_path):
    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY)
    out = tmp_path / "smoke" / "tiny"
    run_experiment(str(toml), "smoke", out, log=lambda s: None)
    toml.write_text(TINY.replace("samples = 1920", "samples = 1280"))
    _, counts = run_experiment(str(toml), "smoke", out, log=lambda s: None)
    assert counts["reused"] == 1 and counts["computed"] == 1 and counts["trained"] == 1  # classical kept
    assert {r["samples"] for r in read_table(out / "results.csv") if r["method"] == "alista"} == {"1280"}


def test_a_budgets_model_schedule_retrains_only_that_model(tmp_path):
    twin = TINY.replace('[[models]]\nmodel = "alista"', '[[models]]\nmodel = "alista"\n[[models]]\nmodel = "slista"')
    toml = tmp_path / "tiny.toml"
    toml.write_text(twin)
    out = tmp_path / "smoke" / "tiny"
    run_experiment(str(toml), "smoke", out, log=lambda s: None)
    override = "[budget.smoke]\nmodel_schedule = { slista = { samples = 1280 } }\n"
    toml.write_text(twin.replace("[budget.smoke]\n", override))
    _, counts = run_experiment(str(toml), "smoke", out, log=lambda s: None)
    assert counts["reused"] == 2 and counts["trained"] == 1  # classical and alista kept
    samples = {r["method"]: r["samples"] for r in read_table(out / "results.csv") if r.get("samples")}
    assert samples == {"alista": "1920", "slista": "1280"}


def test_finished_only_tables_what_is_done_and_trains_nothing(tmp_path):
    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY)
    out = tmp_path / "smoke" / "tiny"
    run_experiment(str(toml), "smoke", out, log=lambda s: None)
    toml.write_text(TINY.replace("samples = 1920", "samples = 1280"))  # the model cell is now unfinished
    lines = []
    _, counts = run_experiment(str(toml), "smoke", out, log=lines.append, finished_only=True)
    assert counts["computed"] == 0 and counts["trained"] == 0 and counts["missing"] == 1 and counts["reused"] == 1
    assert any("not finished" in line for line in lines)
    methods = {r["method"] for r in read_table(out / "results.csv")}
    assert "alista" not in methods and "ista" in methods and (out / "report.md").exists()
    # Another experiment that needs the finished training evaluates it (same store), training nothing.
    twin = tmp_path / "twin.toml"
    twin.write_text(TINY)
    _, counts = run_experiment(str(twin), "smoke", tmp_path / "smoke" / "twin", log=lambda s: None,
                               finished_only=True)
    assert counts["trained"] == 0 and counts["missing"] == 0 and counts["computed"] == 2


def test_report_flags_numbers_worse_than_the_paper(tmp_path):
    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY)
    out, _ = run_experiment(str(toml), "smoke", tmp_path / "smoke" / "tiny", log=lambda s: None)
    text = (out / "report.md").read_text()
    assert "**ours worse by" in text and "snr=40, alista: paper -60.0" in text and "made up for the test" in text
    assert "tiny notes" in text
    # Figures and reports are redrawn from the table alone.
    (out / "figure.png").unlink()
    (out / "report.md").unlink()
    write_report(load(str(toml)), out / "results.csv", "smoke", out)
    assert (out / "figure.png").exists() and "paper | ours | difference" in (out / "report.md").read_text()


def test_report_names_an_aggregate_dominated_by_diverging_vectors(tmp_path):
    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY)
    out, _ = run_experiment(str(toml), "smoke", tmp_path / "smoke" / "tiny", log=lambda s: None)
    assert "dominate the aggregate" not in (out / "report.md").read_text()
    rows = read_table(out / "results.csv")
    for r in rows:  # one exploding test vector: the aggregate is ruined, the per-sample mean is not
        if r["method"] == "alista" and r["final"] == "1":
            r["nmse_db"], r["nmse_db_sample"] = "-5.4", "-20.7"
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_report(load(str(toml)), out / "results.csv", "smoke", out)
    text = (out / "report.md").read_text()
    assert "a few test vectors dominate the aggregate (mean per-sample NMSE -20.7 dB)" in text


def test_report_records_each_trainings_compute(tmp_path):
    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY)
    out, _ = run_experiment(str(toml), "smoke", tmp_path / "smoke" / "tiny", log=lambda s: None)
    text = (out / "report.md").read_text()
    assert "## Compute" in text
    row = [line for line in text.splitlines() if line.startswith("| seed=0 | alista |")]
    assert len(row) == 1, text  # one training, named once
    cells = [c.strip() for c in row[0].split("|")[1:-1]]
    assert cells[2:5] == ["end-to-end", "1,920", "30"] and cells[6] == "cpu"  # 1,920 samples of batch 64
    assert float(cells[5]) > 0


def test_compute_counts_trainings_finished_elsewhere():
    rows = [dict(cell="a|m", cell_seconds="5", seconds="100"), dict(cell="a|m", cell_seconds="5", seconds="100"),
            dict(cell="a|classical", cell_seconds="7")]
    assert compute_seconds(rows) == 107.0
    # rows tested differently on one training (design-table1 [f]-[i] on [b]'s) count that training once
    shared = [dict(cell="b|m", cell_seconds="104", seconds="100", train_run="r"),
              dict(cell="f|m", cell_seconds="3", seconds="100", train_run="r"),
              dict(cell="g|m", cell_seconds="2", seconds="100", train_run="r")]
    assert compute_seconds(shared) == 109.0


def test_summary_is_regenerated_from_the_tables(runs, tmp_path):
    docs = tmp_path / "docs" / "reproduction.md"
    summary(runs, docs, tmp_path / "docs" / "repro", budgets=("smoke",))
    text = docs.read_text()
    for name in NAMES:
        assert f"| {name} | smoke |" in text
    ran = [n for n in NAMES if (runs / "smoke" / n / "results.csv").exists()]
    for name in ran:
        assert (tmp_path / "docs" / "repro" / f"{name}-smoke.md").exists()
        assert (tmp_path / "docs" / "repro" / f"{name}-smoke.png").exists()


# -- bad input ---------------------------------------------------------------------------------------


def test_unknown_experiment_lists_the_valid_ones(capsys):
    line = fails(capsys, ["repro", "no-such-experiment"], "unknown experiment 'no-such-experiment'", "valid:")
    assert all(n in line for n in NAMES)


def test_unknown_budget_is_a_usage_error(capsys):
    fails(capsys, ["repro", NAMES[0], "--budget", "huge"], "invalid choice: 'huge'", "smoke")


def test_list_shows_every_experiment(capsys):
    assert main(["repro", "list"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert f"\n{name}\n" in f"\n{out}"


@pytest.mark.parametrize("old, new, words", [
    ('title = "tiny"', 'titel = "tiny"', ["unknown key(s) titel", "valid: title, reproduces"]),
    ("m = 250", "mm = 250", ["unknown key(s) mm in [problem]", "valid: m, n, p"]),
    ("K = 3", "K = 3\nlayers = 3", ["unknown key(s) layers in [budget.smoke]", "valid: about, scale, K"]),
    ('lr = 2e-3', 'lr = 2e-3\nlearning_rate = 1', ["unknown key(s) learning_rate in [schedule]", "valid: name"]),
    ('model = "alista"', 'model = "alista"\nconfg = {}', ["unknown key(s) confg in [[models]]", "valid: model"]),
    ('model = "alista"', 'model = "alisa"', ["unknown model 'alisa'", "valid:", "na-alista"]),
    ("seed = [0]", "seed = [0]\nfoo = [1]", ["unknown key(s) foo in [grid]", "valid: m, n"]),
    ('[budget.quick]\nabout = "same"\n', "", ["lacks [budget.quick]"]),
    ("source = ", "origin = ", ["unknown key(s) origin in [[paper]]", "valid: source"]),
    ("rows = [[40, -60.0, -70.0]]", "rows = [[40, -60.0]]", ["has 2 values, expected 3"]),
    ("[budget.smoke]\n", "[budget.smoke]\ngrid = { seed = [1] }\n", ["grid value seed=1 is not in the", "[0]"]),
    ("[budget.smoke]\n", "[budget.smoke]\ngrid = { n = [40] }\n", ["grid filter on 'n', which is not a grid key"]),
    ("[budget.smoke]\n", "[budget.smoke]\nmodels = ['lista']\n", ["unknown model label 'lista'", "valid: alista"]),
    ("[budget.smoke]\n", "[budget.smoke]\nmodel_schedule = { lista = { lr = 1.0 } }\n",
     ["model_schedule: unknown model label 'lista'", "valid: alista"]),
    ("[budget.smoke]\n", "[budget.smoke]\nmodel_schedule = { alista = { lrr = 1.0 } }\n",
     ["unknown key(s) lrr in [budget.smoke] of", "model_schedule.alista", "valid: name"]),
    *[(ROWS, ROWS + "\n[[claims]]\n" + claim, words) for claim, words in [
        ('text = "t"\na = { method = "alsta" }\nop = "<"\nb = { method = "ista" }',
         ["[[claims]] 1", "method 'alsta' is not in the experiment", "valid: alista, ista, fista, oracle-ls"]),
        ('text = "t"\na = { method = "alista", snrr = 40 }\nop = "<"\nb = -20.0',
         ["'snrr' is not a grid key", "valid: method, seed"]),
        ('text = "t"\na = { method = "alista" }\nop = "<"\nb = -20.0\nper = ["n"]', ["'n' is not a grid key"]),
        ('text = "t"\na = { method = "alista" }\nop = "<="\nb = -20.0', ["op='<='", "one of <, >, within"]),
        ('text = "t"\na = { method = "alista" }\nop = "<"', ["needs 'b'"]),
        ('text = "t"\na = { method = "alista" }\nop = "within"\nb = -20.0\ntol = -1', ["tol=-1", "> 0"]),
        ('text = "t"\na = { method = "alista" }\nop = "<"\nb = -20.0\ncolumn = "nmse"', ["column must be"]),
    ]],
])
def test_bad_configs_fail_with_the_valid_keys(tmp_path, old, new, words):
    assert old in TINY
    toml = tmp_path / "bad.toml"
    toml.write_text(TINY.replace(old, new, 1))
    with pytest.raises(UsageError) as e:
        load(str(toml))
    msg = str(e.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_bad_config_on_the_command_line_exits_2(tmp_path, capsys):
    toml = tmp_path / "bad.toml"
    toml.write_text(TINY.replace("[[models]]", "[[modles]]"))
    fails(capsys, ["repro", str(toml), "--budget", "smoke", "--out", str(tmp_path / "x")], "modles", "valid:")
    assert not (tmp_path / "x").exists()


# -- the pieces ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("K", [3, 6, 16])
def test_random_architectures_are_valid_and_seeded(K):
    seen = set()
    for draw in range(8):
        gates, neurons, extra = random_architecture(K, 0, draw, ["soft", "relu"])
        assert check_gates(gates, K) == gates and extra_connections(gates) == extra
        assert len(neurons.split(",")) == K and random_architecture(K, 0, draw, ["soft", "relu"])[0] == gates
        seen.add(extra)
    assert len(seen) > 1 or K == 3


def test_pruned_layers_never_touch_layer_one():
    for pruned in range(16):
        layers = pruned_layers(16, 0, pruned, 1)
        assert len(set(layers)) == pruned and all(2 <= t <= 16 for t in layers)
    with pytest.raises(UsageError, match="only 0..2"):
        pruned_layers(3, 0, 3, 0)


def test_claims_compare_groups():
    rows = [dict(method=m, final="1", layer="3", nmse_db=str(v), n=str(n))
            for m, v, n in [("a", -10, 1), ("b", -5, 1), ("a", -3, 2), ("b", -4, 2)]]
    ours, verdict = check_claim(dict(a={"method": "a"}, b={"method": "b"}, op="<", per=["n"]), rows)
    assert verdict.startswith("**no**") and "n=1: -10 vs -5" in ours
    assert check_claim(dict(a={"method": "a", "n": 1}, b=-6, op="<"), rows)[1] == "yes"
    assert check_claim(dict(a={"method": "a"}, b={"method": "b"}, op="within", tol=10), rows)[1] == "yes"
    assert check_claim(dict(a={"method": "c"}, b={"method": "b"}), rows)[1] == "—"
    assert math.isclose(float(ours.split(": ")[1].split(" vs")[0]), -10)


def _repro_killed_at(k: int, toml, out) -> int:
    """``run_experiment`` in a forked child that dies (``os._exit``, no cleanup) at fault point ``k``."""
    from faults import killed_at

    return killed_at(k, lambda: run_experiment(str(toml), "smoke", out, log=lambda s: None))


KEEP = ("method", "layer", "nmse_db", "status")


def _clean_run(tmp_path) -> tuple:
    """The tiny experiment run once uninterrupted: its TOML, the write points it passed, its table."""
    from unrolled import io

    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY)
    points: list[str] = []
    io._fault_hook = points.append
    try:
        clean, _ = run_experiment(str(toml), "smoke", tmp_path / "clean" / "smoke" / "tiny", log=lambda s: None)
    finally:
        io._fault_hook = None
    return toml, points, [{k: r[k] for k in KEEP} for r in read_table(clean / "results.csv")]


def _kill_and_rerun(tmp_path, chosen):
    toml, points, expect = _clean_run(tmp_path)
    keep = KEEP
    for k in chosen(points):
        out = tmp_path / f"k{k}" / "smoke" / "tiny"
        assert _repro_killed_at(k, toml, out) == 75, f"fault point {k} ({points[k - 1]}) not reached"
        run_experiment(str(toml), "smoke", out, log=lambda s: None)
        got = [{k: r[k] for k in keep} for r in read_table(out / "results.csv")]
        assert got == expect, f"killed at {points[k - 1]}: the rerun differs"
        assert all(r["status"] != "failed" for r in got)


def test_a_repro_killed_inside_a_checkpoint_reruns_to_the_same_table(tmp_path):
    def chosen(points):  # inside the second checkpoint, and between the last writes of the training
        second = [i for i, p in enumerate(points, 1) if p.startswith("state.safetensors")][3:6]
        finish = [i for i, p in enumerate(points, 1) if p.startswith(("weights.", "result.json: renamed"))][-2:]
        return [second[0] - 1, *second[1:], *finish]

    _kill_and_rerun(tmp_path, chosen)


@pytest.mark.slow
def test_a_repro_killed_at_every_write_reruns_to_the_same_table(tmp_path):
    _kill_and_rerun(tmp_path, lambda points: range(1, len(points) + 1))


@pytest.mark.slow
def test_random_kills_never_leave_an_unfinishable_repro(tmp_path, capsys):
    """200 random kills of a smoke repro and of its reruns (each rerun is killed again with
    probability 0.8 at a random write), every experiment then finishing with the clean table."""
    import random

    toml, points, expect = _clean_run(tmp_path)
    keep = KEEP
    rng = random.Random(0)
    kills = runs = 0
    while kills < 200:
        runs += 1
        out = tmp_path / f"r{runs}" / "smoke" / "tiny"
        while not (out / "results.csv").exists():
            if rng.random() < 0.8:
                rc = _repro_killed_at(rng.randint(1, len(points)), toml, out)
                assert rc in (0, 75)
                kills += rc == 75
            else:
                run_experiment(str(toml), "smoke", out, log=lambda s: None)
        assert [{k: r[k] for k in keep} for r in read_table(out / "results.csv")] == expect
    with capsys.disabled():
        print(f"\n{kills} kills over {runs} smoke repros, every one rerun to the clean table")


def test_an_error_that_is_not_a_divergence_is_not_cached_as_a_failed_cell(tmp_path, monkeypatch):
    from unrolled import api

    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY)
    out = tmp_path / "smoke" / "tiny"

    def locked(*a, **kw):
        raise UsageError("runs/x is being written by another process (PID 1)")

    monkeypatch.setattr(api, "train", locked)
    with pytest.raises(UsageError, match="PID 1"):
        run_experiment(str(toml), "smoke", out, log=lambda s: None)
    assert not [p for p in (out / "cells").glob("*alista*")], "the error was cached as a result"


@pytest.mark.parametrize("old, new, words", [
    ("lr = 2e-3", "lr = inf", ["alista", "lr=inf", "finite"]),
    ("batch = 64", "batch = 0", ["batch=0"]),
    ("samples = 1920", "samples = 0", ["samples=0", "one batch"]),
    ("seed = [0]", "seed = []", ["no cell"]),
    ("K = 3", "K = 100000000", ["K=100000000", "1..1000"]),
])
def test_a_bad_experiment_fails_before_the_first_training(tmp_path, old, new, words):
    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY.replace(old, new))
    with pytest.raises(UsageError) as e:
        run_experiment(str(toml), "smoke", tmp_path / "smoke" / "tiny", log=lambda s: None)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert not (tmp_path / "smoke" / "_train").exists() and not (tmp_path / "smoke" / "tiny").exists()


@pytest.mark.parametrize("name", NAMES)
def test_every_experiment_validates_at_every_budget(name, tmp_path):
    import torch

    from unrolled.repro.runner import Runner

    exp = load(name)
    for b in ("smoke", "quick", "paper"):
        budget = exp.budget(b)
        Runner(exp, budget, tmp_path, torch.device("cpu")).validate(exp.cells(budget), exp.active_models(budget))


def test_a_cell_above_0_db_is_reported_as_diverged_not_compared():
    from unrolled.repro.report import paper_markdown

    base = dict(where={"n": 2000}, method="alista-at", paper=-26.1, pm=0, metric="nmse_db", floor=-45.9, status="",
                layer=None, sample=-31.4, K=16)
    text, worse = paper_markdown([{**base, "ours": 68.9, "diff": None, "diverged": True},
                                  {**base, "method": "alista", "ours": -25.0, "diff": 1.1, "diverged": False}])
    bad, good = [line for line in text.splitlines() if line.startswith("| n=2000")]
    assert "| diverged | — | — |" in bad and "aggregate +68.9 dB, worse than x̂ = 0" in bad and "68.9 |" not in bad
    assert "| -25.0 | +1.1 |" in good
    assert any("ours diverged (aggregate +68.9 dB)" in w for w in worse)


def test_a_cell_with_test_vectors_above_0_db_says_how_many():
    from unrolled.repro.report import paper_markdown

    base = dict(where={"n": 2000}, method="na-alista", paper=-32.5, pm=0, metric="nmse_db", floor=-45.9, status="",
                layer=None, sample=-9.9, K=16, ours=-9.6, diff=22.9, diverged=False)
    text, _ = paper_markdown([{**base, "over_0db": 1}, {**base, "method": "alista-at", "over_0db": 0}])
    flagged, clean = [line for line in text.splitlines() if line.startswith("| n=2000")]
    assert "**1 test vector(s) above 0 dB**" in flagged and "above 0 dB" not in clean


def test_paper_numbers_without_a_result_are_one_line_not_table_rows():
    from unrolled.repro.report import NO_RESULT, paper_markdown

    base = dict(where={"row": "j"}, method="lista", paper=-32.4, pm=0, metric="nmse_db", floor=None, status="",
                layer=16, sample=None, K=16, ours=-34.2, diff=-1.8, diverged=False)
    missing = {**base, "where": {"row": "b"}, "ours": None, "diff": None, "status": NO_RESULT}
    text, worse = paper_markdown([missing, base])
    rows = [line for line in text.splitlines() if line.startswith("| row=")]
    assert rows == [rows[0]] and "| row=j | lista | -32.4 | -34.2 | -1.8 |" in rows[0]
    assert f"1 of 2 paper numbers have no result: {NO_RESULT} (row=b lista)." in text and not worse
    text, _ = paper_markdown([missing])
    assert "| cell |" not in text and "1 of 1 paper numbers have no result" in text
