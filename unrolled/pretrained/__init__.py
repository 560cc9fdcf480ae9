"""The pretrained zoo: small trained models shipped inside the package (never downloaded).

``unrolled.pretrained("alista-250x500-p0.1-40db")`` returns a :class:`~unrolled.Run` (model,
problem, config, result), like :func:`unrolled.load`. Each entry of ``index.json`` carries its
problem spec (A is regenerated from the spec's seed and refused unless its SHA-256 matches),
the model config, the training settings, the commit it was trained at and its test NMSE, which
:func:`check` reproduces. Weights are ``weights/NAME.safetensors`` with their SHA-256. Entries
without weights are listed as ``not trained`` (``pretrained list``): nothing pretends to be a
model. Large learned-matrix models (LISTA: two n x m matrices) are left out to keep the package
small. CLI: ``unrolled pretrained list | show NAME | eval NAME``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import types
from pathlib import Path

import torch

from ..errors import check, choice

HERE = Path(__file__).parent
INDEX = HERE / "index.json"
__all__ = ["add", "check_entry", "entries", "entry", "load", "matrix_sha256"]


def entries() -> dict[str, dict]:
    """Every zoo entry by name (trained or not), as ``index.json`` lists them."""
    return json.loads(INDEX.read_text())["entries"]


def entry(name: str) -> dict:
    return entries()[choice(name, entries(), "pretrained model")]


def matrix_sha256(A: torch.Tensor) -> str:
    """SHA-256 of A as float64 bytes, row-major (the regenerated matrix must match it bit for bit)."""
    return hashlib.sha256(A.double().contiguous().numpy().tobytes()).hexdigest()


def problem_of(e: dict):
    """The entry's problem, regenerated from its spec and refused unless A's SHA-256 matches."""
    from ..problem import Problem, ProblemSpec

    problem = Problem(ProblemSpec(**e["problem"]))
    check(matrix_sha256(problem.A) == e["a_sha256"],
          f"the regenerated A of {e['name']} differs from the one it was trained for (SHA-256 mismatch); "
          f"this numpy/torch produce another matrix from the same seed")
    return problem


def load(name: str, device: str | torch.device = "cpu"):
    """The trained entry ``name`` as a :class:`~unrolled.Run` (``dir`` is ``None``)."""
    from ..api import Run
    from ..models import build
    from ..training.rundir import load_weights

    e = entry(name)
    check(e.get("weights"), f"{name} is listed but not trained yet; `unrolled pretrained list` shows the trained ones")
    problem = problem_of(e)
    model = build(e["model"], problem, e["model_config"])
    load_weights(model, HERE / e["weights"], e["weights_sha256"])
    config = {"model": e["model"], "model_config": e["model_config"], "schedule": e["training"]["schedule"],
              "options": {"seed": e["training"]["seed"]}, "pretrained": name}
    result = {"samples": e["training"]["budget"], "seconds": e["training"]["seconds"], "device": "cpu",
              "weights_sha256": e["weights_sha256"]}
    return Run(model.to(device).eval(), problem, config, result)


def test_nmse(run, test_size: int | None = None) -> float:
    """Aggregate NMSE (dB) of the final layer on the problem's fixed test set (its first ``test_size``)."""
    from ..metrics import nmse_db

    x, y = run.problem.test(test_size, torch.float64)
    model = run.model
    with torch.inference_mode():
        x_hat = torch.cat([model(yc.to(model.A.dtype)).double() for yc in y.split(2000)])
    return nmse_db(x_hat, x)


def check_entry(name: str, test_size: int | None = None) -> tuple[float, float]:
    """``(recorded, reproduced)`` test NMSE of an entry: on the full test set they must agree to 0.05 dB;
    ``test_size`` re-checks against the recorded NMSE of the first vectors (``test_nmse_db_first``)."""
    e = entry(name)
    run = load(name)
    first = e.get("test_nmse_db_first", {})
    check(test_size is None or str(test_size) in first,
          f"{name} records its NMSE on the whole test set and on the first {', '.join(first)} vectors; "
          f"give one of those as the test size")
    want = e["test_nmse_db"] if test_size is None else first[str(test_size)]
    return want, test_nmse(run, test_size)


def add(run_dir: str | Path, name: str, commit: str, first: int = 1000) -> dict:
    """Add a finished run to the zoo (maintainers): weights copied, spec, A's hash, training settings,
    ``commit`` and the test NMSE (full test set and its first ``first`` vectors) recorded in ``index.json``."""
    from ..api import load as load_run
    from ..io import sha256, write_json

    run = load_run(run_dir)
    spec = {k: v for k, v in vars(run.problem.spec).items() if v is not None}
    weights = f"weights/{name}.safetensors"
    (HERE / "weights").mkdir(exist_ok=True)
    (HERE / weights).write_bytes(Path(run.dir.weights_file).read_bytes())
    cfg, res = run.config, run.result
    e = {"name": name, "model": cfg["model"], "model_config": cfg["model_config"], "problem": spec,
         "a_sha256": matrix_sha256(run.problem.A), "weights": weights, "weights_sha256": sha256(HERE / weights),
         "training": {"schedule": cfg["schedule"], "budget": res["samples"], "seconds": round(res["seconds"], 1),
                      "seed": cfg["options"]["seed"], "options": cfg["options"], "stages": cfg.get("stages")},
         "commit": commit, "torch": torch.__version__,
         "test_nmse_db": test_nmse(run), "test_nmse_db_first": {str(first): test_nmse(run, first)}}
    index = json.loads(INDEX.read_text())
    index["entries"][name] = e
    write_json(INDEX, index)
    return e


class _Callable(types.ModuleType):
    """``unrolled.pretrained(NAME)`` is :func:`load`; the module keeps its functions."""

    def __call__(self, name: str, device: str | torch.device = "cpu"):
        return load(name, device)


sys.modules[__name__].__class__ = _Callable
