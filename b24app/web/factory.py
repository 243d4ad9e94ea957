"""`create_app()`: wire settings, context, blueprints, CSRF, i18n and security headers."""
from __future__ import annotations

import logging

from flask import Flask, g

from ..config import Settings, from_env
from ..context import AppContext
from ..logging_setup import configure_logging
from ..resources import resource_path
from .common import csrf


def create_app(settings: Settings | None = None, *, context: AppContext | None = None, **overrides) -> Flask:
    settings = settings or from_env(**overrides)
    ctx = context or AppContext(settings)
    app = Flask("b24app", template_folder=str(resource_path("templates")),
                static_folder=str(resource_path("static")),
                static_url_path="/static")
    app.config.update(
        SECRET_KEY=settings.secret_key,
        MAX_CONTENT_LENGTH=settings.max_content_length,
        MAX_FORM_MEMORY_SIZE=256 * 1024,
        MAX_FORM_PARTS=200,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.public_url.startswith("https://"),
        WTF_CSRF_TIME_LIMIT=3600,
        WTF_CSRF_SSL_STRICT=True,
        TESTING=settings.mode == "test",
    )
    app.extensions["b24app"] = ctx
    configure_logging(settings)
    csrf.init_app(app)

    from . import admin, tbank as bank, events, health, i18n, install, placement, security, throttle, tochka, upload

    i18n.init_app(app)
    upload.init_app(app)  # before security's hook reads a form: the upload's larger size limit
    security.init_app(app)
    throttle.init_app(app, settings)
    for module in (install, events, placement, admin, bank, tochka, health, upload):
        app.register_blueprint(module.bp)
        if getattr(module, "CSRF_EXEMPT", False):
            csrf.exempt(module.bp)

    @app.teardown_appcontext
    def _teardown(_exc):
        g.pop("portal", None)

    logging.getLogger("b24app").debug("app created", extra={"mode": settings.mode})
    return app
