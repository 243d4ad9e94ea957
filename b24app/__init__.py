"""b24app: T-Bank payments reconciled against Bitrix24 smart invoices within seconds.

Where things are: a payment enters in `sync.py` (statement → `operations`), is matched by the pure
`domain/` code from `reconcile.py`, and leaves through `outbox.py` to Bitrix24. Web entry points are in
`web/`, the worker loop in `worker.py`, the sandboxes in `sandbox/`.
"""
from __future__ import annotations


def create_app(settings=None, **kw):
    """Flask application factory (imports Flask lazily so `b24app.domain` stays light)."""
    from .web.factory import create_app as _create_app

    return _create_app(settings, **kw)
