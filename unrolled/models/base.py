"""The base unrolled network, typed configs and the model registry.

A model is a :class:`UnrolledNet`: ``A`` (and ``W`` where used) are buffers, the
parameters new in layer ``t`` live in ``self.layers[t - 1]`` and everything outside
``self.layers`` is shared and trained with layer 1 (:meth:`UnrolledNet.layer_parameters`).
A family subclasses it, defines ``Config`` (a dataclass) and :meth:`step`, and registers
itself with :func:`register`; that alone enrols it in the CLI, tests and benchmarks.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .. import functional as F
from ..errors import UsageError, check, choice
from ..problem import Problem


@dataclass
class Config:
    """Fields every model has: depth, support selection and the initial lambda."""

    K: int = 16
    ss: str = "none"  # none | percentage | count (SPEC §5)
    ss_p: float = 1.2  # percentage form: q_t = min(ss_p * t, ss_pmax) percent of n
    ss_pmax: float = 13.0
    ss_theta: bool | None = None  # also require |z| > theta to bypass; None: the form's default
    ss_ramp: float = 1.0  # count form: fraction of the layers over which p_k grows to 1.2 s
    lam: float = 0.4  # initial theta = lam / (1.001 L) where the literature does so

    def __post_init__(self) -> None:
        check(isinstance(self.K, int) and self.K >= 1, f"K={self.K} must be an integer >= 1")
        choice(self.ss, F.SUPPORT_MODES, "support selection")
        check(self.ss_p >= 0 and self.ss_pmax >= 0, "ss_p and ss_pmax must be >= 0")
        check(0 < self.ss_ramp <= 1, f"ss_ramp={self.ss_ramp} must be in (0, 1]")
        check(self.lam >= 0, f"lam={self.lam} must be >= 0")


def config_fields(cls: type) -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(cls)}


def _coerce(value: Any, annotation: Any, name: str) -> Any:
    """Convert CLI strings / JSON values to the field's declared type, or fail."""
    hint = annotation
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() == "none"):
            return None
        if str in args and isinstance(value, str) and not value.lstrip().startswith("["):
            return value  # a name (e.g. a gate pattern), checked by the config itself
        hint = args[0]
    try:
        if hint is bool:
            if isinstance(value, str):
                check(value.lower() in ("true", "false", "1", "0"), f"{name} must be true or false, got {value!r}")
                return value.lower() in ("true", "1")
            return bool(value)
        if hint is int:
            check(float(value) == int(float(value)), f"{name} must be an integer, got {value!r}")
            return int(float(value))
        if hint is float:
            return float(value)
        if typing.get_origin(hint) is list or hint is list:
            if isinstance(value, str):
                value = json.loads(value)
            return [list(v) if isinstance(v, list | tuple) else v for v in value]
        return str(value) if hint is str else value
    except (TypeError, ValueError, json.JSONDecodeError):
        raise UsageError(f"{name}={value!r} is not a valid {getattr(hint, '__name__', hint)}") from None


def make_config(cls: type, overrides: dict[str, Any] | None = None) -> Any:
    """Build ``cls`` from defaults and ``overrides``; an unknown key lists the valid ones."""
    overrides = dict(overrides or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - set(fields))
    check(not unknown, f"unknown config field(s) {', '.join(unknown)} for {cls.__qualname__}; "
                       f"valid: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(v, hints[k], k) for k, v in overrides.items()})


BLOCK_BYTES = 2 ** 21  # one (rows x n) iterate of a CPU block: 2 MiB, a few of them fit the L2/L3 caches


def block_rows(n: int, y: Tensor) -> int:
    """Samples per block of a forward pass: all of them with autograd or off the CPU, else ``BLOCK_BYTES`` worth."""
    if torch.is_grad_enabled() or y.device.type != "cpu":
        return y.shape[0]
    return max(1, BLOCK_BYTES // (n * y.element_size()))


class UnrolledNet(nn.Module):
    """K unrolled iterations ``x_t = step(t, x_{t-1})`` from ``x_0 = 0``.

    Subclasses set ``Config`` and implement :meth:`step`; :meth:`begin` may prepare
    per-run state (momentum, recurrent cells) in ``ctx``.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = Config

    def __init__(self, problem: Problem, config: Config) -> None:
        super().__init__()
        self.config = config
        self.m, self.n = problem.m, problem.n
        self.register_buffer("A", problem.A.clone())
        self.L = problem.L
        self.scale = 1.001 * self.L
        self.keep, self.with_theta = support_schedule(config, problem)
        self.layers = nn.ModuleList()

    @property
    def K(self) -> int:
        return self.config.K

    def begin(self, y: Tensor, ctx: dict) -> Tensor:
        """The initial iterate ``x_0 = 0`` (subclasses may also fill ``ctx``)."""
        return y.new_zeros(y.shape[0], self.n)

    def step(self, t: int, x: Tensor, y: Tensor, ctx: dict) -> Tensor:
        """Layer ``t`` (1-based): ``x_{t-1} -> x_t``."""
        raise NotImplementedError

    def forward(self, y: Tensor, all_layers: bool = False, depth: int | None = None) -> Tensor | list[Tensor]:
        """``y: (batch, m)`` -> ``x_K: (batch, n)``, or ``[x_0, ..., x_depth]`` with ``all_layers``.

        Without autograd on the CPU a large batch runs in blocks of :func:`block_rows` samples
        (every model treats samples independently): each block's iterates stay in the cache
        between the element-wise passes of a layer, which otherwise stream ``batch x n`` floats
        from memory several times per layer (about 20 % of an ALISTA forward pass at 10,000
        samples; benchmarks/bench_forward.py). Each sample's result is the same up to rounding: BLAS
        may order a product's sums differently for another number of rows.
        """
        check(y.dim() == 2 and y.shape[1] == self.m, f"y must have shape (batch, {self.m}), got {tuple(y.shape)}")
        depth = self.K if depth is None else depth
        check(1 <= depth <= self.K, f"depth={depth} must be in 1..{self.K}")
        rows = block_rows(self.n, y)
        if rows >= y.shape[0]:
            return self._unroll(y, all_layers, depth)
        blocks = [self._unroll(b, all_layers, depth) for b in y.split(rows)]
        return [torch.cat(layer) for layer in zip(*blocks)] if all_layers else torch.cat(blocks)

    def _unroll(self, y: Tensor, all_layers: bool, depth: int) -> Tensor | list[Tensor]:
        ctx: dict = {}
        x = self.begin(y, ctx)
        outs = [x]
        for t in range(1, depth + 1):
            x = self.step(t, x, y, ctx)
            if all_layers:
                outs.append(x)
        return outs if all_layers else x

    def shrink(self, t: int, z: Tensor, theta: Tensor | float) -> Tensor:
        """Soft threshold with this model's support selection at layer ``t``."""
        return F.shrink(z, theta, self.keep[t - 1], self.with_theta)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters outside the per-layer modules (tied weights, NA-ALISTA's LSTM): used by every layer."""
        in_layers = {id(p) for p in self.layers.parameters()}
        return [p for p in self.parameters() if id(p) not in in_layers]

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """Parameters new in layer ``t``; shared ones belong to layer 1."""
        check(1 <= t <= self.K, f"layer {t} is outside 1..{self.K}")
        own = list(self.layers[t - 1].parameters()) if len(self.layers) else []
        return self.shared_parameters() + own if t == 1 else own

    def extra_state_tensors(self) -> dict[str, Tensor]:
        """Non-parameter tensors that a checkpoint must keep (buffers are in state_dict)."""
        return {}


def support_schedule(config: Config, problem: Problem) -> tuple[list[int], bool]:
    """Per-layer number of entries that bypass the shrinkage, and whether ``|z| > theta`` is required.

    Percentage form: ``percentage_keep`` of ``n`` with ``q_t = min(ss_p t, ss_pmax)``.
    Count form: entries strictly above the ``p_k``-th largest, so ``p_k - 1`` pass,
    with ``p_k`` from the expected sparsity ``s = p n``. ``ss_theta`` overrides whether
    ``|z| > theta`` is also required (default: yes for percentage, no for count).
    """
    K, n = config.K, problem.n
    if config.ss == "percentage":
        keep = [F.percentage_keep(t, n, config.ss_p, config.ss_pmax) for t in range(1, K + 1)]
        return keep, True if config.ss_theta is None else config.ss_theta
    if config.ss == "count":
        keep = [max(0, pk - 1) for pk in F.count_schedule(problem.spec.sparsity, K, config.ss_ramp)]
        return keep, False if config.ss_theta is None else config.ss_theta
    return [0] * K, True


def layer(**values: float | Tensor) -> nn.Module:
    """A module holding one learnable float64 tensor per keyword (a float gives a scalar)."""
    mod = nn.Module()
    for k, v in values.items():
        v = v.detach().clone() if isinstance(v, Tensor) else torch.tensor(float(v), dtype=torch.float64)
        mod.register_parameter(k, nn.Parameter(v.to(torch.float64)))
    return mod


MODELS: dict[str, type[UnrolledNet]] = {}


def register(name: str):
    """Class decorator: enrol a model family under ``name``."""

    def deco(cls: type[UnrolledNet]) -> type[UnrolledNet]:
        check(name not in MODELS, f"model {name!r} registered twice")
        cls.name = name
        MODELS[name] = cls
        return cls

    return deco


def build(name: str, problem: Problem, config: dict | Config | None = None,
          dtype: torch.dtype = torch.float32) -> UnrolledNet:
    """One model by registry name; initialised in float64, then cast to ``dtype``."""
    cls = MODELS[choice(name, MODELS, "model")]
    if not isinstance(config, Config):
        config = make_config(cls.Config, config)
    check(isinstance(config, cls.Config), f"config for {name!r} must be {cls.Config.__name__}")
    return cls(problem, config).to(dtype)
