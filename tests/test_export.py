"""Every registered model exports (torch.export, ONNX) and loads back with the same outputs.

Under tracing, scripting, compiling and exporting the ops run the reference maths
(:mod:`unrolled.ops.dispatch`), so an exported model equals the eager one whatever backend
is selected: float32, outputs within ``RTOL = 1e-5`` of the largest output. TorchScript
cannot compile the layer loop and refuses with one line.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from unrolled import ops
from unrolled.errors import UsageError
from unrolled.models import MODELS, build
from unrolled.problem import Problem

RTOL = 1e-5
K = 3
NAMES = sorted(MODELS)


@pytest.fixture(scope="module")
def problem(small_problem) -> Problem:
    return small_problem


@pytest.fixture(scope="module")
def y(problem):
    return problem.sample(7, torch.Generator().manual_seed(11))[1]


def trained_like(name: str, problem: Problem) -> torch.nn.Module:
    model = build(name, problem, {"K": K}).eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + 0.05 * torch.randn(p.shape, generator=g))
    return model


def assert_same(got, want) -> None:
    got = torch.as_tensor(np.asarray(got)) if not isinstance(got, torch.Tensor) else got
    err, scale = float((got - want).abs().max()), float(want.abs().max())
    assert scale > 0 and err <= RTOL * scale, f"max |difference| {err:.3g} > {RTOL:g} x {scale:.3g}"


@pytest.mark.parametrize("name", NAMES)
def test_torch_export_round_trip(name, problem, y, tmp_path):
    model = trained_like(name, problem)
    with torch.no_grad():
        want = model(y)
        program = torch.export.export(model, (y,))
        torch.export.save(program, tmp_path / "model.pt2")
        again = torch.export.load(tmp_path / "model.pt2")
        assert_same(again.module()(y), want)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_round_trip(name, problem, y, tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    model = trained_like(name, problem)
    with torch.no_grad():
        want = model(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (y,), tmp_path / "model.onnx", dynamo=True, verbose=False)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    assert_same(session.run(None, {session.get_inputs()[0].name: y.numpy()})[0], want)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the shape checks become constants, as they should
@pytest.mark.parametrize("backend", ["torch"] + (["numba"] if ops.numba_available() else []))
@pytest.mark.parametrize("name", ["alista", "aglista", "na-alista", "lista-cpss"])
def test_trace_on_a_fast_backend_records_the_reference(name, backend, problem, y):
    """The fast nodes read parameters as numbers; a traced graph records the reference maths instead."""
    model = trained_like(name, problem)
    with ops.backend(backend), torch.no_grad():
        traced = torch.jit.trace(model, (y,), check_trace=False)
        want = model(y)
        _, y2 = problem.sample(5, torch.Generator().manual_seed(12))
        assert_same(traced(y), want)
        # a traced graph freezes shapes and the batch-independent parts only: another batch of the same size
        assert_same(traced(torch.cat([y2, y[:2]])), model(torch.cat([y2, y[:2]])))


def test_script_refuses_in_one_line(problem):
    with pytest.raises(UsageError) as info:
        torch.jit.script(build("alista", problem, {"K": K}))
    assert "\n" not in str(info.value) and "torch.export" in str(info.value)


def test_compile_matches_eager(problem, y):
    model = trained_like("alista", problem)
    with torch.no_grad():
        compiled = torch.compile(model, backend="eager", fullgraph=True)  # dynamo capture without a C compiler
        assert_same(compiled(y), model(y))
