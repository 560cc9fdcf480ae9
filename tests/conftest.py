"""Shared test settings."""

import torch

# One intra-op thread: on a small shared machine, torch's default thread pool spin-waits
# against other processes and turns millisecond matrix products into tens of milliseconds.
torch.set_num_threads(1)


import pytest  # noqa: E402

from unrolled.problem import Problem, ProblemSpec  # noqa: E402


@pytest.fixture(scope="session")
def small_problem() -> Problem:
    """The registry-wide tests' problem: odd, non-square 23 x 41, p = 0.15 (about 6 non-zeros), 40 dB."""
    return Problem(ProblemSpec(m=23, n=41, p=0.15, snr=40.0, seed=3))


@pytest.fixture(scope="session")
def perturb():
    """``perturb(model, scale, seed)``: move every parameter off its initial value by seeded Gaussian noise
    of standard deviation ``scale`` (a round trip of the initialisation proves little)."""

    def move(model: torch.nn.Module, scale: float = 0.01, seed: int = 5) -> torch.nn.Module:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        return model

    return move
