"""b24app: T-Bank payments reconciled against Bitrix24 smart invoices within seconds.

Where things are: a payment enters in `sync.py` (statement → `operations`), is matched by the pure
`domain/` code from `reconcile.py`, and leaves through `outbox.py` to Bitrix24. Web entry points are in
`web/`, the worker loop in `worker.py`, the sandboxes in `sandbox/`.

Packages and what they may import (tests/test_import_rules.py checks the rules it names):
- `domain/`: pure matching and money; imports only the standard library.
- `bitrix/`, `bank/`: clients of Bitrix24 and the banks; import only themselves, the stdlib and HTTP/crypto libraries.
- `web/`: the Flask adapter (request parsing, access checks, rendering); imports the services at the root,
  never `models` or sqlalchemy.
- `sandbox/`: stand-ins for Bitrix24 and the banks; never imports the app (`sandbox/stack.py`, which runs the app
  beside them, excepted).
- the root modules (storage, pipeline, services) import `domain/`, `bitrix/`, `bank/`; only the entry points
  (`create_app` here, `wsgi.py`, `demo.py`) import `web/` or `sandbox/`.
Files that are not Python (templates, static files, the manifest) are found with `resources.resource_path`.
"""
from __future__ import annotations


def create_app(settings=None, **kw):
    """Flask application factory (imports Flask lazily so `b24app.domain` stays light)."""
    from .web.factory import create_app as _create_app

    return _create_app(settings, **kw)
