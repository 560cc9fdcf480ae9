"""The pretrained zoo (unrolled/pretrained/): every trained entry reproduces its recorded test NMSE,
its A is regenerated from the seed and checked by hash, its file holds parameters only (the buffers
are rebuilt and checked by hash), untrained entries say so."""

from __future__ import annotations

import json
import shutil

import pytest
from safetensors import safe_open

import unrolled as ur
from unrolled import Problem, ProblemSpec, UsageError
from unrolled import pretrained as zoo
from unrolled.cli import main
from unrolled.cli.pretrained import TOLERANCE_DB
from unrolled.models import build

TRAINED = [n for n, e in zoo.entries().items() if e.get("weights")]
CHEAPEST = "alista-250x500-p0.1-40db"  # the default suite's re-check of a shipped entry (about 2 s)


def test_list_shows_every_entry_and_untrained_ones_as_such(capsys):
    assert main(["pretrained", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(zoo.entries())
    for line in lines:
        name = line.split()[0]
        assert ("not trained yet" in line) == (name not in TRAINED)


def check_reproduced(name):
    e = zoo.entry(name)
    assert (zoo.HERE / e["weights"]).stat().st_size < 4_000_000  # small models only
    want, got = zoo.check_entry(name, 1000)
    assert abs(got - want) <= TOLERANCE_DB


def test_a_shipped_entry_reproduces_its_nmse_on_the_first_1000(capsys):
    check_reproduced(CHEAPEST)
    assert main(["pretrained", "eval", CHEAPEST, "--test-size", "1000"]) == 0
    assert "reproduced" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED)
def test_every_trained_entry_reproduces_its_nmse_on_the_first_1000(name):
    check_reproduced(name)


@pytest.mark.parametrize("name", TRAINED)
def test_a_shipped_file_holds_the_parameters_and_no_buffer(name):
    """Tensor names do not depend on the sizes: the entry's model config on a small problem names them."""
    e = zoo.entry(name)
    model = build(e["model"], Problem(ProblemSpec(m=20, n=40, p=0.1, snr=40, seed=3)), e["model_config"])
    with safe_open(zoo.HERE / e["weights"], "pt") as f:
        keys = set(f.keys())
    assert keys == set(zoo.parameters(model)) and not keys & set(zoo.buffers(model))
    assert zoo.buffers(model)  # A at least: something is regenerated rather than shipped


def test_untrained_entry_is_refused_in_one_line(monkeypatch):
    listed = zoo.entries()
    name = next(iter(listed))  # every shipped entry is trained: list one without its weights
    untrained = {**listed, name: {k: v for k, v in listed[name].items() if k != "weights"}}
    monkeypatch.setattr(zoo, "entries", lambda: untrained)
    with pytest.raises(UsageError, match="not trained yet"):
        ur.pretrained(name)
    assert main(["pretrained", "eval", "no-such-model"]) == 2


@pytest.fixture
def tiny_zoo(tmp_path, monkeypatch):
    """A copy of the zoo in tmp_path with one tiny entry added from a real (short) training."""
    root = tmp_path / "zoo"
    root.mkdir()
    shutil.copy(zoo.INDEX, root / "index.json")
    monkeypatch.setattr(zoo, "HERE", root)
    monkeypatch.setattr(zoo, "INDEX", root / "index.json")
    problem = Problem(ProblemSpec(m=20, n=40, p=0.1, snr=40, seed=3, val_size=50, test_size=300))
    ur.train(problem, "alista", {"K": 3}, budget=1000, out=tmp_path / "run", batch=100)
    zoo.add(tmp_path / "run", "tiny", commit="test", first=100)
    return root


def test_an_added_entry_round_trips(tiny_zoo, capsys):
    e = zoo.entry("tiny")
    assert e["a_sha256"] == zoo.matrix_sha256(Problem(ProblemSpec(**e["problem"])).A)
    want, got = zoo.check_entry("tiny")
    assert got == want  # same weights, same regenerated test set: the same number
    assert zoo.check_entry("tiny", 100)[1] == e["test_nmse_db_first"]["100"]
    run = ur.pretrained("tiny")
    x, y = run.problem.test()
    assert run.predict(y).shape == x.shape
    assert main(["pretrained", "eval", "tiny"]) == 0 and "reproduced" in capsys.readouterr().out
    assert main(["pretrained", "show", "tiny"]) == 0 and json.loads(capsys.readouterr().out)["commit"] == "test"
    assert main(["pretrained", "eval", "tiny", "--test-size", "7"]) == 2


def test_a_matrix_that_does_not_regenerate_is_refused(tiny_zoo):
    index = json.loads(zoo.INDEX.read_text())
    index["entries"]["tiny"]["a_sha256"] = "0" * 64
    zoo.INDEX.write_text(json.dumps(index))
    with pytest.raises(UsageError, match="SHA-256 mismatch"):
        ur.pretrained("tiny")


def test_an_added_file_holds_only_what_cannot_be_regenerated(tiny_zoo):
    e = zoo.entry("tiny")
    with safe_open(tiny_zoo / e["weights"], "pt") as f:
        assert set(f.keys()) == {f"layers.{i}.{k}" for i in range(3) for k in ("gamma", "theta")}


def test_a_buffer_that_regenerates_differently_is_refused_in_one_line(tiny_zoo, monkeypatch, capsys):
    from unrolled.models import alista

    real = alista.analytic_weights

    def one_entry_off(A, method):  # W[0, 0] off by 1e-5 relative, still visible in float32
        out = real(A, method)
        out.W = out.W.clone()
        out.W[0, 0] *= 1 + 1e-5
        return out

    monkeypatch.setattr(alista, "analytic_weights", one_entry_off)
    with pytest.raises(UsageError, match=r"regenerated buffers \(A, W\) of tiny differ .*SHA-256 mismatch"):
        ur.pretrained("tiny")
    assert main(["pretrained", "eval", "tiny"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "regenerated buffers (A, W)" in err


def test_tampered_weights_are_refused(tiny_zoo):
    path = tiny_zoo / zoo.entry("tiny")["weights"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(UsageError):
        ur.pretrained("tiny")
