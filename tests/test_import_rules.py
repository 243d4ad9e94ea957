"""Import rules between the packages, read from the source with `ast` (every import, also inside functions):

- `b24app.domain` imports only the standard library and itself (and loading it pulls in no framework);
- `b24app.sandbox` imports only itself, the standard library and third-party libraries, never the app, except
  the modules listed in SANDBOX_EXCEPTIONS;
- every package under b24app/ says in its docstring what lives there and what it may import.

Files are found by glob, so modules and subpackages added later are covered without editing this test.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "b24app"
STDLIB = frozenset(sys.stdlib_module_names) | {"__future__"}

# Sandbox modules allowed to import the app, and why. Keep it short; remove an entry when its file goes.
SANDBOX_EXCEPTIONS = {
    "stack.py": "the harness that runs the app beside the sandboxes for the demo, the tests and the benchmarks",
}
# Directories under b24app/ that hold Python files but are not packages (Alembic loads them by path).
NOT_PACKAGES = {"storage/migrations", "storage/migrations/versions"}


def module_name(path: Path, root: Path) -> str:
    """The dotted name of a source file below `root` (the directory that holds the top package)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in the file, relative imports resolved."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.append((node.lineno, node.module or ""))
                continue
            base = package.split(".")
            base = base[:len(base) - (node.level - 1)]
            found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
    return found


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def domain_violations(path: Path, root: Path) -> list[str]:
    """Imports of a domain file that are neither the standard library nor the domain package itself."""
    return [f"{path.name}:{line}: {module}" for line, module in imports_of(path, root)
            if not _within(module, "b24app.domain") and module.split(".")[0] not in STDLIB]


def sandbox_violations(path: Path, root: Path) -> list[str]:
    """Imports of a sandbox file that reach the app (anything of b24app outside b24app.sandbox)."""
    return [f"{path.name}:{line}: {module}" for line, module in imports_of(path, root)
            if _within(module, "b24app") and not _within(module, "b24app.sandbox")]


def _sources(package: Path) -> list[Path]:
    found = sorted(package.rglob("*.py"))
    assert found, f"no sources under {package}"
    return found


# -- the rules on the tree --------------------------------------------------------------------------------------
def test_domain_imports_only_the_standard_library_and_itself():
    bad = [v for path in _sources(PACKAGE / "domain") for v in domain_violations(path, REPO)]
    assert not bad, "b24app.domain is pure (stdlib only): " + "; ".join(bad)


def test_loading_the_domain_pulls_in_no_framework():
    script = ("import b24app.domain, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in "
              "{'flask','sqlalchemy','httpx','werkzeug','jinja2','authlib','alembic','psycopg','click'}))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_sandbox_never_imports_the_app():
    sandbox = PACKAGE / "sandbox"
    bad = [v for path in _sources(sandbox) if path.relative_to(sandbox).as_posix() not in SANDBOX_EXCEPTIONS
           for v in sandbox_violations(path, REPO)]
    assert not bad, "b24app.sandbox stands in for Bitrix24 and the banks, it never imports the app: " + "; ".join(bad)


def test_every_sandbox_exception_is_still_needed():
    sandbox = PACKAGE / "sandbox"
    for relative in SANDBOX_EXCEPTIONS:
        path = sandbox / relative
        assert path.is_file() and sandbox_violations(path, REPO), f"{relative}: drop it from SANDBOX_EXCEPTIONS"


def _docstring(init: Path) -> str:
    return ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""


def test_every_package_says_what_lives_there_and_what_it_may_import():
    packages = [PACKAGE] + sorted(p.parent for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE)
    quiet = [p.relative_to(REPO).as_posix() for p in packages
             if len(_docstring(p / "__init__.py").split()) < 5 or "import" not in _docstring(p / "__init__.py").lower()]
    assert not quiet, f"packages whose __init__.py docstring does not say what lives there and what it imports: {quiet}"


def test_every_directory_of_python_files_is_a_package():
    loose = sorted({p.parent.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py")
                    if not (p.parent / "__init__.py").exists()} - NOT_PACKAGES)
    assert not loose, f"directories with Python files but no __init__.py (add one, with a docstring): {loose}"


# -- the checker catches what it should ------------------------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("line", [
    "from ..models import Portal",               # relative, out of the package
    "from .. import create_app",                 # the root package itself
    "import b24app.config",                      # absolute
    "from b24app.adapters.banks import BankAPI",
    "import httpx",                              # third-party: the domain is stdlib only
    "def later():\n    from ..outbox import _plan\n",  # inside a function
])
def test_the_domain_checker_catches_a_bad_import(tmp_path, line):
    root = _tree(tmp_path, {"b24app/__init__.py": "", "b24app/domain/__init__.py": "",
                            "b24app/domain/bad.py": f"from __future__ import annotations\n{line}\n"})
    assert domain_violations(root / "b24app/domain/bad.py", root)


def test_the_domain_checker_lets_the_domain_and_the_stdlib_through(tmp_path):
    text = "from __future__ import annotations\nimport re\nfrom decimal import Decimal\nfrom . import money\n" \
           "from .errors import DomainError\nimport b24app.domain.numbers\n"
    root = _tree(tmp_path, {"b24app/domain/sub/__init__.py": "from .. import money\nfrom ..errors import X\n",
                            "b24app/domain/good.py": text})
    assert domain_violations(root / "b24app/domain/good.py", root) == []
    assert domain_violations(root / "b24app/domain/sub/__init__.py", root) == []


@pytest.mark.parametrize("where, line", [
    ("b24app/sandbox/bad.py", "from ..config import Settings"),
    ("b24app/sandbox/bad.py", "from .. import create_app"),
    ("b24app/sandbox/portal/bad.py", "from ...clock import now"),  # from a subpackage, two levels up
    ("b24app/sandbox/portal/bad.py", "import b24app.storage.crypto"),
    ("b24app/sandbox/bad.py", "def later():\n    from b24app.web.security import Frame\n"),
])
def test_the_sandbox_checker_catches_an_import_of_the_app(tmp_path, where, line):
    root = _tree(tmp_path, {where: f"import flask\n{line}\n"})
    assert sandbox_violations(root / where, root)


def test_the_sandbox_checker_lets_the_sandbox_stdlib_and_libraries_through(tmp_path):
    text = "import json\nimport flask\nfrom werkzeug.serving import make_server\nfrom .. import server\n" \
           "from ..portal_state import State\nfrom . import pages\nimport b24app.sandbox.tbank.app\n"
    root = _tree(tmp_path, {"b24app/sandbox/portal/good.py": text})
    assert sandbox_violations(root / "b24app/sandbox/portal/good.py", root) == []
