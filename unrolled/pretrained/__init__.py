"""The pretrained zoo: small trained models shipped inside the package (never downloaded).

``unrolled.pretrained("alista-250x500-p0.1-40db")`` returns a :class:`~unrolled.Run` (model,
problem, config, result), like :func:`unrolled.load`. Each entry of ``index.json`` carries its
problem spec (A is regenerated from the spec's seed and refused unless its SHA-256 matches),
the model config, the training settings, the commit it was trained at and its test NMSE, which
:func:`check_entry` reproduces. Entries without weights are listed as ``not trained``
(``pretrained list``): nothing pretends to be a model. CLI: ``unrolled pretrained list | show
NAME | eval NAME``.

Only what cannot be regenerated is shipped: ``weights/NAME.safetensors`` (with its SHA-256) holds
the model's parameters, never its buffers (A, ALISTA's analytic W, NA-ALISTA's ``feature_scale``
from its fixed calibration batch), which are deterministic functions of the problem spec and the
model config. They are rebuilt on load and refused unless their SHA-256 (``buffers_sha256``)
matches the one of the buffers the model was trained with. An ALISTA file is 32 numbers (2.5 kB),
an NA-ALISTA one 85k (0.34 MB); LAMP's learned ``B`` (m x n, float32) is its whole size (0.5 MB at
250x500, 2.0 MB at 250x2000). Models with a learned matrix per layer (LISTA: two n x m matrices, 16 times)
are left out to keep the package small.
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
FORMAT = "unrolled-pretrained-v2"  # parameters only; the buffers are regenerated
__all__ = ["add", "buffers_sha256", "check_entry", "entries", "entry", "load", "matrix_sha256", "parameters"]


def entries() -> dict[str, dict]:
    """Every zoo entry by name (trained or not), as ``index.json`` lists them."""
    return json.loads(INDEX.read_text())["entries"]


def entry(name: str) -> dict:
    return entries()[choice(name, entries(), "pretrained model")]


def matrix_sha256(A: torch.Tensor) -> str:
    """SHA-256 of A as float64 bytes, row-major (the regenerated matrix must match it bit for bit)."""
    return hashlib.sha256(A.double().contiguous().numpy().tobytes()).hexdigest()


def parameters(model) -> dict[str, torch.Tensor]:
    """The tensors a zoo file holds: the model's parameters, by state-dict name."""
    names = {k for k, _ in model.named_parameters()}
    return {k: v for k, v in model.state_dict().items() if k in names}


def buffers(model) -> dict[str, torch.Tensor]:
    """The state dict's other tensors (A, W, ...): regenerated from the problem and config, never stored."""
    names = {k for k, _ in model.named_parameters()}
    return {k: v for k, v in model.state_dict().items() if k not in names}


def buffers_sha256(model) -> str:
    """SHA-256 of the model's buffers: name, dtype, shape and bytes of each, in name order."""
    h = hashlib.sha256()
    for k, v in sorted(buffers(model).items()):
        h.update(f"{k}:{v.dtype}:{tuple(v.shape)}\n".encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def problem_of(e: dict):
    """The entry's problem, regenerated from its spec and refused unless A's SHA-256 matches."""
    from ..problem import Problem, ProblemSpec

    problem = Problem(ProblemSpec(**e["problem"]))
    check(matrix_sha256(problem.A) == e["a_sha256"],
          f"the regenerated A of {e['name']} differs from the one it was trained for (SHA-256 mismatch); "
          f"this numpy/torch produce another matrix from the same seed")
    return problem


def model_of(e: dict, problem):
    """The entry's model, built from its problem and config (fields added after it was trained at the
    values it was trained with, ``recipes.LATER_FIELDS``), refused unless its regenerated buffers
    hash as the ones it was trained with; its parameters are still the initial ones."""
    from ..models import build
    from ..training.rundir import with_later_fields

    config = with_later_fields({"model": e["model"], "model_config": dict(e["model_config"])})["model_config"]
    model = build(e["model"], problem, config)
    check(buffers_sha256(model) == e["buffers_sha256"],
          f"the regenerated buffers ({', '.join(sorted(buffers(model)))}) of {e['name']} differ from the ones it "
          f"was trained with (SHA-256 mismatch); this code builds another model from the same config")
    return model


def load_parameters(model, path: Path, sha256: str) -> None:
    """Load a zoo file's parameters into ``model``, refusing a file whose hash or tensors do not fit it."""
    from ..io import load_safetensors

    state, own = load_safetensors(path, sha256), parameters(model)
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    check(not missing and not extra, f"{path} does not fit model {model.name!r} (missing {missing[:3]}, "
                                     f"unexpected {extra[:3]}; a zoo file holds the parameters only)")
    for k, v in state.items():
        check(v.shape == own[k].shape,
              f"{path}: tensor {k} has shape {tuple(v.shape)}, model expects {tuple(own[k].shape)}")
    model.load_state_dict({**buffers(model), **{k: v.to(own[k].dtype) for k, v in state.items()}})


def load(name: str, device: str | torch.device = "cpu"):
    """The trained entry ``name`` as a :class:`~unrolled.Run` (``dir`` is ``None``)."""
    from ..api import Run

    e = entry(name)
    check(e.get("weights"), f"{name} is listed but not trained yet; `unrolled pretrained list` shows the trained ones")
    problem = problem_of(e)
    model = model_of(e, problem)
    load_parameters(model, HERE / e["weights"], e["weights_sha256"])
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


def write_parameters(model, name: str) -> tuple[str, str]:
    """Write ``weights/NAME.safetensors`` (parameters only); returns its path in the zoo and SHA-256."""
    from ..io import save_safetensors

    weights = f"weights/{name}.safetensors"
    meta = {"format": FORMAT, "model": model.name, "buffers_sha256": buffers_sha256(model)}
    return weights, save_safetensors(HERE / weights, parameters(model), meta)


def add(run_dir: str | Path, name: str, commit: str, first: int = 1000) -> dict:
    """Add a finished run to the zoo (maintainers): its parameters written, spec, A's hash, the hash of
    the buffers, training settings, ``commit`` and the test NMSE (full test set and its first ``first``
    vectors) recorded in ``index.json``. Refused unless the model rebuilt from the spec alone has the
    run's buffers bit for bit (what ships must be what was trained)."""
    from ..api import load as load_run
    from ..io import write_json
    from ..models import build
    from ..problem import Problem, ProblemSpec

    run = load_run(run_dir)
    spec = {k: v for k, v in vars(run.problem.spec).items() if v is not None}
    cfg, res = run.config, run.result
    rebuilt = build(cfg["model"], Problem(ProblemSpec(**spec)), cfg["model_config"])
    check(buffers_sha256(rebuilt) == buffers_sha256(run.model),
          f"{run_dir}: the buffers rebuilt from its problem spec and config differ from the trained model's; "
          f"it cannot be shipped without them")
    weights, digest = write_parameters(run.model, name)
    e = {"name": name, "model": cfg["model"], "model_config": cfg["model_config"], "problem": spec,
         "a_sha256": matrix_sha256(run.problem.A), "buffers_sha256": buffers_sha256(run.model),
         "weights": weights, "weights_sha256": digest,
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
