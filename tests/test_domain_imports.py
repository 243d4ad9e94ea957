"""The domain package stays pure: importing it loads no web, database or HTTP library."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = (
    "import b24app.domain, sys; "
    "print(sorted(m for m in sys.modules if m.split('.')[0] in "
    "{'flask','sqlalchemy','httpx','werkzeug','jinja2','authlib','alembic','psycopg'}))"
)


def test_domain_imports_no_framework() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_domain_sources_import_only_stdlib_and_themselves() -> None:
    allowed = set(sys.stdlib_module_names) | {"__future__"}
    for source in (REPO / "b24app" / "domain").glob("*.py"):
        for line in source.read_text(encoding="utf-8").splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] in ("import", "from") and not line.startswith((" ", "\t")):
                module = words[1]
                assert module.startswith(".") or module.split(".")[0] in allowed, (source.name, line)
