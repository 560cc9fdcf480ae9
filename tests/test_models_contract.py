"""Every registered model honours the UnrolledNet contract (registration alone enrols a model).

Odd, non-square sizes (23 x 41) and float64 unless a test is about dtypes; K = 3 keeps it fast.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from unrolled import ops
from unrolled.errors import UsageError
from unrolled.io import load_safetensors, save_safetensors
from unrolled.models import MODELS, base, build
from unrolled.models.design_space import dense_gates, lfista_gates, lista_gates
from unrolled.problem import Problem

NAMES = sorted(MODELS)
K = 3
F64 = torch.float64


@pytest.fixture(scope="module")
def problem(small_problem) -> Problem:
    return small_problem


@pytest.fixture(scope="module")
def batch(problem):
    return problem.sample(7, torch.Generator().manual_seed(11), F64)


@pytest.mark.parametrize("name", NAMES)
def test_shapes_layers_and_depth(name, problem, batch):
    _, y = batch
    model = build(name, problem, {"K": K}, F64)
    out = model(y)
    assert out.shape == (y.shape[0], problem.n) and out.dtype == F64
    outs = model(y, all_layers=True)
    assert len(outs) == K + 1
    assert torch.equal(outs[0], torch.zeros_like(outs[0]))
    assert torch.equal(outs[-1], out)
    for t in range(1, K + 1):
        assert torch.equal(model(y, depth=t), outs[t])
    assert torch.isfinite(out).all()


@pytest.fixture(params=["reference", "torch", "numba"])
def backend(request):
    """Every CPU path: the reference maths, the fast torch nodes (what CUDA runs) and the Numba kernels."""
    if request.param == "numba" and not ops.numba_available():
        pytest.skip("Numba is not installed")
    with ops.backend(request.param):
        yield request.param


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_parameter(name, problem, batch, backend):
    x, y = batch
    model = build(name, problem, {"K": K}, F64)
    params = dict(model.named_parameters())
    if not params:
        pytest.skip(f"{name} has no trainable parameter")
    ((model(y) - x) ** 2).sum().backward()
    for pname, p in params.items():
        assert p.grad is not None, f"{name}.{pname} is not in the graph"
        assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"


@pytest.mark.parametrize("name", NAMES)
def test_layer_parameters_cover_each_parameter_once(name, problem):
    model = build(name, problem, {"K": K}, F64)
    seen = [id(p) for t in range(1, K + 1) for p in model.layer_parameters(t)]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in model.parameters()}
    # layer t >= 2 owns exactly self.layers[t-1]; everything else is shared and goes to layer 1
    for t in range(2, K + 1):
        own = {id(p) for p in model.layers[t - 1].parameters()} if len(model.layers) else set()
        assert {id(p) for p in model.layer_parameters(t)} == own


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_and_independent_of_global_rng(name, problem, batch):
    _, y = batch
    torch.manual_seed(0)
    a = build(name, problem, {"K": K}, F64)(y)
    torch.manual_seed(1)
    state = torch.get_rng_state()
    b = build(name, problem, {"K": K}, F64)(y)
    assert torch.equal(a, b)
    assert torch.equal(state, torch.get_rng_state()), "building a model consumed the global RNG"


@pytest.mark.parametrize("name", NAMES)
def test_inference_path_matches_autograd_path(name, problem, batch, backend, perturb):
    """Inference may reuse buffers and run other nodes than training: the same values to 1e-12 relative."""
    _, y = batch
    model = build(name, problem, {"K": K}, F64)
    perturb(model)
    with torch.enable_grad():
        a = model(y, all_layers=True)
    with torch.inference_mode():
        b = model(y, all_layers=True)
    for t, (u, v) in enumerate(zip(a, b)):
        assert torch.allclose(u, v, rtol=1e-12, atol=1e-14), f"layer {t} differs between training and inference"


@pytest.mark.parametrize("name", NAMES)
def test_empty_single_and_strided_batches(name, problem, batch, perturb):
    # The kernels' fast paths take contiguous batches of any size; an empty batch trains (zero
    # gradients), one sample matches its row of a batch, a strided y takes the general path.
    x, y = batch
    model = build(name, problem, {"K": K}, F64)
    perturb(model)
    out = model(y[:0])
    assert out.shape == (0, problem.n)
    if out.requires_grad:
        ((out - x[:0]) ** 2).sum().backward()
    with torch.no_grad():
        whole = model(y)
        assert torch.allclose(model(y[2:3]), whole[2:3], rtol=1e-12, atol=1e-14)
        strided = torch.empty(y.shape[1], y.shape[0], dtype=y.dtype).T.copy_(y)
        assert not strided.is_contiguous()
        assert torch.allclose(model(strided), whole, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_cpu_blocks_match_one_batch(name, problem, batch, monkeypatch, perturb):
    """Inference on the CPU runs big batches in blocks of samples; every sample's result is the same."""
    if ops.active() == "reference":
        pytest.skip("the reference backend runs a batch whole")
    _, y = batch
    model = build(name, problem, {"K": K}, F64)
    perturb(model)
    with torch.inference_mode():
        whole = model(y, all_layers=True)
        monkeypatch.setattr(base, "BLOCK_BYTES", 3 * problem.n * 8)  # blocks of 3, 3 and 1 samples
        assert base.block_rows(problem.n, y) == 3
        blocked = model(y, all_layers=True)
        assert torch.equal(model(y), blocked[-1])
    for t, (u, v) in enumerate(zip(whole, blocked, strict=True)):
        # up to rounding: BLAS may sum a product in another order for another number of rows
        assert torch.allclose(u, v, rtol=1e-12, atol=1e-14), f"layer {t} differs when run in blocks"


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip(name, problem, batch, tmp_path, perturb):
    _, y = batch
    model = build(name, problem, {"K": K}, F64)
    perturb(model)
    config_json = json.dumps(dataclasses.asdict(model.config))
    save_safetensors(tmp_path / "m.safetensors", model.state_dict(), {"model": name, "config": config_json})
    again = build(name, problem, json.loads(config_json), F64)
    again.load_state_dict(load_safetensors(tmp_path / "m.safetensors"))
    assert torch.equal(model(y), again(y))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(name, dtype, problem, batch):
    _, y = batch
    model = build(name, problem, {"K": K}, dtype)
    assert all(t.dtype == dtype for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())
    with torch.no_grad():
        out = model(y.to(dtype))
        ref = build(name, problem, {"K": K}, F64)(y)
    assert out.dtype == dtype and torch.isfinite(out).all()
    # float32 rounding only: relative to the output's scale, far above float32 epsilon, far below O(1)
    assert float((out.double() - ref).abs().max()) <= 1e-3 * max(1.0, float(ref.abs().max()))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", NAMES)
def test_cuda(name, problem, batch):
    _, y = batch
    model = build(name, problem, {"K": K}, F64)
    with torch.no_grad():
        ref = model(y)
        out = model.to("cuda")(y.cuda())
    assert out.device.type == "cuda"
    assert float((out.cpu() - ref).abs().max()) <= 1e-9


# -- design-space variants beyond the registered defaults ------------------------------------

VARIANTS = [
    {"injection": "naive", "gates": "dense"},
    {"injection": "momentum", "gates": "dense"},
    {"injection": "momentum", "gates": "lfista"},
    {"neurons": "relu"},
    {"neurons": "soft,leaky,relu", "gates": "dense", "ss": "percentage"},
    {"neurons": ["leaky", "soft", "soft"], "ss": "count", "ss.ramp": 0.5},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={v[k]}" for k in v))
def test_design_space_variants(variant, problem, batch):
    x, y = batch
    model = build("lwa", problem, dict(variant, K=K), F64)  # gates by pattern name, as the CLI passes them
    json.dumps(dataclasses.asdict(model.config))
    outs = model(y, all_layers=True)
    assert len(outs) == K + 1 and outs[-1].shape == x.shape
    ((outs[-1] - x) ** 2).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    seen = [id(p) for t in range(1, K + 1) for p in model.layer_parameters(t)]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())


@pytest.mark.parametrize("variant", [{"matrix": "untied"}, {"matrix": "fixed"}, {"denoiser": "soft"},
                                     {"denoiser": "soft", "matrix": "untied"}], ids=str)
def test_lamp_variants(variant, problem, batch, perturb):
    x, y = batch
    model = build("lamp", problem, dict(variant, K=K), F64)
    perturb(model)
    outs = model(y, all_layers=True)
    assert len(outs) == K + 1 and outs[-1].shape == x.shape
    ((outs[-1] - x) ** 2).sum().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    seen = [id(p) for t in range(1, K + 1) for p in model.layer_parameters(t)]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())


# -- bad configurations fail with one line that lists what is valid ---------------------------

def raises_listing(fn, *needles: str) -> str:
    with pytest.raises(UsageError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    return msg


def test_unknown_model_lists_models(problem):
    raises_listing(lambda: build("lista-xyz", problem), "lista-xyz", *NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_field_lists_fields(name, problem):
    fields = [f.name for f in dataclasses.fields(MODELS[name].Config)]
    raises_listing(lambda: build(name, problem, {"K": K, "colour": 1}), "colour", *fields)


@pytest.mark.parametrize("name", NAMES)
def test_depth_zero_is_refused(name, problem):
    raises_listing(lambda: build(name, problem, {"K": 0}), "K=0", ">= 1")


def test_na_alista_hidden_size(problem):
    raises_listing(lambda: build("na-alista", problem, {"K": K, "H": 0}), "H=0", ">= 1")
    raises_listing(lambda: build("na-alista", problem, {"K": K, "head": "mlp"}), "mlp", "paper", "reference")
    raises_listing(lambda: build("na-alista", problem, {"K": K, "inputs": "x"}), "both", "r", "u")


@pytest.mark.parametrize("gates, needle", [
    ([[1, 0], [0, 1]], "got 2 rows"),
    ([[1, 0, 0], [0, 1, 0], [0, 1]], "lengths [2, 3]"),
    ([[1, 1, 0], [0, 1, 0], [0, 1, 1]], "gates[0][1] = 1 is a gate into the future"),
    ([[1, 0, 0], [0, 1, 0], [0, 2, 1]], "gates[2][1] = 2 is not 0 or 1"),
    ([[1, 0, 0], [0, 1, 0], [0, 0.5, 1]], "is not 0 or 1"),
    ([[1, 0, 0], [0, 0, 0], [0, 0, 1]], "gates[1][1] = 0"),
    ([[1, 0, 0], [0, 1, 0], [1, 0, 1]], "gates[2][0] = 1 connects x^(0)"),
])
@pytest.mark.parametrize("name", ["lwa", "dense-lista"])
def test_bad_gate_matrices(name, gates, needle, problem):
    raises_listing(lambda: build(name, problem, {"K": 3, "gates": gates}), needle, "3x3 0/1 matrix", "i <= k")


def test_bad_neurons_and_injection(problem):
    raises_listing(lambda: build("lwa", problem, {"K": K, "neurons": "tanh"}), "tanh", "soft", "relu", "leaky")
    raises_listing(lambda: build("lwa", problem, {"K": K, "neurons": "soft,relu"}), "3 comma-separated", "got 2")
    raises_listing(lambda: build("lwa", problem, {"K": K, "injection": "sum"}), "sum", "lwa", "naive", "momentum")


def test_gates_from_the_command_line(problem):
    """A JSON string (as the CLI passes it) is a valid gate matrix."""
    model = build("lwa", problem, {"K": K, "gates": json.dumps(lfista_gates(K))})
    assert model.config.gates == lfista_gates(K)
    with torch.no_grad():
        assert math.isfinite(float(model(torch.zeros(2, problem.m)).sum()))


@pytest.mark.parametrize("name, pattern", [("lista", lista_gates), ("lfista", lfista_gates), ("dense", dense_gates)])
def test_gates_by_pattern_name(name, pattern, problem):
    assert build("lwa", problem, {"K": K, "gates": name}).config.gates == pattern(K)
    raises_listing(lambda: build("lwa", problem, {"K": K, "gates": "fista"}), "'fista'", "lista", "lfista", "dense")
