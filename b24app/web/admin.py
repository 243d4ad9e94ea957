"""Placeholder until the UI lands: the blueprint exists so create_app() wires it."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("admin", __name__)
CSRF_EXEMPT = True
