"""Tests for the test-infrastructure scripts and the operator kit's gunicorn settings, run for real."""
from __future__ import annotations

import glob
import importlib.util
import os
import re
import runpy
import signal
import socket
import subprocess
import sys
import time
import uuid
import shutil
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
PG_SCRIPT = ROOT / "scripts" / "pg_throwaway.py"
DEPS_SCRIPT = ROOT / "scripts" / "ensure_system_deps.sh"
GUNICORN_CONF = ROOT / "install" / "gunicorn.conf.py"

HAVE_PG = bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
needs_pg = pytest.mark.skipif(
    not HAVE_PG, reason="PostgreSQL server missing: run bash scripts/ensure_system_deps.sh postgresql"
)
pytestmark = pytest.mark.e2e  # starts PostgreSQL clusters and gunicorn in subprocesses


def run_pg(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PG_SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def load_pg_module(monkeypatch):
    spec = importlib.util.spec_from_file_location("pg_throwaway", PG_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "pg_throwaway", module)  # dataclasses look the module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fresh_tmp_dir():
    """A not-yet-existing path directly under /tmp (reachable by the postgres user), removed afterwards."""
    path = Path("/tmp") / f"b24app-pg-test-{uuid.uuid4().hex[:10]}"
    yield path
    if path.exists():
        subprocess.run([sys.executable, str(PG_SCRIPT), "stop", "--dir", str(path)], timeout=120)
        shutil.rmtree(path, ignore_errors=True)


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- scripts/pg_throwaway.py ---------------------------------------------------------------------


@needs_pg
def test_start_connect_stop_from_an_unreadable_working_directory(tmp_path, fresh_tmp_dir):
    psycopg = pytest.importorskip("psycopg")
    private_cwd = tmp_path / "private"
    private_cwd.mkdir(mode=0o700)  # the postgres user cannot enter it
    cluster_dir = fresh_tmp_dir
    started = run_pg("start", "--dir", str(cluster_dir), cwd=private_cwd)
    try:
        assert started.returncode == 0, started.stderr
        lines = started.stdout.splitlines()
        assert len(lines) == 1
        url = lines[0]
        match = re.fullmatch(r"postgresql\+psycopg://postgres@127\.0\.0\.1:(\d+)/b24app_test", url)
        assert match, url
        port = int(match.group(1))

        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=10) as conn:
            conn.execute("create table t (amount numeric(14, 2))")
            conn.execute("insert into t values (12.34), (0.66)")
            total, db = conn.execute("select sum(amount), current_database() from t").fetchone()
        assert str(total) == "13.00" and db == "b24app_test"

        again = run_pg("url", "--dir", str(cluster_dir))
        assert again.returncode == 0 and again.stdout.strip() == url
    finally:
        stopped = run_pg("stop", "--dir", str(cluster_dir), cwd=private_cwd)
    assert stopped.returncode == 0, stopped.stderr
    assert not cluster_dir.exists()
    assert not port_open(port)


@needs_pg
def test_default_dir_is_reported_on_stderr_and_two_clusters_coexist():
    first = run_pg("start")
    second = run_pg("start")
    dirs = [re.search(r"cluster dir (\S+)", p.stderr) for p in (first, second)]
    try:
        assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
        assert all(dirs)
        paths = [Path(m.group(1)) for m in dirs]
        assert all(str(p).startswith("/tmp/b24app-pg.") for p in paths)
        assert first.stdout != second.stdout  # different ports
    finally:
        results = [run_pg("stop", "--dir", m.group(1)) for m in dirs if m]
    assert all(r.returncode == 0 for r in results)
    assert not any(Path(m.group(1)).exists() for m in dirs if m)


@needs_pg
def test_busy_explicit_port_fails_cleanly(fresh_tmp_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cluster_dir = fresh_tmp_dir
        result = run_pg("start", "--dir", str(cluster_dir), "--port", str(port))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "could not bind" in result.stderr
    assert not cluster_dir.exists()


@needs_pg
@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the directory to the postgres user")
def test_directory_the_postgres_user_cannot_reach_is_refused(tmp_path):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    tmp_path.chmod(0o700)  # postgres cannot traverse into hidden/
    result = run_pg("start", "--dir", str(hidden / "cluster"))
    assert result.returncode == 1
    assert "use a directory under /tmp" in result.stderr
    assert not (hidden / "cluster").exists()


def test_stop_refuses_a_directory_it_did_not_create(tmp_path):
    keep = tmp_path / "precious.txt"
    keep.write_text("do not delete")
    result = run_pg("stop", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert "refusing" in result.stderr
    assert keep.read_text() == "do not delete"


def test_start_refuses_a_non_empty_directory(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name in ("initdb", "pg_ctl"):
        (fake_bin / name).write_text("")
    target = tmp_path / "cluster"
    target.mkdir()
    (target / "x").write_text("")
    result = run_pg("start", "--dir", str(target), "--bindir", str(fake_bin))
    assert result.returncode == 1
    assert "not empty" in result.stderr
    assert sorted(p.name for p in target.iterdir()) == ["x"]


def test_missing_binaries_point_to_the_install_script(tmp_path, monkeypatch):
    module = load_pg_module(monkeypatch)
    monkeypatch.setattr(module, "PG_ROOT", tmp_path)
    monkeypatch.delenv("B24APP_PG_BINDIR", raising=False)
    with pytest.raises(module.PgThrowawayError, match="ensure_system_deps.sh postgresql"):
        module.find_bindir()
    for version in ("9.6", "15", "16"):
        bindir = tmp_path / version / "bin"
        bindir.mkdir(parents=True)
        (bindir / "initdb").write_text("")
        (bindir / "pg_ctl").write_text("")
    assert module.find_bindir() == tmp_path / "16" / "bin"


# --- scripts/ensure_system_deps.sh ---------------------------------------------------------------


def test_ensure_system_deps_rejects_unknown_names():
    result = subprocess.run(["bash", str(DEPS_SCRIPT), "nginx"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "unknown dependency 'nginx'" in result.stderr


@needs_pg
def test_ensure_system_deps_is_silent_when_present():
    result = subprocess.run(["bash", str(DEPS_SCRIPT), "postgresql"], capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


# --- install/gunicorn.conf.py --------------------------------------------------------------------


def test_gunicorn_workers_come_from_web_concurrency(monkeypatch):
    monkeypatch.setenv("B24APP_WEB_CONCURRENCY", "3")
    monkeypatch.setenv("B24APP_LOG_LEVEL", "WARNING")
    conf = runpy.run_path(str(GUNICORN_CONF))
    assert conf["workers"] == 3
    assert conf["loglevel"] == "warning"
    assert conf["bind"] == ["127.0.0.1:8000"]
    for atom in ("%(r)s", "%(q)s", "%(f)s"):
        assert atom not in conf["access_log_format"]
    monkeypatch.setenv("B24APP_WEB_CONCURRENCY", "zero")
    with pytest.raises(SystemExit, match="B24APP_WEB_CONCURRENCY"):
        runpy.run_path(str(GUNICORN_CONF))


APP_MODULE = '''
def app(environ, start_response):
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("boom")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''


def test_gunicorn_logs_never_contain_query_strings(tmp_path):
    (tmp_path / "tinyapp.py").write_text(APP_MODULE)
    log = tmp_path / "gunicorn.log"
    env = {**os.environ, "B24APP_WEB_CONCURRENCY": "1", "B24APP_LOG_LEVEL": "INFO"}
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "-b", "127.0.0.1:0",
             "--pythonpath", str(tmp_path), "tinyapp:app"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        port = None
        while port is None and time.monotonic() < deadline and proc.poll() is None:
            found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", log.read_text())
            port = int(found.group(1)) if found else None
            time.sleep(0.1)
        assert port, log.read_text()
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=10) as client:
            ok = None
            while ok is None and time.monotonic() < deadline:
                try:
                    ok = client.get(f"{base}/hello?auth=SECRET1&DOMAIN=x", headers={"X-Request-Id": "r-42"})
                except httpx.TransportError:
                    time.sleep(0.1)
            assert ok is not None and ok.text == "ok"
            assert client.get(f"{base}/boom?auth=SECRET2").status_code == 500
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=40)
    text = log.read_text()
    assert re.search(r'"GET /hello HTTP/1\.1" 200 .* rid=r-42', text), text
    assert "Error handling request" in text
    assert "SECRET" not in text


# --- install/ documentation ----------------------------------------------------------------------

SETTINGS = (
    "MODE SECRET_KEY TOKEN_KEYS DATABASE_URL DATA_DIR PUBLIC_URL BITRIX_CLIENT_ID BITRIX_CLIENT_SECRET "
    "BITRIX_APP_CODE BITRIX_OAUTH_SERVERS BX24_JS_URL TBANK_CLIENT_ID TBANK_CLIENT_SECRET TBANK_ID_URL TBANK_API_URL "
    "SYNC_INTERVAL WORKER_CONCURRENCY LOG_LEVEL REST_LOG_DIR WEB_CONCURRENCY "
    "OPERATOR_EMAIL STATEMENT_MAX_BYTES TOCHKA_CLIENT_ID TOCHKA_CLIENT_SECRET TOCHKA_AUTH_URL TOCHKA_API_URL "
    "TOCHKA_WEBHOOK_KEY_URL TRUSTED_PROXIES RATELIMIT_FAILURES_PER_IP RATELIMIT_FAILURES_PER_MEMBER RATELIMIT_NEGATIVE_TTL RATELIMIT_STORAGE_URI"
).split()


def test_every_setting_is_in_the_env_example_and_the_readme_table():
    example = (ROOT / "install" / "b24app.env.example").read_text()
    readme = (ROOT / "install" / "README.md").read_text()
    example_keys = set(re.findall(r"^#?(B24APP_[A-Z0-9_]+)=", example, re.M))
    table_keys = set(re.findall(r"^\| `(B24APP_[A-Z0-9_]+)` \|", readme, re.M))
    expected = {f"B24APP_{name}" for name in SETTINGS}
    assert expected <= example_keys, expected - example_keys
    assert expected <= table_keys, expected - table_keys
    assert example_keys == table_keys, example_keys ^ table_keys
