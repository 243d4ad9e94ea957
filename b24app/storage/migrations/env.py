"""Alembic environment: runs against the URL given by b24app.storage.migrate (SQLite or PostgreSQL)."""
from __future__ import annotations

from alembic import context

from b24app.storage import models  # noqa: F401  (registers the tables)
from b24app.storage.db import Base, make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
