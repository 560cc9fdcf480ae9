"""The oracle test: for every registered model, the fast backends equal the reference maths.

float64 at odd sizes (batch 7, 23 x 41), every parameter moved off its initial value, K = 4.
Outputs of every layer and the gradients of every parameter (and of ``y``) under the
``torch`` and ``numba`` backends must equal those of the ``reference`` backend
(:mod:`unrolled.ops.reference`, plain autograd) to ``RTOL = 1e-10`` relative to the largest
reference value: the fast paths reorder sums and fuse multiply-adds (about 1e-15 per
operation), while a wrong gradient or a missed branch shows at 1e-3 or more.
"""

from __future__ import annotations

import pytest
import torch

from unrolled import ops
from unrolled.models import MODELS, build

RTOL = 1e-10
K = 4
F64 = torch.float64
FAST = ["torch"] + (["numba"] if ops.numba_available() else [])
# the registry's defaults, plus the modes a default does not reach
VARIANTS = [(name, {}) for name in sorted(MODELS)] + [
    ("alista", {"ss": "count", "ss.theta": True}),
    ("alista-at", {"ss": "none"}),
    ("aglista", {"ss": "count"}),
    ("na-alista", {"head": "reference", "ss.theta": True}),
    ("na-alista", {"inputs": "u", "ss": "percentage"}),
    ("na-alista", {"inputs": "r", "ss": "none"}),
    ("lista", {"tied": True, "ss": "percentage"}),
    ("lwa", {"injection": "momentum", "gates": "lfista", "neurons": "soft,relu,leaky,soft"}),
    ("lamp", {"denoiser": "soft", "matrix": "untied"}),
]




def run(model, x, y, backend: str) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """Every layer's output with autograd and without, and the gradients of the loss on the last layer."""
    y = y.clone().requires_grad_()
    with ops.backend(backend):
        outs = model(y, all_layers=True)
        loss = sum(((o - x) ** 2).sum() * (t + 1) for t, o in enumerate(outs[1:]))  # every layer counts
        params = [p for p in model.parameters()]
        grads = torch.autograd.grad(loss, [y, *params], allow_unused=True)
        with torch.no_grad():
            inference = model(y, all_layers=True)
    grads = [torch.zeros_like(v) if g is None else g for g, v in zip(grads, [y, *params], strict=True)]
    return [o.detach() for o in outs], inference, grads


def assert_close(got: list[torch.Tensor], want: list[torch.Tensor], what: str) -> None:
    for i, (a, b) in enumerate(zip(got, want, strict=True)):
        scale = max(float(b.abs().max()), 1e-300) if b.numel() else 1.0
        err = float((a - b).abs().max()) if b.numel() else 0.0
        assert err <= RTOL * scale, f"{what}[{i}]: max |difference| {err:.3g} > {RTOL:g} x {scale:.3g}"


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("name, config", VARIANTS, ids=[f"{n}{'-' + str(c) if c else ''}" for n, c in VARIANTS])
def test_fast_backend_equals_reference(name, config, backend, small_problem, perturb):
    x, y = small_problem.sample(7, torch.Generator().manual_seed(11), F64)
    model = perturb(build(name, small_problem, {"K": K, **config}, F64))
    ref_outs, ref_inf, ref_grads = run(model, x, y, "reference")
    assert float(ref_outs[-1].abs().sum()) > 0, "degenerate test: the last layer is zero"
    outs, inference, grads = run(model, x, y, backend)
    assert_close(outs, ref_outs, "layer")
    assert_close(inference, ref_inf, "inference layer")
    assert_close(grads, ref_grads, "gradient (y, then parameters)")


def test_every_model_is_covered():
    assert {name for name, _ in VARIANTS} == set(MODELS)
