"""WSGI entry point for gunicorn: `gunicorn b24app.wsgi:app` (configuration from B24APP_* variables)."""
from . import create_app

app = create_app()
