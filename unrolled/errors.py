"""The one exception users see: a one-line message naming the problem and the fix."""

from __future__ import annotations

from collections.abc import Iterable


class UsageError(ValueError):
    """Bad input. The CLI prints ``error: <message>`` and exits with code 2."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`UsageError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise UsageError(message)


def choice(value: str, valid: Iterable[str], what: str) -> str:
    """Return ``value`` if it is one of ``valid``, else fail listing the valid values."""
    valid = list(valid)
    if value not in valid:
        raise UsageError(f"unknown {what} {value!r}; valid: {', '.join(valid)}")
    return value


def require(module: str, extra: str, feature: str | None = None):
    """Import and return ``module`` (an optional dependency), or fail in one line naming the extra that has it:
    ``require("optuna", extra="search")``."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        what = feature or module.split(".")[0]
        raise UsageError(f"{what} needs the optional package {module.split('.')[0]}: "
                         f"pip install 'unrolled[{extra}]'") from None
