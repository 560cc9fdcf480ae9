"""Command line: ``unrolled <command> ...`` (also ``python -m unrolled``).

Every command has ``--help``; bad input ends with one line ``error: ...`` and exit code 2.
Each module registers its commands (``add_commands``) and calls the Python API below it:
:mod:`.problem` (problem create, weights, solve, list), :mod:`.train` (train, eval),
:mod:`.demo` and :mod:`.repro`; :mod:`.args` holds the shared argument types.
"""

from __future__ import annotations

import os
import sys
import warnings

from .. import ops
from ..cpu import keep_freed_memory
from ..errors import UsageError
from . import data, demo, images, pretrained, problem, repro, search, train
from .args import Parser

COMMANDS = (problem, train, data, demo, repro, images, search, pretrained)


def version() -> str:
    """The installed package's version (``pyproject.toml``)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("unrolled")
    except PackageNotFoundError:
        return "(not installed)"


def build_parser() -> Parser:
    parser = Parser(prog="unrolled", description="Learned sparse recovery: problems, solvers, unrolled networks.")
    parser.add_argument("--version", action="version", version=f"unrolled {version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for module in COMMANDS:
        module.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = lambda message, *_, **__: f"warning: {message}\n"  # one line, no source location
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        ops.dispatch.resolve(ops.dispatch.selected())  # a bad $UNROLLED_BACKEND fails before any work
        keep_freed_memory()  # large batches: no page faults for every temporary (unrolled/cpu.py)
        args.func(args)
    except UsageError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        msg = msg.encode("utf-8", "backslashreplace").decode()  # a file name that is not UTF-8 prints escaped
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `unrolled list | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0
