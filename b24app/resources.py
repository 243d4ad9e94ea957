"""Where the app's own files are: `templates/`, `static/`, `manifest.json` and the contract fixtures.

Their source is the top of the repository (`templates/`, `static/`, `manifest.json`, `tests/contracts/`). A
built wheel carries a copy inside the package, in `b24app/_files/` (setup.py copies them at build time), so an
installed app needs no checkout. `resource_path` prefers that copy and falls back to the checkout, which is
what a run from the repository (`PYTHONPATH=.` or `pip install -e .`) finds. Imports nothing of ours.
"""
from __future__ import annotations

from pathlib import Path

import b24app

PACKAGE = Path(b24app.__file__).resolve().parent
BUNDLED = PACKAGE / "_files"  # filled by setup.py's build_py in a wheel; absent in a checkout
CHECKOUT = PACKAGE.parent
# name inside the package's _files/ -> path in the checkout (setup.py copies the one onto the other)
SHIPPED = {"templates": "templates", "static": "static", "manifest.json": "manifest.json",
           "contracts": "tests/contracts"}


class ResourceMissing(FileNotFoundError):
    """Neither the installed package nor a checkout holds the file."""


def resource_path(name: str) -> Path:
    """The path of one shipped file or directory (a key of SHIPPED): the wheel's copy, else the checkout's."""
    if name not in SHIPPED:
        raise KeyError(f"{name!r} is not a shipped resource (one of {sorted(SHIPPED)})")
    for candidate in (BUNDLED / name, CHECKOUT / SHIPPED[name]):
        if candidate.exists():
            return candidate
    raise ResourceMissing(f"{name} not found in {BUNDLED} (an installed wheel) nor in {CHECKOUT / SHIPPED[name]} "
                          f"(a checkout): reinstall the package")
