"""Liveness, readiness and Prometheus metrics."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from ..metrics import render_prometheus
from .factory import get_ctx

bp = Blueprint("health", __name__)
CSRF_EXEMPT = True


@bp.get("/healthz")
def healthz():
    return jsonify({"ok": True})


@bp.get("/readyz")
def readyz():
    ctx = get_ctx()
    try:
        with ctx.db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any DB failure means not ready
        return jsonify({"ok": False, "db": type(exc).__name__}), 503
    return jsonify({"ok": True})


@bp.get("/metrics")
def metrics():
    return Response(render_prometheus(get_ctx()), mimetype="text/plain; version=0.0.4")
