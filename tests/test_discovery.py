"""A model is one file: dropped into a models folder, it is registered, listed and tested.

The file below is written to a temporary folder named in ``$UNROLLED_MODELS_PATH``; a
pytest subprocess then shows that the registry-wide tests (contract, oracle, equivalence at
initialisation, export) collect and pass it with no other edit.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

MODEL = '''
"""Half-step ISTA: x <- eta_{theta_t}(x + s_t A^T (y - A x)), s_t = 1/(2L) at initialisation."""

from torch import Tensor, nn

from unrolled import ops, solvers
from unrolled.models.base import UnrolledNet, layer, register


@register("half-step-ista")
class HalfStep(UnrolledNet):
    """ISTA with learned steps starting at 1/(2L)."""

    reduces_to = "ISTA with step 1/(2L)"

    def __init__(self, problem, config) -> None:
        super().__init__(problem, config)
        self.layers = nn.ModuleList(layer(s=0.5 / self.L) for _ in range(self.K))

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        s = self.layers[t - 1].s
        return ops.pgd_step(x, y, self.A, self.A, s, self.config.lam * s, self.cuts[t - 1])

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        return list(solvers.ista(self.A, y, self.config.lam, self.K, L=2 * self.L, cuts=self.cuts))
'''


def test_a_model_file_in_a_folder_is_enrolled_everywhere(tmp_path: Path):
    (tmp_path / "half_step.py").write_text(textwrap.dedent(MODEL))
    env = {**os.environ, "UNROLLED_MODELS_PATH": str(tmp_path)}
    listed = subprocess.run([sys.executable, "-m", "unrolled", "list"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "half-step-ista" in listed.stdout
    tests = Path(__file__).parent
    files = [str(tests / f) for f in ("test_models_contract.py", "test_oracle.py", "test_models_equivalence.py",
                                      "test_export.py")]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-o", "addopts=-m 'not slow'", "-p", "no:cacheprovider",
                          "-p", "no:warnings", "-k", "half-step-ista", *files], env=env, capture_output=True, text=True,
                         cwd=tests.parent)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    found = re.search(r"(\d+) passed", run.stdout)
    assert found and int(found.group(1)) >= 15, run.stdout[-500:]  # contract tests, oracle per backend, export, twin
