"""The shape of the package: imports only go one way, modules stay small, the README's layout is the tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "unrolled"
MAX_LINES = 400


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module (a package is its ``__init__.py``)."""
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The ``unrolled`` modules that module ``name`` imports anywhere (function-local imports included,
    ``if TYPE_CHECKING`` blocks excluded), with the packages a dotted import initialises on the way."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    skip = {id(n) for block in ast.walk(ast.parse(path.read_text())) if _type_checking(block)
            for n in ast.walk(block)}
    for node in ast.walk(ast.parse(path.read_text())):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            for a in node.names:  # `from pkg import sub` imports the module pkg.sub, else names of pkg
                targets.add(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base)
    out = set()
    for t in targets:
        while t and t not in known:  # `import unrolled.x.y` where y is a name: the module that holds it
            t = t.rpartition(".")[0]
        parts = t.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            prefix = ".".join(parts[:i])
            if prefix in known and not (name == prefix or name.startswith(prefix + ".")):
                out.add(prefix)
    return out


def test_no_import_cycles():
    mods = modules()
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    # A package's __init__ importing its own submodules is the re-export pattern; a submodule importing
    # its own package (or an ancestor) is not, and shows up as an edge below.
    up = {(a, b) for a, targets in graph.items() for b in targets if a.startswith(b + ".")}
    assert not up, f"modules import their own package's __init__ (import the submodule instead): {sorted(up)}"
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_cycle_check_sees_a_cycle(tmp_path, monkeypatch):
    """The check above is not vacuous: two sibling modules importing each other fail it."""
    pkg = tmp_path / "unrolled"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from . import a\n")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    monkeypatch.setattr(f"{__name__}.PKG", pkg)
    try:
        test_no_import_cycles()
    except AssertionError as e:
        assert "unrolled.a -> unrolled.sub.b -> unrolled.a" in str(e)
    else:
        raise AssertionError("the cycle a -> sub.b -> a went unnoticed")


def test_no_module_over_the_line_limit():
    lines = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in PKG.rglob("*.py")}
    long = {path: n for path, n in lines.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"


def layout_paths() -> set[str]:
    """Paths named in the README's layout table; a bare ``name.py`` in a row is beside the row's first path."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = set()
    for row in (line for line in table.splitlines() if line.startswith("| `")):
        here = None
        for token in re.findall(r"`([\w./-]+)`", row):
            if not re.fullmatch(r"[\w./-]+(\.py|/)", token):
                continue
            if "/" in token.rstrip("/"):
                here = token if token.endswith("/") else token.rpartition("/")[0] + "/"
                named.add(token)
            elif token.endswith("/") and here is None:
                here = token
                named.add(token)
            else:
                assert here is not None, f"README layout: {token!r} has no directory before it in its row"
                named.add(here + token)
    return named


def test_readme_layout_lists_every_package_and_module():
    named = layout_paths()
    missing_on_disk = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing_on_disk, f"the README layout table names paths that do not exist: {missing_on_disk}"
    tree = set()
    for path in PKG.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if path.name != "__init__.py" or rel.parent == Path("unrolled"):
            tree.add(str(rel))
        if rel.parent != Path("unrolled"):
            tree.add(f"{rel.parent}/")
    unlisted = sorted(tree - named - {"unrolled/"})
    assert not unlisted, f"add these to the README layout table: {unlisted}"
