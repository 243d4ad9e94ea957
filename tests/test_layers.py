"""Import rules between the layers, read from the source with `ast` (no import runs, no server starts).

- The web layer is an adapter (request parsing, access checks, rendering): no module of `b24app/web/` imports
  `b24app.storage.models` or SQLAlchemy; it asks `b24app.queries` and the services beside the pipeline.
- The web modules form no import circle (counting imports inside functions too): shared helpers live in
  `web/common.py`, which imports no blueprint.
- Read models live in `b24app/queries/` and never import Flask or the web layer.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "b24app"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import statement in the file, also those inside functions.
    `from . import x` yields the package and `package.x` (x may be a module)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            out += [(node.lineno, f"{target}.{a.name}") for a in node.names if a.name != "*"]
    return out


def _offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    """`file:line imports module` for each import statement that reaches a forbidden module."""
    found: dict[tuple[str, int], str] = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        for line, target in imports_of(path):
            if any(target == f or target.startswith(f + ".") for f in forbidden):
                key = (str(path.relative_to(PACKAGE.parent)), line)
                found[key] = min(found.get(key, target), target, key=len)
    return [f"{where}:{line} imports {target}" for (where, line), target in sorted(found.items())]


def test_web_modules_never_import_models_or_sqlalchemy():
    offenders = _offenders("web", ("b24app.storage.models", "sqlalchemy"))
    assert not offenders, "the web layer is an adapter; ask b24app.queries or a service instead:\n" + \
        "\n".join(offenders)


def test_queries_never_import_flask_or_the_web_layer():
    offenders = _offenders("queries", ("flask", "flask_babel", "markupsafe", "b24app.web"))
    assert not offenders, "read models return data; wording and HTML belong to b24app/web:\n" + "\n".join(offenders)


def test_the_web_modules_form_no_import_circle():
    modules = {_module_name(p): p for p in (PACKAGE / "web").glob("*.py")}
    graph = {m: {t for _line, t in imports_of(p) if t in modules and t != m} for m, p in modules.items()}
    circles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph[node]):
            if nxt == path[0]:
                circles.append(" -> ".join(path + [nxt]))
            elif nxt not in path and nxt > path[0]:  # each circle once, from its smallest module
                visit(nxt, path + [nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert not circles, "import circles among the web modules:\n" + "\n".join(circles)


@pytest.mark.parametrize("source, expected", [
    ("from ..storage.models import Portal\n", "b24app.storage.models"),
    ("def f():\n    from sqlalchemy import select\n", "sqlalchemy"),
    ("import sqlalchemy.orm\n", "sqlalchemy.orm"),
])
def test_the_rule_sees_direct_and_function_level_imports(tmp_path, monkeypatch, source, expected):
    """The checker itself: a web module written the old way is reported."""
    fake = tmp_path / "b24app"
    (fake / "web").mkdir(parents=True)
    (fake / "web" / "page.py").write_text(source, encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    offenders = _offenders("web", ("b24app.storage.models", "sqlalchemy"))
    assert offenders and expected in offenders[0]
