"""Tables (`models`), engine and sessions (`db`), migrations (`migrate`, `migrations/`), row leases
(`leases`), secrets at rest (`crypto`, `keyrotation`).

May import only itself, `b24app.domain` values and SQLAlchemy/Alembic/cryptography: nothing above it.
"""
