"""b24app: T-Bank, Tochka and 1C-file payments reconciled against Bitrix24 smart invoices within seconds.

Where a payment goes: it enters in `pipeline/sync.py` (a bank's statement; `pipeline/statement_import.py` for a
1C file), is matched by the pure `domain/` from `pipeline/reconcile.py`, and leaves through `pipeline/outbox.py`
to Bitrix24. `pipeline/worker.py` schedules it; `web/` is where people and Bitrix24 call in.

Packages, top to bottom, and what each may import (tests/test_import_rules.py and tests/test_layers.py check):
- `web/`: the Flask adapter (request parsing, access checks, rendering); imports `queries/` and the services,
  never `storage.models` or sqlalchemy.
- `queries/`: read models for the deal tab and the admin page; never Flask.
- `pipeline/`: the payment's path and the services beside it; `portals/` installations and their tokens;
  `banklinks/` linked banks. They import `adapters/`, `storage/`, `domain/`.
- `adapters/`: clients of Bitrix24 and the banks; import only `domain/`, `backoff`, HTTP/crypto libraries.
- `storage/`: tables, sessions, migrations, leases, secrets at rest.
- `domain/`: pure matching and money; imports only the standard library.
- `sandbox/`: stand-ins for Bitrix24, T-Bank and Tochka; never imports the app (`sandbox/stack.py`, which runs
  the app beside them, excepted).
Root modules are wiring and tools (`config`, `context`, `clock`, `backoff`, `resources`, `cli`, `demo`, `probe`,
`contracts`, `manifest`, `metrics`, `logging_setup`, `wsgi`); only the entry points import `web/` or `sandbox/`.
Files that are not Python (templates, static files, the manifest) are found with `resources.resource_path`.
"""
from __future__ import annotations


def create_app(settings=None, **kw):
    """Flask application factory (imports Flask lazily so `b24app.domain` stays light)."""
    from .web.factory import create_app as _create_app

    return _create_app(settings, **kw)
