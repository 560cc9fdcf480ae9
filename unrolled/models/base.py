"""The base unrolled network, typed configs and the model registry.

A model is a :class:`UnrolledNet`: ``A`` (and ``W`` where used) are buffers, the
parameters new in layer ``t`` live in ``self.layers[t - 1]`` and everything outside
``self.layers`` is shared and trained with layer 1 (:meth:`UnrolledNet.layer_parameters`).
A family subclasses it, defines ``Config`` (a dataclass) and :meth:`step`, and registers
itself with :func:`register` in its own file under ``unrolled/models/``: the package imports
every module it finds there (:func:`unrolled.models.discover`), so that alone enrols it in the
CLI, the contract, oracle and equivalence tests, and the benchmarks. It also declares
:meth:`UnrolledNet.products` (its matrix products, for the FLOP counts of the benchmarks),
:meth:`UnrolledNet.skip` (problems it cannot serve) and, in ``reduces_to`` and
:meth:`UnrolledNet.initial_twin`, the classical algorithm it equals at initialisation.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from .. import ops
from ..errors import UsageError, check, choice
from ..ops import Cut, Selection
from ..problem import Problem


def selection(mode: str = "none", **fields: Any) -> Any:
    """A config field holding a :class:`~unrolled.ops.Selection` whose default mode is ``mode``."""
    return field(default_factory=lambda: Selection(mode, **fields))


@dataclass
class Config:
    """Fields every model has: depth, support selection (docs/spec.md §5) and the initial lambda.

    ``ss`` may be given as a :class:`~unrolled.ops.Selection`, a mode name or a dict of its fields.
    """

    K: int = 16
    ss: Selection = selection("none")
    lam: float = 0.4  # initial theta = lam / (1.001 L) where the literature does so

    def __post_init__(self) -> None:
        check(isinstance(self.K, int) and self.K >= 1, f"K={self.K} must be an integer >= 1")
        if not isinstance(self.ss, Selection):
            self.ss = _selection(type(self), self.ss, {})
        check(self.lam >= 0, f"lam={self.lam} must be >= 0")


LEGACY_SS = {"ss_p": "p", "ss_pmax": "p_max", "ss_theta": "theta", "ss_ramp": "ramp"}  # run configs before 0.2
SS_FIELDS = tuple(f.name for f in dataclasses.fields(Selection))


def _default_selection(cls: type) -> Selection:
    f = {f.name: f for f in dataclasses.fields(cls)}["ss"]
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else Selection()


def _selection(cls: type, value: Any, changes: dict[str, Any]) -> Selection:
    """``cls``'s default selection with ``value`` (a mode, a dict or a Selection), then the ``ss.FIELD`` ``changes``."""
    if isinstance(value, Selection):
        base = value
    else:
        base = _default_selection(cls)
        if isinstance(value, str):
            base = base.replace(mode=value)
        elif isinstance(value, dict):
            changes = {**value, **changes}
        elif value is not None:
            raise UsageError(f"ss={value!r} must be a support-selection mode ({', '.join(ops.selection.MODES)}) "
                             f"or a table of its fields ({', '.join(SS_FIELDS)})")
    unknown = sorted(set(changes) - set(SS_FIELDS))
    check(not unknown, f"unknown support-selection field(s) {', '.join('ss.' + k for k in unknown)}; "
                       f"valid: {', '.join('ss.' + k for k in SS_FIELDS)}")
    hints = typing.get_type_hints(Selection)
    return base.replace(**{k: _coerce(v, hints[k], f"ss.{k}") for k, v in changes.items()})


def config_fields(cls: type) -> dict[str, Any]:
    """Each field's default (a factory's product for ``ss``)."""
    return {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            for f in dataclasses.fields(cls)}


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
    """Build ``cls`` from defaults and ``overrides``; an unknown key lists the valid ones.

    Support selection: ``ss`` (a mode, a dict or a Selection) and ``ss.FIELD`` keys (``ss.ramp=0.5``);
    the flat keys of older run configs (``ss_ramp``, ...) are read as the same fields.
    """
    overrides = dict(overrides or {})
    ss_changes = {k[3:]: overrides.pop(k) for k in list(overrides) if k.startswith("ss.")}
    ss_changes.update({LEGACY_SS[k]: overrides.pop(k) for k in list(overrides) if k in LEGACY_SS})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - set(fields))
    check(not unknown, f"unknown config field(s) {', '.join(unknown)} for {cls.__qualname__}; "
                       f"valid: {', '.join(fields)} (and ss.FIELD for {', '.join(SS_FIELDS)})")
    hints = typing.get_type_hints(cls)
    values = {k: _coerce(v, hints[k], k) for k, v in overrides.items() if k != "ss"}
    if "ss" in overrides or ss_changes:
        values["ss"] = _selection(cls, overrides.get("ss"), ss_changes)
    return cls(**values)


BLOCK_BYTES = 2 ** 21  # one (rows x n) iterate of a CPU block: 2 MiB, a few of them fit the L2/L3 caches


def block_rows(n: int, y: Tensor) -> int:
    """Samples per block of a forward pass: ``BLOCK_BYTES`` worth in inference on the CPU with a fast
    backend; all of them with autograd, off the CPU or with the reference backend."""
    if torch.is_grad_enabled() or y.device.type != "cpu" or ops.active() == "reference":
        return y.shape[0]
    return max(1, BLOCK_BYTES // (n * y.element_size()))


class Product(NamedTuple):
    """``count`` matrix products of a forward pass, each ``(1 x inner) @ (inner x outer)`` per sample;
    ``trained``: the matrix is a parameter (its backward also forms the weight's gradient)."""

    count: int
    inner: int
    outer: int
    trained: bool = False


class UnrolledNet(nn.Module):
    """K unrolled iterations ``x_t = step(t, x_{t-1})`` from ``x_0 = 0``.

    Subclasses set ``Config`` and implement :meth:`step`; :meth:`begin` may prepare
    per-run state (momentum, recurrent cells) in ``ctx``.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type] = Config
    reduces_to: ClassVar[str] = ""  # the algorithm it equals at initialisation (see initial_twin)

    def __init__(self, problem: Problem, config: Config) -> None:
        super().__init__()
        self.config = config
        self.m, self.n = problem.m, problem.n
        self.register_buffer("A", problem.A.clone())
        self.L = problem.L
        self.scale = 1.001 * self.L
        self.cuts: list[Cut | None] = config.ss.cuts(config.K, problem.n, problem.spec.sparsity)
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
        from memory several times per layer (docs/performance.md). Each sample's result is the same up to rounding: BLAS
        may order a product's sums differently for another number of rows.
        """
        if all_layers:
            return list(self.iterates(y, depth))
        y, depth = self._checked(y, depth)
        rows = block_rows(self.n, y)
        if rows >= y.shape[0]:
            return self._unroll(y, depth)
        return torch.cat([self._unroll(b, depth) for b in y.split(rows)])

    def iterates(self, y: Tensor, depth: int | None = None) -> Iterator[Tensor]:
        """``x_0, ..., x_depth`` one at a time, the numbers of ``forward(y, all_layers=True)``: per-layer
        metrics of a deep unrolling (``solve --iters 5000``) hold one iterate, never all of them."""
        y, depth = self._checked(y, depth)
        blocks = y.split(block_rows(self.n, y))
        ctxs: list[dict] = [{} for _ in blocks]
        xs = [self.begin(b, ctx) for b, ctx in zip(blocks, ctxs)]
        yield xs[0] if len(xs) == 1 else torch.cat(xs)
        for t in range(1, depth + 1):
            xs = [self.step(t, x, b, ctx) for x, b, ctx in zip(xs, blocks, ctxs)]
            yield xs[0] if len(xs) == 1 else torch.cat(xs)

    def _checked(self, y: Tensor, depth: int | None) -> tuple[Tensor, int]:
        check(y.dim() == 2 and y.shape[1] == self.m, f"y must have shape (batch, {self.m}), got {tuple(y.shape)}")
        depth = self.K if depth is None else depth
        check(1 <= depth <= self.K, f"depth={depth} must be in 1..{self.K}")
        return y, depth

    def _unroll(self, y: Tensor, depth: int) -> Tensor:
        ctx: dict = {}
        x = self.begin(y, ctx)
        for t in range(1, depth + 1):
            x = self.step(t, x, y, ctx)
        return x

    def shrink(self, t: int, z: Tensor, theta: Tensor | float) -> Tensor:
        """Soft threshold with this model's support selection at layer ``t``."""
        return ops.shrink(z, theta, self.cuts[t - 1])

    @classmethod
    def skip(cls, problem: Problem, config: Config | None = None) -> tuple[bool, str]:
        """``(True, reason)`` if this model cannot serve ``problem`` (with ``config``), else ``(False, "")``."""
        return False, ""

    def products(self) -> list[Product]:
        """The matrix products of one forward pass; default: a gradient step per layer, ``x A^T`` and
        ``r W`` with fixed matrices."""
        return [Product(2 * self.K, self.m, self.n)]

    def flops(self, batch: int, backward: bool = False) -> float:
        """Matrix-product FLOPs of a forward pass of ``batch`` samples (a multiply-add is 2), with
        ``backward`` of a training step: a product's backward costs one more product for the input's
        gradient and one for a trained matrix's. Element-wise work is not counted."""
        total = 0.0
        for p in self.products():
            passes = 1 + (1 + p.trained if backward else 0)
            total += 2.0 * batch * p.count * p.inner * p.outer * passes
        return total

    def initial_twin(self, y: Tensor) -> list[Tensor]:
        """The iterates ``[x_0, ..., x_K]`` of :attr:`reduces_to` on ``y``, which this network equals at
        initialisation (tests/test_models_equivalence.py runs it for every registered model)."""
        raise NotImplementedError(f"{type(self).__name__} declares no initial twin")

    def __prepare_scriptable__(self):
        raise UsageError("TorchScript cannot compile an unrolled model (Python control flow over layers); "
                         "use torch.jit.trace, torch.export or ONNX, which record the reference maths")

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters outside the per-layer modules (tied weights, NA-ALISTA's LSTM): used by every layer."""
        in_layers = {id(p) for p in self.layers.parameters()}
        return [p for p in self.parameters() if id(p) not in in_layers]

    def layer_parameters(self, t: int) -> list[nn.Parameter]:
        """Parameters new in layer ``t``; shared ones belong to layer 1."""
        check(1 <= t <= self.K, f"layer {t} is outside 1..{self.K}")
        own = list(self.layers[t - 1].parameters()) if len(self.layers) else []
        return self.shared_parameters() + own if t == 1 else own


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
