"""Configuration rules, migrations that match the models, health endpoints, and no I/O at import."""
from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from b24app.config import ConfigError, from_env
from b24app.storage.db import Base, make_engine
from b24app.storage.migrate import migration_head, upgrade

PROD = {"B24APP_MODE": "production", "B24APP_SECRET_KEY": "x" * 40,
        "B24APP_TOKEN_KEYS": "ZmRrZmRrZmRrZmRrZmRrZmRrZmRrZmRrZmRrZmRrZmQ=",
        "B24APP_BITRIX_CLIENT_ID": "app", "B24APP_BITRIX_CLIENT_SECRET": "secret",
        "B24APP_TBANK_CLIENT_ID": "tid", "B24APP_TBANK_CLIENT_SECRET": "tsecret",
        "B24APP_PUBLIC_URL": "https://app.example.com", "B24APP_DATABASE_URL": "sqlite:///:memory:"}


def test_production_needs_its_secrets(tmp_path):
    env = {**PROD, "B24APP_DATA_DIR": str(tmp_path)}
    assert from_env(env).is_production
    for missing in ("B24APP_SECRET_KEY", "B24APP_TOKEN_KEYS", "B24APP_BITRIX_CLIENT_SECRET"):
        with pytest.raises(ConfigError, match=missing):
            from_env({k: v for k, v in env.items() if k != missing})
    with pytest.raises(ConfigError, match="https"):
        from_env({**env, "B24APP_PUBLIC_URL": "http://app.example.com"})
    with pytest.raises(ConfigError, match="Fernet"):
        from_env({**env, "B24APP_TOKEN_KEYS": "not-a-key"})
    assert not list(tmp_path.iterdir()), "production mode never invents secrets on disk"


def test_demo_generates_secrets_once_per_data_dir(tmp_path):
    a = from_env({"B24APP_MODE": "demo", "B24APP_DATA_DIR": str(tmp_path)})
    b = from_env({"B24APP_MODE": "demo", "B24APP_DATA_DIR": str(tmp_path)})
    c = from_env({"B24APP_MODE": "demo", "B24APP_DATA_DIR": str(tmp_path / "other")})
    assert a.secret_key == b.secret_key and a.token_keys == b.token_keys
    assert a.secret_key != c.secret_key
    assert (tmp_path / "secrets.env").stat().st_mode & 0o077 == 0


def test_unknown_mode_is_refused():
    with pytest.raises(ConfigError):
        from_env({"B24APP_MODE": "staging"})


def test_importing_the_package_does_no_io(tmp_path):
    code = ("import os, b24app, b24app.web.factory, b24app.pipeline.worker, b24app.cli; "
            "print(sorted(os.listdir('.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"})
    assert out.stdout.strip() == "[]"


def test_migrations_produce_exactly_the_models(database_url):
    upgrade(database_url)
    engine = make_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    engine.dispose()
    assert diff == []
    assert version == migration_head()


def test_db_upgrade_command_migrates_and_refreshes_postgresql_statistics(database_url, tmp_path):
    env = {"B24APP_MODE": "demo", "B24APP_DATA_DIR": str(tmp_path), "B24APP_DATABASE_URL": database_url,
           "PATH": "/usr/bin:/bin"}
    cli = subprocess.run([sys.executable, "-m", "b24app.cli", "db", "upgrade"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    engine = make_engine(database_url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar() == migration_head()
        if engine.dialect.name == "postgresql":
            assert "statistics refreshed" in cli.stdout
            analyzed = conn.exec_driver_sql("SELECT last_analyze FROM pg_stat_user_tables "
                                            "WHERE relname = 'bank_accounts'").scalar()
            assert analyzed is not None
        else:
            assert cli.stdout.strip() == "database at head"
    engine.dispose()


def test_health_endpoints(stack):
    assert httpx.get(stack.app_url + "/healthz", timeout=10).json() == {"ok": True}
    ready = httpx.get(stack.app_url + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["schema"] == migration_head()
    metrics = httpx.get(stack.app_url + "/metrics", timeout=10)
    assert metrics.status_code == 200 and "# TYPE b24app_operations gauge" in metrics.text


def test_readyz_says_when_the_schema_is_behind(stack):
    with stack.ctx.db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'old'")
    r = httpx.get(stack.app_url + "/readyz", timeout=10)
    assert r.status_code == 503 and r.json()["fix"] == "b24app db upgrade"


def test_a_vanished_rest_log_directory_does_not_break_rest_calls(tmp_path):
    import logging
    import shutil

    from b24app.config import Settings, finalize
    from b24app.logging_setup import configure_logging

    log_dir = tmp_path / "rest-log"
    rest = logging.getLogger("b24app.rest")
    before = list(rest.handlers)
    configure_logging(finalize(Settings(mode="test", data_dir=str(tmp_path), rest_log_dir=str(log_dir))))
    rest.debug("rest call", extra={"method": "user.current"})
    assert (log_dir / "rest.log").read_text().count("user.current") == 1
    shutil.rmtree(log_dir)
    logging.raiseExceptions, saved = False, logging.raiseExceptions
    try:
        rest.debug("rest call", extra={"method": "user.current"})  # must not raise FileNotFoundError
    finally:
        logging.raiseExceptions = saved
        for handler in set(rest.handlers) - set(before):  # leave no handler on a deleted file behind
            rest.removeHandler(handler)
            handler.close()
