"""Liveness, readiness and Prometheus metrics."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify

from ..metrics import render_prometheus
from b24app.storage.migrate import migration_head, schema_revision
from .common import get_ctx

bp = Blueprint("health", __name__)
CSRF_EXEMPT = True


@bp.get("/healthz")
def healthz():
    return jsonify({"ok": True})


@bp.get("/readyz")
def readyz():
    ctx = get_ctx()
    try:
        current = schema_revision(ctx.db.engine)
    except Exception as exc:  # noqa: BLE001 - any DB failure means not ready
        return jsonify({"ok": False, "db": type(exc).__name__}), 503
    head = migration_head()
    if current != head:
        return jsonify({"ok": False, "schema": current, "expected": head, "fix": "b24app db upgrade"}), 503
    return jsonify({"ok": True, "schema": current})


@bp.get("/metrics")
def metrics():
    return Response(render_prometheus(get_ctx()), mimetype="text/plain; version=0.0.4")
