"""Secrets stay secret: no token, client secret, SMS code or webhook secret in any log line, in the database
or in an error page during a full flow (install, link, payments, refresh of both tokens, uninstall); and
`b24app rotate-keys` re-encrypts every stored secret so the old key can be dropped."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, select

from b24app.pipeline import sync
from b24app.banklinks.tbank import LinkTokens, bank_api
from b24app.storage.crypto import TokenCipherError
from b24app.storage.db import Base
from b24app.storage.models import BankLink, OAuthState, Portal
from b24app.sandbox.stack import (APP_CLIENT_ID, APP_CLIENT_SECRET, BANK_CLIENT_SECRET, link_bank, link_ticket,
                                  seed_crm, submit_form)
from b24app.pipeline.worker import Worker

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
_STD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class Capture(logging.Handler):
    """Keeps every record in full: message, every `extra` field, exception and stack text."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        parts = [record.name, record.getMessage()]
        parts += [f"{k}={v!r}" for k, v in vars(record).items() if k not in _STD]
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            parts.append(record.stack_info)
        from b24app.logging_setup import JsonFormatter
        parts.append(JsonFormatter().format(record))
        self.lines.append(" ".join(parts))


@pytest.fixture
def captured():
    """DEBUG for the app and werkzeug, INFO for everything else (httpx logs every URL it calls)."""
    handler = Capture()
    loggers = {logging.getLogger(name): logging.DEBUG for name in ("b24app", "werkzeug")}
    loggers[logging.getLogger()] = logging.INFO
    saved = {lg: lg.level for lg in loggers}
    for lg, level in loggers.items():
        lg.addHandler(handler)
        lg.setLevel(level)
    yield handler.lines
    for lg, level in saved.items():
        lg.removeHandler(handler)
        lg.setLevel(level)


def portal_of(stack) -> Portal:
    with stack.ctx.db.session() as s:
        return s.scalar(select(Portal).where(Portal.member_id == stack.member_id()))


def run_worker(stack, rounds: int = 20) -> None:
    w = Worker(stack.ctx, concurrency=1)
    for _ in range(rounds):
        if not w.run_once():
            break


def sandbox_secrets(stack) -> dict[str, str]:
    """Every secret the sandboxes ever issued, plus both client secrets: {secret: what it is}."""
    out = {APP_CLIENT_SECRET: "bitrix client secret", BANK_CLIENT_SECRET: "bank client secret"}
    for code in httpx.get(f"{stack.sandbox_url}/sandbox/state", timeout=30).json()["portals"]:
        state = httpx.get(f"{stack.sandbox_url}/p/{code}/sandbox/state", timeout=30).json()
        out.update({t["token"]: f"portal {code} {t['kind']} token" for t in state["issued_tokens"]})
        out.update({a["application_token"]: f"portal {code} application token"
                    for a in state["installed_apps"] + state["uninstalled_apps"]})
    out.update({t["token"]: f"bank {t['kind']} token" for t in stack.bank_state()["issued_tokens"]})
    return out


def database_text(stack) -> bytes:
    """The database as bytes: the SQLite files themselves, or every row of every table on PostgreSQL."""
    url = stack.settings.database_url
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    engine = create_engine(url)
    chunks = []
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(table.select()):
                chunks.append(json.dumps([str(v) for v in row], ensure_ascii=False))
    engine.dispose()
    return "\n".join(chunks).encode()


def standalone(code: str, text_: str) -> bool:
    return re.search(rf"(?<![0-9A-Za-z]){re.escape(code)}(?![0-9A-Za-z])", text_) is not None


def test_no_secret_in_logs_database_or_error_pages_during_a_full_flow(stack, captured):
    # install, seed, link by SMS, a paid invoice
    assert stack.install()["install_finish"]
    stack.deals = seed_crm(stack)
    assert 'id="link-ok"' in link_bank(stack).text
    with stack.ctx.db.session() as s:
        link = s.scalar(select(BankLink))
    webhook_secret = stack.ctx.cipher.decrypt(f"webhook:{link.id}", link.webhook_secret_enc)
    d = stack.deals[0]
    stack.pay(d["amount"], f"Оплата по счету № {d['number']}", payerInn=d["inn"], payerName=d["company"])
    sync.request_sync(stack.ctx, portal_of(stack).id)
    run_worker(stack)
    # both tokens expire; the next round refreshes them (rotating refresh tokens on both sides)
    httpx.post(f"{stack.portal_url}/sandbox/expire-tokens", timeout=30).raise_for_status()
    httpx.post(f"{stack.bank_url}/sandbox/expire-tokens", timeout=30).raise_for_status()
    before = (portal_of(stack).token_generation, link.token_generation)
    d2 = stack.deals[1]
    stack.pay("1000.00", f"Оплата по счету {d2['number']}", payerInn=d2["inn"])
    sync.request_sync(stack.ctx, portal_of(stack).id)
    run_worker(stack)
    with stack.ctx.db.session() as s:
        link = s.get(BankLink, link.id)
    assert (portal_of(stack).token_generation, link.token_generation) > before
    assert portal_of(stack).token_generation > before[0] and link.token_generation > before[1]
    # an admin pastes a cabinet token too (checked, then stored)
    static = httpx.post(f"{stack.bank_url}/sandbox/companies", json={
        "inn": "7709876543", "kpp": "770901001", "name": "ООО «Склад»", "phones": ["+79990000077"]}, timeout=30)
    assert static.status_code == 200, static.text
    from b24app.sandbox.stack import ensure_own_company
    ensure_own_company(stack, "7709876543", "770901001", "ООО «Склад»")  # one of the portal's own companies
    pasted = httpx.post(f"{stack.bank_url}/sandbox/static-tokens", json={"inn": "7709876543", "kpp": "770901001"},
                        timeout=30).json()["token"]
    with httpx.Client(timeout=30) as browser:
        page = browser.get(f"{stack.app_url}/bank/token", params={"ticket": link_ticket(stack)})
        assert 'id="link-ok"' in submit_form(browser, page, {"token": pasted}).text
        again = browser.get(f"{stack.app_url}/bank/token", params={"ticket": link_ticket(stack)})
        rejected = submit_form(browser, again, {"token": "t.static-" + "q" * 40})
    # error pages, fed with real secrets, do not repeat them
    other = httpx.post(f"{stack.sandbox_url}/sandbox/portals", json={"code": "other"}, timeout=30).json()
    state = stack.portal_state()
    app_token = state["installed_apps"][0]["application_token"]
    access = stack.ctx.portals.load(stack.member_id()).access_token
    pages = [
        rejected,
        httpx.post(f"{stack.app_url}/install", params={"DOMAIN": "evil.example", "PROTOCOL": "0"},
                   data={"AUTH_ID": access, "REFRESH_ID": access, "member_id": other["member_id"],
                         "SERVER_ENDPOINT": f"{stack.sandbox_url}/rest/", "APPLICATION_TOKEN": app_token}, timeout=30),
        httpx.post(f"{stack.app_url}/events/app", data={"event": "ONAPPUPDATE", "auth[member_id]": "x",
                                                        "auth[application_token]": app_token,
                                                        "auth[access_token]": access}, timeout=30),
        httpx.post(f"{stack.app_url}/events/app", data={"event": "ONAPPUNINSTALL",
                                                        "auth[member_id]": stack.member_id(),
                                                        "auth[application_token][x]": app_token}, timeout=30),
        httpx.post(f"{stack.app_url}/bank/webhook/{link.id}", json={},
                   headers={"Authorization": f"Bearer {webhook_secret}x"}, timeout=30),
        httpx.post(f"{stack.app_url}/placement/deal", data={"member_id": stack.member_id(), "AUTH_ID": access + "x",
                                                            "PLACEMENT": "CRM_DEAL_DETAIL_TAB"}, timeout=30),
        httpx.post(f"{stack.app_url}/events/crm", data={"auth[application_token]": app_token, "x": "a" * (2 << 20)},
                   timeout=30),
    ]
    for page in pages:
        assert page.status_code >= 400, page.url
        for secret in (app_token, access, webhook_secret, "q" * 40, stack.settings.secret_key):
            assert secret not in page.text, (page.url, page.status_code)
    # uninstall (no CLEAN): the portal's tokens are dropped
    r = httpx.post(f"{stack.portal_url}/sandbox/uninstall", json={"client_id": APP_CLIENT_ID, "clean": False},
                   timeout=30)
    assert r.status_code == 200

    secrets = sandbox_secrets(stack)
    secrets[webhook_secret] = "webhook secret"
    secrets[pasted] = "pasted cabinet token"
    secrets[stack.settings.secret_key] = "app secret key"
    for key in stack.settings.token_keys:
        secrets[key] = "token encryption key"
    assert len(secrets) > 12, "the flow should have issued many tokens"
    logs = "\n".join(captured)
    assert "portal installed" in logs and "rest call" in logs, "the capture must see the app's logs"
    leaked = {what for secret, what in secrets.items() if secret in logs}
    assert leaked == set(), leaked
    codes = [c["code"] for c in stack.bank_state()["sms_codes"]]
    assert codes and not [c for c in codes if standalone(c, logs)]
    db = database_text(stack)
    assert len(db) > 2_000  # the dump really holds the rows
    in_db = {what for secret, what in secrets.items() if secret.encode() in db}
    assert in_db == set(), in_db


# -- key rotation ---------------------------------------------------------------------------------------------------
ENCRYPTED = {Portal: ("access_token_enc", "refresh_token_enc"),
             BankLink: ("access_token_enc", "refresh_token_enc", "webhook_secret_enc"),
             OAuthState: ("data_enc",)}


def ciphertexts(stack) -> dict[tuple, str]:
    out = {}
    with stack.ctx.db.session() as s:
        for model, cols in ENCRYPTED.items():
            pk = model.__mapper__.primary_key[0].key
            for row in s.scalars(select(model)):
                for col in cols:
                    if getattr(row, col):
                        out[(model.__name__, getattr(row, pk), col)] = getattr(row, col)
    return out


def decrypt_all(ctx, stack) -> dict[tuple, str]:
    """Decrypt every stored secret with `ctx`'s keys, bound to its owner as the app does."""
    out = {}
    with stack.ctx.db.session() as s:
        for p in s.scalars(select(Portal)):
            for col in ENCRYPTED[Portal]:
                if getattr(p, col):
                    out[("Portal", p.id, col)] = ctx.cipher.decrypt(p.member_id, getattr(p, col))
        for l in s.scalars(select(BankLink)):
            for col in ("access_token_enc", "refresh_token_enc"):
                if getattr(l, col):
                    out[("BankLink", l.id, col)] = ctx.cipher.decrypt(f"bank:{l.portal_id}:{l.inn}:{l.kpp}",
                                                                      getattr(l, col))
            if l.webhook_secret_enc:
                out[("BankLink", l.id, "webhook_secret_enc")] = ctx.cipher.decrypt(f"webhook:{l.id}",
                                                                                   l.webhook_secret_enc)
        for st in s.scalars(select(OAuthState)):
            out[("OAuthState", st.state, "data_enc")] = ctx.cipher.decrypt(f"state:{st.state}", st.data_enc)
    return out


def test_rotate_keys_reencrypts_every_row_so_the_old_key_can_go(linked, tmp_path):
    from b24app.cli import main
    from b24app.context import AppContext

    # an unfinished link leaves an OAuth state row: it is rotated too
    with httpx.Client(timeout=30) as browser:
        page = browser.get(f"{linked.app_url}/bank/start", params={"ticket": link_ticket(linked)})
        browser.follow_redirects = False
        assert submit_form(browser, page, {"inn": "7701234560", "kpp": "770101001"}).status_code == 303
    old = linked.settings.token_keys[0]
    new = Fernet.generate_key().decode()
    before = ciphertexts(linked)
    kinds = {k[0] for k in before}
    assert kinds == {"Portal", "BankLink", "OAuthState"} and len(before) == 6
    plain = decrypt_all(linked.ctx, linked)
    env = {"B24APP_MODE": "demo", "B24APP_DATA_DIR": str(linked.data_dir),
           "B24APP_DATABASE_URL": linked.settings.database_url, "B24APP_SECRET_KEY": linked.settings.secret_key,
           "B24APP_TOKEN_KEYS": f"{new},{old}"}
    result = CliRunner().invoke(main, ["rotate-keys"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert re.search(rf"\b{len(before)}\b", result.output), result.output
    after = ciphertexts(linked)
    assert after.keys() == before.keys()
    assert all(after[k] != before[k] for k in before), "every value must be re-encrypted"
    assert all(old not in v and new not in v for v in after.values())
    # only the new key from now on
    only_new = AppContext(replace(linked.settings, token_keys=(new,)))
    only_old = AppContext(replace(linked.settings, token_keys=(old,)))
    try:
        assert decrypt_all(only_new, linked) == plain
        with pytest.raises(TokenCipherError):
            decrypt_all(only_old, linked)
        # and the app still works with it: Bitrix24 and the bank both answer
        assert only_new.bitrix(linked.member_id()).call("user.current")["ID"]
        with only_new.db.session() as s:
            link = s.scalar(select(BankLink))
        assert len(bank_api(only_new, link.id).accounts()) == 3
        assert LinkTokens(only_new, link.id)() == plain[("BankLink", link.id, "access_token_enc")]
        # running it again is harmless
        again = CliRunner().invoke(main, ["rotate-keys"], env={**env, "B24APP_TOKEN_KEYS": new},
                                   catch_exceptions=False)
        assert again.exit_code == 0 and decrypt_all(only_new, linked) == plain
    finally:
        only_new.close()
        only_old.close()


def test_a_ciphertext_moved_to_another_row_does_not_decrypt(linked):
    """Tokens are bound to their owner: copying one portal's ciphertext into another row is useless."""
    with linked.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
        link = s.scalar(select(BankLink))
        stolen = portal.access_token_enc
        link.access_token_enc = stolen  # an attacker with write access swaps ciphertexts
    with pytest.raises(TokenCipherError):
        LinkTokens(linked.ctx, link.id)()
    with pytest.raises(TokenCipherError):
        linked.ctx.cipher.decrypt("another-member-id", stolen)
