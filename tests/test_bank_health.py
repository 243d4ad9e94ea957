"""The bank link's health comes from stored error codes, not from the words of the bank's message (issue 14).

Black-box: the T-Bank sandbox fails the statement read with the text the test chooses; the admin page's bank
card (/app/api/bank) says what a person sees.
"""
from __future__ import annotations

import httpx
import pytest
from sqlalchemy import select

from b24app.pipeline import sync
from b24app.storage.models import BankAccount, Portal

from test_hostile_payments import frame_token
from test_reconcile_e2e import run_worker_until_idle

CORPORATE = "Выписка по корпоративной карте (corporate card) временно недоступна; rate: 0"


def _fail_reads_with(linked, kind: str, message: str) -> None:
    r = httpx.post(f"{linked.bank_url}/sandbox/faults", json={"kinds": {kind: 1.0}, "messages": {kind: message}},
                   timeout=30)
    r.raise_for_status()


def _health_after_a_failed_read(linked) -> tuple[str, list[tuple[str | None, str | None]]]:
    with linked.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
    sync.request_sync(linked.ctx, portal.id)
    try:
        run_worker_until_idle(linked)
    finally:
        httpx.delete(f"{linked.bank_url}/sandbox/faults", timeout=30)
    with linked.ctx.db.session() as s:
        errors = [(a.last_error, a.last_error_code) for a in s.scalars(select(BankAccount)) if a.watched]
    card = linked.flask_app.test_client().get("/app/api/bank", headers={"X-Frame-Token": frame_token(linked)})
    assert card.status_code == 200, card.get_data(as_text=True)[:300]
    return card.get_json()["health"], errors


def test_a_server_error_that_mentions_a_corporate_card_is_not_a_rate_limit(linked):
    _fail_reads_with(linked, "server_error", CORPORATE)
    health, errors = _health_after_a_failed_read(linked)
    assert errors and all("corporate" in (text or "") for text, _ in errors), errors   # the text is kept for people
    assert {code for _, code in errors} == {"bank_error"}
    assert health == "error"


@pytest.mark.parametrize(("message", "health", "code"), [
    ("Слишком много запросов", "rate_limited", "rate_limited"),   # a real 429, whatever its words
    ("Unauthorized corporate token 401", "error", "bank_error"),  # words of consent in a 500 are no consent
])
def test_health_follows_the_code_of_the_error(linked, message, health, code):
    kind = "rate_limit" if code == "rate_limited" else "server_error"
    _fail_reads_with(linked, kind, message)
    got, errors = _health_after_a_failed_read(linked)
    assert {c for _, c in errors} == {code}, errors
    assert got == health


def test_the_migration_gives_stored_errors_the_code_they_were_written_from(database_url):
    """Rows failed before 0011 have only the text record_failure wrote ("<class>: <message>"): the class name,
    not the message's words, gives their code."""
    from sqlalchemy import create_engine, text

    from b24app.storage.migrate import upgrade

    upgrade(database_url, "0010_upload_statement_files")
    engine = create_engine(database_url)
    now = "2026-01-01 00:00:00"
    texts = {"RateLimited: 429 TOO_MANY_REQUESTS: Слишком много запросов (request 1)": "rate_limited",
             "needs_consent": "needs_consent",
             "Unauthorized: 401 UNAUTHORIZED: Токен недействителен (request 2)": "needs_consent",
             f"BankServerError: 500 INTERNAL_ERROR: {CORPORATE} (request 3)": "bank_error",
             "BankUnavailable: the bank could not be reached": "unavailable",
             "RuntimeError: internal error": "internal",
             None: None}
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO portals (id, member_id, domain, client_endpoint, server_endpoint, status, lang,"
                          " token_generation, settings, installed_at, updated_at) VALUES (1, 'm', 'd', 'c', 's',"
                          " 'installed', 'ru', 0, '{}', :now, :now)"), {"now": now})
        conn.execute(text("INSERT INTO bank_links (id, portal_id, kind, status, inn, kpp, scopes, token_generation,"
                          " created_at, updated_at) VALUES (1, 1, 'tid', 'active', '7701234560', '770101001', '[]', 0,"
                          " :now, :now)"), {"now": now})
        for n, error in enumerate(texts, 1):
            conn.execute(text("INSERT INTO bank_accounts (id, link_id, portal_id, account_number, currency, watched,"
                              " next_sync_at, failures, last_error) VALUES (:n, 1, 1, :acc, 'RUB', true, :now, 1, :e)"),
                         {"n": n, "acc": f"4070281000000000000{n}", "now": now, "e": error})
    upgrade(database_url)
    with engine.connect() as conn:
        got = dict(conn.execute(text("SELECT last_error, last_error_code FROM bank_accounts")).all())
    engine.dispose()
    assert got == texts
