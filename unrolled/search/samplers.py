"""The searchers, all Optuna samplers: random, TPE, regularised evolution and a REINFORCE controller.

Optuna ships random and TPE. Regularised evolution (Real et al. 2019) and the REINFORCE
controller (Zoph & Le 2016) it does not, so they are written here on its public
:class:`optuna.samplers.BaseSampler` interface (``infer_relative_search_space`` /
``sample_relative``). Both keep no state that the storage does not hold: their decisions are a
function of the study's finished trials, so any number of worker processes on one storage,
and a study resumed after every worker was killed, search as one.
"""

from __future__ import annotations

import numpy as np
import optuna
import torch
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from ..errors import choice
from .space import Space

SAMPLERS = ("random", "evolution", "reinforce", "tpe")


def finished(study: optuna.Study, space: dict[str, BaseDistribution]) -> list[FrozenTrial]:
    """The completed trials that decided every parameter of ``space``, in the order they completed."""
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    trials = [t for t in trials if set(space) <= set(t.params) and t.value is not None and np.isfinite(t.value)]
    return sorted(trials, key=lambda t: (t.datetime_complete, t.number))


# -- regularised evolution ----------------------------------------------------------------------


def population(trials: list[FrozenTrial], size: int) -> list[FrozenTrial]:
    """Ageing: the ``size`` most recently completed trials (the oldest die, however good)."""
    return trials[-size:]


def tournament(pop: list[FrozenTrial], size: int, rng: np.random.RandomState, maximize: bool) -> FrozenTrial:
    """The best of ``size`` members drawn without replacement from ``pop``."""
    picks = [pop[i] for i in rng.choice(len(pop), size=min(size, len(pop)), replace=False)]
    return (max if maximize else min)(picks, key=lambda t: t.value)


def mutate(params: dict, space: dict[str, BaseDistribution], rng: np.random.RandomState) -> dict:
    """``params`` with exactly one decision, drawn uniformly, changed to another of its choices."""
    child = dict(params)
    name = list(space)[rng.randint(len(space))]
    others = [c for c in space[name].choices if c != params[name]]
    child[name] = others[rng.randint(len(others))]
    return child


class EvolutionSampler(BaseSampler):
    """Regularised evolution: until ``population`` trials completed, random architectures; then the
    winner of a ``tournament`` among the ``population`` most recent, with one decision mutated."""

    def __init__(self, space: Space, population: int = 20, tournament: int = 5, seed: int | None = None) -> None:
        self.space, self.size, self.tournament = space.distributions(), population, tournament
        self._rng = np.random.RandomState(seed)
        self._random = RandomSampler(seed)

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._random.reseed_rng()

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return self.space

    def sample_relative(self, study, trial, search_space) -> dict:
        trials = finished(study, self.space)
        if not search_space or len(trials) < self.size:
            return {}  # the first population: sample_independent draws it at random
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        parent = tournament(population(trials, self.size), self.tournament, self._rng, maximize)
        return mutate({k: parent.params[k] for k in self.space}, self.space, self._rng)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._random.sample_independent(study, trial, param_name, param_distribution)


# -- REINFORCE controller -------------------------------------------------------------------------


class Policy(nn.Module):
    """An LSTM that emits the decisions one after another, each conditioned on the previous ones
    (Zoph & Le 2016): input the embedding of the previous choice, output logits per decision."""

    def __init__(self, sizes: list[int], hidden: int = 32, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)  # the initial policy is part of the study's settings
        self.sizes, self.offsets = sizes, np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.embed = nn.Embedding(self.offsets[-1] + 1, hidden)  # the last token starts the sequence
        self.cell = nn.LSTMCell(hidden, hidden)
        self.out = nn.Linear(hidden, self.offsets[-1])
        nn.init.zeros_(self.out.weight)  # uniform over every decision at the start
        nn.init.zeros_(self.out.bias)

    def _logits(self, h: torch.Tensor, d: int) -> torch.Tensor:
        return self.out(h)[:, self.offsets[d]:self.offsets[d + 1]]

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """``log pi(actions)`` per row of ``actions: (batch, decisions)`` (choice indices)."""
        b = actions.shape[0]
        tok = torch.full((b,), self.offsets[-1], dtype=torch.long)
        h = c = torch.zeros(b, self.cell.hidden_size)
        total = torch.zeros(b)
        for d in range(len(self.sizes)):
            h, c = self.cell(self.embed(tok), (h, c))
            total = total + torch.log_softmax(self._logits(h, d), -1).gather(1, actions[:, d:d + 1]).squeeze(1)
            tok = self.offsets[d] + actions[:, d]
        return total

    @torch.no_grad()
    def sample(self, generator: torch.Generator) -> list[int]:
        tok = torch.tensor([self.offsets[-1]])
        h = c = torch.zeros(1, self.cell.hidden_size)
        out = []
        for d in range(len(self.sizes)):
            h, c = self.cell(self.embed(tok), (h, c))
            a = int(torch.multinomial(torch.softmax(self._logits(h, d), -1)[0], 1, generator=generator))
            out.append(a)
            tok = torch.tensor([self.offsets[d] + a])
        return out


class Controller:
    """REINFORCE with a moving-average baseline: for a finished candidate with reward ``R``,
    one Adam step on ``-(R - b) log pi(a)``, then ``b <- decay b + (1 - decay) R`` (the first
    reward sets ``b``)."""

    def __init__(self, sizes: list[int], lr: float = 0.01, decay: float = 0.9, hidden: int = 32,
                 seed: int = 0) -> None:
        self.policy = Policy(sizes, hidden, seed)
        self.optim = torch.optim.Adam(self.policy.parameters(), lr=lr)
        self.decay, self.baseline, self.updates = decay, None, 0

    def update(self, actions: list[int], reward: float) -> float:
        """One policy-gradient step for one finished candidate; the advantage used."""
        if self.baseline is None:
            self.baseline = reward
        advantage = reward - self.baseline
        loss = -advantage * self.policy.log_prob(torch.tensor([actions])).sum()
        self.optim.zero_grad()
        loss.backward()
        self.optim.step()
        self.baseline = self.decay * self.baseline + (1 - self.decay) * reward
        self.updates += 1
        return advantage

    def prob(self, actions: list[int]) -> float:
        with torch.no_grad():
            return float(self.policy.log_prob(torch.tensor([actions])).exp())


class ReinforceSampler(BaseSampler):
    """Architectures from a :class:`Controller` updated with every trial completed so far, replayed
    in completion order (each process rebuilds the same policy from the storage). The reward is
    the trial's value (the study maximises it: the negative validation NMSE in dB)."""

    def __init__(self, space: Space, seed: int | None = None, lr: float = 0.01, decay: float = 0.9) -> None:
        self.space = space.distributions()
        self.names = list(self.space)
        self.seed = 0 if seed is None else seed
        self.controller = Controller([len(d.choices) for d in self.space.values()], lr, decay, seed=self.seed)
        self._seen: set[int] = set()
        self._random = RandomSampler(seed)

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        return self.space

    def actions(self, params: dict) -> list[int]:
        return [list(self.space[n].choices).index(params[n]) for n in self.names]

    def sample_relative(self, study, trial, search_space) -> dict:
        if not search_space:
            return {}
        sign = 1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else -1.0
        for t in finished(study, self.space):
            if t.number not in self._seen:
                self._seen.add(t.number)
                self.controller.update(self.actions(t.params), sign * t.value)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + trial.number)
        acts = self.controller.policy.sample(gen)
        return {n: self.space[n].choices[a] for n, a in zip(self.names, acts)}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._random.sample_independent(study, trial, param_name, param_distribution)


def make_sampler(name: str, space: Space, seed: int | None = None, population: int = 20,
                 tournament: int = 5) -> BaseSampler:
    """The sampler ``name`` (one of :data:`SAMPLERS`) over ``space``."""
    choice(name, SAMPLERS, "sampler")
    if name == "random":
        return RandomSampler(seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "evolution":
        return EvolutionSampler(space, population, tournament, seed)
    return ReinforceSampler(space, seed)
