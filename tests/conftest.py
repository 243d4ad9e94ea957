"""Shared fixtures: a database per test (SQLite by default, PostgreSQL when B24APP_TEST_DATABASE_URL is set)
and the full stack — portal sandbox, bank sandbox and the app — over real sockets."""
from __future__ import annotations

import ast
import inspect
import os
import socket
import textwrap
import time
from functools import lru_cache
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get("B24APP_TEST_DATABASE_URL", "")


def pytest_report_header(config):
    return f"b24app database: {'PostgreSQL ' + PG_URL if PG_URL else 'SQLite (embedded default)'}"


# -- two tiers: `fast` (pure and in-process: no server, no browser, no PostgreSQL) and `e2e` ---------------------
# A test is end-to-end when its code, a fixture it uses (at any depth) or a function or class of ours reached from
# them by name (a few calls deep) names one of SERVER_STARTERS, or when it is marked e2e/browser/postgres/slow;
# every other test is `fast` (`pytest -m fast`). A fast test that opens a listening socket anyway fails
# and says to mark it e2e, so a new test cannot land in the wrong tier silently.
SERVER_STARTERS = frozenset({"start_stack", "start_seeded_stack", "serve_in_thread", "run_demo", "sync_playwright",
                             "serve_forever", "make_server", "listen"})
NOT_FAST = ("e2e", "browser", "postgres", "slow")
OURS = ("b24app", "benchmarks", "tests", "conftest", "test_")


@lru_cache(maxsize=None)
def _names_in(obj) -> frozenset[str]:
    """The identifiers a function's or class's source uses (names and attribute names)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    except (OSError, TypeError, SyntaxError):
        return frozenset()
    return frozenset(n.id if isinstance(n, ast.Name) else n.attr
                     for n in ast.walk(tree) if isinstance(n, (ast.Name, ast.Attribute)))


@lru_cache(maxsize=None)
def _starts_servers(obj, depth: int = 4) -> bool:
    names = _names_in(obj)
    if names & SERVER_STARTERS:
        return True
    if depth == 0:
        return False
    module = inspect.getmodule(obj)
    scope = vars(module) if module else {}
    for name in names:
        target = scope.get(name)
        if ((inspect.isfunction(target) or inspect.isclass(target)) and target is not obj
                and target.__module__.startswith(OURS) and _starts_servers(target, depth - 1)):
            return True
    return False


def _is_end_to_end(item) -> bool:
    if any(item.get_closest_marker(name) for name in NOT_FAST):
        return True
    if getattr(item, "function", None) is not None and _starts_servers(item.function):
        return True
    info = getattr(item, "_fixtureinfo", None)
    return any(_starts_servers(d.func) for defs in (info.name2fixturedefs.values() if info else ()) for d in defs)


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker("e2e" if _is_end_to_end(item) else "fast")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A `fast` test may not listen on a socket, nor may any fixture it sets up: one that does belongs to the
    e2e tier (mark it so)."""
    if item.get_closest_marker("fast") is None:
        yield
        return
    listen = socket.socket.listen

    def refuse(sock, *args):
        raise RuntimeError(f"{item.nodeid} is in the fast tier but starts a server: mark it `@pytest.mark.e2e` "
                           "(or use the stack/installed/linked fixtures)")

    socket.socket.listen = refuse
    try:
        yield
    finally:
        socket.socket.listen = listen


def fresh_database_url(directory: Path) -> str:
    """An empty database: a new SQLite file in `directory`, or the PostgreSQL test database emptied."""
    if not PG_URL:
        return f"sqlite:///{Path(directory) / 'b24app.sqlite3'}"
    engine = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    return PG_URL


@pytest.fixture
def database_url(tmp_path) -> str:
    """A fresh, empty database for one test."""
    return fresh_database_url(tmp_path)


@pytest.fixture
def stack(tmp_path, database_url):
    """Sandboxes + app, nothing installed yet; the worker is not started."""
    from b24app.sandbox.stack import start_stack

    st = start_stack(data_dir=str(tmp_path / "data"), database_url=database_url, event_delivery="sync")
    yield st
    st.stop()


@pytest.fixture
def installed(stack):
    """The app installed into the portal through the real install sequence, with demo deals and invoices."""
    from b24app.sandbox.stack import seed_crm

    result = stack.install()
    assert result["install_status"] == 200 and result["install_finish"], result
    stack.deals = seed_crm(stack)
    return stack


@pytest.fixture
def linked(installed):
    """…and the demo company's T-Bank account linked by SMS."""
    from b24app.sandbox.stack import link_bank

    page = link_bank(installed)
    assert page.status_code == 200 and 'id="link-ok"' in page.text, page.text[:500]
    return installed


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.1):
    """Poll until predicate() is truthy; returns its value or fails with the last one."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


def start_seeded_stack(directory: Path, *, link: bool, worker: bool = False, **kw):
    """A stack with the app installed, the demo deals seeded, the invoice cache read (as the worker does on
    start), optionally the bank linked and the worker running. The caller stops it."""
    from b24app.pipeline.invoices import refresh_all
    from b24app.sandbox.stack import link_bank, seed_crm, start_stack

    st = start_stack(data_dir=str(Path(directory) / "data"), event_delivery="sync",
                     database_url=fresh_database_url(directory), **kw)
    try:
        assert st.install()["install_finish"]
        st.deals = seed_crm(st)
        if link:
            assert 'id="link-ok"' in link_bank(st).text
        refresh_all(st.ctx, st.ctx.portals.find(st.member_id()))
        if worker:
            st.start_worker()
    except BaseException:
        st.stop()
        raise
    return st


# -- Debian's chromium through Playwright (no browser download) ---------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
BROWSER_STEP_MS = 20_000  # any single browser wait


@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium missing: run `bash scripts/ensure_system_deps.sh chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=BROWSER_STEP_MS)
        yield b
        b.close()


def fresh_page(browser, *, width: int = 1280, height: int = 900):
    """A page in a fresh browser context (Russian) whose script errors collect in `page.errors`; close its
    `page.context` when done."""
    context = browser.new_context(viewport={"width": width, "height": height}, locale="ru-RU")
    context.set_default_timeout(BROWSER_STEP_MS)
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
    return pg


@pytest.fixture
def page(browser):
    """A fresh browser page, 1280×900."""
    pg = fresh_page(browser)
    yield pg
    pg.context.close()

def open_admin_page(browser, live, *, height: int = 900):
    """A fresh browser context on the app's admin page, as the portal's administrator, in Russian: (context, page,
    the app's frame, the page errors seen so far). The caller closes the context."""
    from b24app.sandbox.stack import APP_CLIENT_ID

    page = fresh_page(browser, height=height)
    context, errors = page.context, page.errors
    try:
        page.goto(f"{live.portal_url}/marketplace/app/{APP_CLIENT_ID}/?user=1&lang=ru")
        app = page.frame_locator("#app-frame")
        app.locator("#b24app[data-page='admin']").wait_for()
    except BaseException:
        context.close()
        raise
    return context, page, app, errors
