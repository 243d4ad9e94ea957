"""Tochka as the second live bank, end to end over HTTP through the Tochka sandbox (issue #16).

Consent flow (sign-in, SMS, permissions), statements through the worker, the incomingPayment webhook (JWT, RS256)
paying an invoice within seconds, forged webhooks refused, payments stored once across webhook and polling."""
from __future__ import annotations

import time

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from b24app.storage.models import BankAccount, BankLink, Operation
from b24app.sandbox.stack import DEMO_INN, link_tochka
from b24app.sandbox.tochka.state import DEMO_CUSTOMER_CODE, b64url, sign_jwt
from tests.conftest import wait_for

INVOICE = "1207"        # demo deal 1: 12 000,00 ₽
ACCOUNT = "40702810900000000001"


@pytest.fixture
def tochka(installed):
    page = link_tochka(installed)
    assert page.status_code == 200 and 'id="link-ok"' in page.text, page.text[:600]
    return installed


def _link(stack) -> BankLink:
    with stack.ctx.db.session() as s:
        return s.scalar(select(BankLink).where(BankLink.provider == "tochka"))


def _invoice_stage(stack, number: str) -> str:
    deal = next(d for d in stack.deals if d["number"] == number)
    item = stack.rest("crm.item.get", {"entityTypeId": 31, "id": deal["invoice_id"]})["result"]["item"]
    return item["stageId"]


def _ops(stack) -> list[Operation]:
    with stack.ctx.db.session() as s:
        return list(s.scalars(select(Operation).order_by(Operation.id)))


def _incoming(customer=DEMO_CUSTOMER_CODE, account=ACCOUNT, **kw) -> dict:
    return {"SidePayer": {"account": "40702810500000000077", "inn": "7712345678", "name": "ООО «Вектор»",
                          "amount": "12000.0", "currency": "RUB"},
            "SideRecipient": {"account": account, "bankCode": "044525104", "amount": "12000.0", "currency": "RUB"},
            "purpose": "Оплата по счету № 1207", "documentNumber": "9", "paymentId": "p-1", "date": "2026-12-02",
            "webhookType": "incomingPayment", "customerCode": customer, **kw}


def _post(stack, body: str) -> httpx.Response:
    return httpx.post(f"{stack.app_url}/bank/tochka/webhook", content=body,
                      headers={"Content-Type": "text/plain"}, timeout=30)


def test_consent_flow_links_tochka_and_keeps_the_consent_encrypted(tochka):
    link = _link(tochka)
    state = tochka.tochka_state()
    consent_id, consent = next(iter(state["consents"].items()))
    assert consent["status"] == "Authorised" and consent["customer_codes"] == [DEMO_CUSTOMER_CODE]
    assert link.status == "active" and link.kind == "tochka" and link.customer_code == DEMO_CUSTOMER_CODE
    assert link.inn == DEMO_INN and link.inn_check == "own_company"
    # the consent id and the tokens are stored encrypted, bound to the link's owner
    owner = f"bank:{link.portal_id}:{link.inn}:{link.kpp}"
    assert consent_id not in (link.consent_id_enc or "")
    assert tochka.ctx.cipher.decrypt(owner, link.consent_id_enc) == consent_id
    assert "tochka-at-" not in link.access_token_enc and "tochka-rt-" not in (link.refresh_token_enc or "")
    with tochka.ctx.db.session() as s:
        acc = s.scalar(select(BankAccount).where(BankAccount.link_id == link.id))
    assert acc.account_number == ACCOUNT and acc.external_id == f"{ACCOUNT}/044525104" and acc.watched
    # the incomingPayment webhook is registered at our one URL (Tochka tested it first)
    assert state["webhooks"]["b24app-tochka-demo"] == {"url": f"{tochka.app_url}/bank/tochka/webhook",
                                                       "webhooksList": ["incomingPayment"]}
    assert link.webhook_id


def test_refused_consent_and_missing_permissions_store_nothing(installed):
    page = link_tochka(installed, deny=True)
    assert 'data-reason="provider_error"' in page.text
    page = link_tochka(installed, untick=("ReadStatements",))
    assert page.status_code == 400 and 'data-reason="scopes_not_granted"' in page.text
    assert _link(installed) is None


def test_tochka_and_tbank_link_the_same_company_side_by_side(tochka):
    from b24app.sandbox.stack import link_bank

    assert 'id="link-ok"' in link_bank(tochka).text
    with tochka.ctx.db.session() as s:
        links = {l.provider: l for l in s.scalars(select(BankLink))}
    assert set(links) == {"tbank", "tochka"} and links["tbank"].inn == links["tochka"].inn
    assert links["tochka"].kind == "tochka" and links["tbank"].kind == "tid"


def test_webhook_pays_an_invoice_within_seconds_and_the_payment_is_stored_once(tochka):
    tochka.settings  # noqa: B018
    from b24app.pipeline.invoices import refresh_all

    refresh_all(tochka.ctx, tochka.ctx.portals.find(tochka.member_id()))
    # polling is slow here: only the webhook can make this fast
    with tochka.ctx.db.session() as s:
        for acc in s.scalars(select(BankAccount)):
            acc.next_sync_at = tochka.ctx.clock.now().replace(year=2100)
    tochka.start_worker(idle_sleep=0.05)
    started = time.monotonic()
    tochka.pay_tochka("12000.00", "Оплата по счету № 1207 от 14.01.2026")
    wait_for(lambda: _invoice_stage(tochka, INVOICE).endswith(":P"), timeout=15)
    assert time.monotonic() - started < 8
    ops = _ops(tochka)
    assert len(ops) == 1 and ops[0].source == "tochka" and ops[0].operation_id.startswith("tochka:")
    assert ops[0].state == "matched" and ops[0].payer_inn == "7712345678"
    # the bank delivered once with 200; a poll of the same statement later stores nothing new
    deliveries = tochka.tochka_state()["deliveries"]
    assert [d["status"] for d in deliveries] == [200]
    from b24app.pipeline.sync import request_sync
    request_sync(tochka.ctx, ops[0].portal_id)
    wait_for(lambda: all(a["last_synced_at"] and not a["pending"]
                         for a in __import__("b24app.pipeline.sync", fromlist=["x"]).sync_status(
                             tochka.ctx, ops[0].portal_id)["accounts"]))
    assert len(_ops(tochka)) == 1


def test_polling_is_the_safety_net_when_webhooks_are_lost(tochka):
    httpx.post(f"{tochka.tochka_url}/sandbox/faults", json={"webhook_drop": 5}).raise_for_status()
    httpx.post(f"{tochka.tochka_url}/sandbox/faults", json={"statement_500": 1}).raise_for_status()
    tochka.pay_tochka("3000.00", "Оплата по счету № 1208")
    tochka.pay_tochka("3000.00", "Оплата по счету № 1208")  # a second, distinct payment (own document number)
    from b24app.pipeline.sync import sync_account

    with tochka.ctx.db.session() as s:
        acc_id = s.scalar(select(BankAccount.id).where(BankAccount.watched.is_(True)))
    with pytest.raises(Exception):
        sync_account(tochka.ctx, acc_id)  # the statement fails once (HTTP 500 on init): nothing stored
    assert _ops(tochka) == []
    first = sync_account(tochka.ctx, acc_id)
    again = sync_account(tochka.ctx, acc_id)
    assert first["new"] == 2 and again["new"] == 0 and again["same"] == 2
    assert tochka.tochka_state()["deliveries"] == []


def test_forged_webhooks_are_refused_and_change_nothing(tochka):
    with tochka.ctx.db.session() as s:
        for acc in s.scalars(select(BankAccount)):
            acc.sync_requested_at = None  # linking made it due once; from here only a webhook could
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = _incoming()
    head, body, _sig = sign_jwt(claims, other).split(".")
    none_head = b64url(b'{"typ":"JWT","alg":"none"}')
    hs_head = b64url(b'{"typ":"JWT","alg":"HS256"}')
    forged = {
        "unsigned": f"{none_head}.{body}.",
        "hs256": f"{hs_head}.{body}.{b64url(b'x' * 32)}",
        "other key": sign_jwt(claims, other),
        "altered claims": ".".join([head, b64url(b'{"customerCode":"300123123","webhookType":"incomingPayment"}'),
                                    _sig]),
        "not a jwt": '{"webhookType": "incomingPayment", "customerCode": "300123123"}',
        "empty": "",
    }
    for name, token in forged.items():
        r = _post(tochka, token)
        assert r.status_code == 401, (name, r.status_code, r.text)
    # a token really signed by Tochka, tampered with after signing
    genuine = sign_jwt(claims, tochka.tochka_app.extensions["tochka_sandbox"].key)
    h, p, sig = genuine.split(".")
    tampered = b64url(b'{"customerCode":"1"}')
    assert _post(tochka, f"{h}.{tampered}.{sig}").status_code == 401
    with tochka.ctx.db.session() as s:
        due = s.scalar(select(func.count()).select_from(BankAccount).where(BankAccount.sync_requested_at.is_not(None)))
    assert due == 0  # nothing was made due by a forged webhook


def test_a_replayed_webhook_is_acknowledged_and_changes_nothing(tochka):
    """A token we acted on, again: Tochka's own retry after our 200 was lost, or a replay. 200 (anything else makes
    Tochka retry 30 times), and nothing is made due."""
    tochka.pay_tochka("12000.00", "Оплата по счету № 1207")
    delivered = wait_for(lambda: [d for d in tochka.tochka_state()["deliveries"] if d["status"] == 200])
    token = delivered[0]["token"]
    with tochka.ctx.db.session() as s:
        for acc in s.scalars(select(BankAccount)):
            assert acc.sync_requested_at is not None  # the genuine one made the account due
            acc.sync_requested_at = None
    r = _post(tochka, token)
    assert r.status_code == 200 and r.json() == {"ok": True, "replayed": True, "accounts": 0}
    with tochka.ctx.db.session() as s:
        assert all(a.sync_requested_at is None for a in s.scalars(select(BankAccount)))


def test_a_genuine_webhook_for_an_unknown_company_is_acknowledged_and_does_nothing(tochka):
    token = sign_jwt(_incoming(customer="999999999"), tochka.tochka_app.extensions["tochka_sandbox"].key)
    r = _post(tochka, token)
    assert r.status_code == 200 and r.json()["accounts"] == 0


def test_a_revoked_consent_asks_for_linking_again(tochka):
    link = _link(tochka)
    consent_id = next(iter(tochka.tochka_state()["consents"]))
    httpx.post(f"{tochka.tochka_url}/sandbox/consents/{consent_id}/revoke").raise_for_status()
    from b24app.pipeline.sync import sync_account

    with tochka.ctx.db.session() as s:
        acc_id = s.scalar(select(BankAccount.id).where(BankAccount.link_id == link.id))
    with pytest.raises(Exception):
        sync_account(tochka.ctx, acc_id)
    assert _link(tochka).status == "needs_consent"


def test_the_worker_polls_tochka_accounts_when_no_webhook_comes(tochka):
    from b24app.pipeline.invoices import refresh_all

    refresh_all(tochka.ctx, tochka.ctx.portals.find(tochka.member_id()))
    httpx.post(f"{tochka.tochka_url}/sandbox/faults", json={"webhook_drop": 5}).raise_for_status()
    tochka.start_worker(idle_sleep=0.05)
    tochka.pay_tochka("12000.00", "Оплата по счету № 1207 от 14.01.2026")
    wait_for(lambda: _invoice_stage(tochka, INVOICE).endswith(":P"), timeout=20)  # the stack polls every 2 s
    assert tochka.tochka_state()["deliveries"] == [] and len(_ops(tochka)) == 1


def test_an_expired_access_token_is_refreshed_and_the_rotated_pair_kept(tochka):
    from datetime import timedelta

    from b24app.pipeline.sync import sync_account

    link = _link(tochka)
    with tochka.ctx.db.session() as s:
        row = s.get(BankLink, link.id)
        row.access_expires_at = tochka.ctx.clock.now() - timedelta(seconds=1)
        acc_id = s.scalar(select(BankAccount.id).where(BankAccount.link_id == link.id))
    tochka.pay_tochka("3000.00", "Оплата по счету № 1208")
    assert sync_account(tochka.ctx, acc_id)["new"] == 1
    after = _link(tochka)
    assert after.token_generation == link.token_generation + 1 and after.refresh_token_enc != link.refresh_token_enc
    assert after.access_expires_at > tochka.ctx.clock.now()


def test_unlinking_tochka_forgets_the_tokens_and_its_webhooks_then_do_nothing(tochka):
    from b24app.banklinks import tbank as banklink

    link = _link(tochka)
    assert banklink.unlink(tochka.ctx, link.portal_id, link.id)
    after = _link(tochka)
    assert after.status == "unlinked" and after.access_token_enc is None and after.refresh_token_enc is None
    assert after.consent_id_enc is None
    token = sign_jwt(_incoming(), tochka.tochka_app.extensions["tochka_sandbox"].key)
    r = _post(tochka, token)
    assert r.status_code == 200 and r.json()["accounts"] == 0


def test_a_tochka_payment_and_the_same_payment_in_tochkas_1c_export_are_one_payment(tochka, tmp_path):
    from b24app.adapters.banks.operations import MSK
    from b24app.pipeline.statement_import import import_statement
    from b24app.pipeline.sync import sync_account
    from onec_samples import Doc, statement_bytes

    tx = tochka.pay_tochka("12000.00", "Оплата по счету № 1207 от 14.01.2026", document_number="815",
                           payer_inn="7712345678", payer_account="40702810500000000077")
    with tochka.ctx.db.session() as s:
        acc_id = s.scalar(select(BankAccount.id).where(BankAccount.account_number == ACCOUNT))
    assert sync_account(tochka.ctx, acc_id)["new"] == 1
    day = tochka.ctx.clock.now().astimezone(MSK).strftime("%d.%m.%Y")
    assert tx["documentProcessDate"] == tochka.ctx.clock.now().astimezone(MSK).date().isoformat()
    path = tmp_path / "tochka-1c.txt"
    path.write_bytes(statement_bytes(ACCOUNT, [Doc("815", day, "12000.00", "Оплата по счету № 1207 от 14.01.2026 г.",
                                                   ACCOUNT, payer_inn="7712345678",
                                                   payer_account="40702810500000000077")]))
    result = import_statement(tochka.ctx, _link(tochka).portal_id, path)
    assert (result.new, result.known) == (0, 1)
    ops = _ops(tochka)
    assert len(ops) == 1 and ops[0].source == "tochka"


def test_a_malformed_statement_item_is_quarantined_and_the_rest_stored(tochka):
    from b24app.storage.models import QuarantinedOperation
    from b24app.pipeline.sync import sync_account

    state = tochka.tochka_app.extensions["tochka_sandbox"]
    tochka.pay_tochka("3000.00", "Оплата по счету № 1208")
    good = state.transactions[f"{ACCOUNT}/044525104"][0]
    with state.lock:  # the bank sends garbage next to a good item (hostile input, straight into the statement)
        state.transactions[f"{ACCOUNT}/044525104"].append({**good, "transactionId": "bad-1",
                                                          "Amount": {"amount": "NaN", "currency": "RUB"}})
    with tochka.ctx.db.session() as s:
        acc_id = s.scalar(select(BankAccount.id).where(BankAccount.account_number == ACCOUNT))
    counts = sync_account(tochka.ctx, acc_id)
    assert counts["new"] == 1 and counts["malformed"] == 1
    with tochka.ctx.db.session() as s:
        q = s.scalar(select(QuarantinedOperation))
        assert "bad-1" in q.raw and "Amount.amount" in q.reason


def test_both_banks_are_bank_sources_and_sync_reads_each_through_its_own(tochka):
    from b24app.banklinks.sources import SOURCES, BankSource, TBankSource, TochkaSource, source_for
    from b24app.sandbox.stack import link_bank
    from b24app.pipeline.sync import sync_account

    assert all(isinstance(src, BankSource) for src in SOURCES.values())
    assert 'id="link-ok"' in link_bank(tochka).text
    with tochka.ctx.db.session() as s:
        links = {l.provider: l for l in s.scalars(select(BankLink))}
        accounts = {p: s.scalar(select(BankAccount.id).where(BankAccount.link_id == l.id,
                                                            BankAccount.watched.is_(True)))
                    for p, l in links.items()}
    assert isinstance(source_for(links["tbank"]), TBankSource) and isinstance(source_for(links["tochka"]), TochkaSource)
    tochka.pay("500.00", "Оплата по счету № 1208 частично")           # into the T-Bank account
    tochka.pay_tochka("700.00", "Оплата по счету № 1208 частично")    # into the Tochka account
    assert sync_account(tochka.ctx, accounts["tbank"])["new"] == 1
    assert sync_account(tochka.ctx, accounts["tochka"])["new"] == 1
    assert sorted((o.source, str(o.amount)) for o in _ops(tochka)) == [("tbank", "500.00"), ("tochka", "700.00")]


def test_rotate_keys_reencrypts_the_consent_id_too(tochka):
    from cryptography.fernet import Fernet

    from b24app.context import AppContext
    from b24app.storage.crypto import TokenCipherError
    from b24app.storage.keyrotation import rotate_all

    old, new = tochka.settings.token_keys[0], Fernet.generate_key().decode()
    rotate_all(AppContext(tochka.settings.with_overrides(token_keys=(new, old)), db=tochka.ctx.db))
    only_new = AppContext(tochka.settings.with_overrides(token_keys=(new,)), db=tochka.ctx.db)
    link = _link(tochka)
    owner = f"bank:{link.portal_id}:{link.inn}:{link.kpp}"
    assert only_new.cipher.decrypt(owner, link.consent_id_enc) in tochka.tochka_state()["consents"]
    with pytest.raises(TokenCipherError):
        AppContext(tochka.settings.with_overrides(token_keys=(old,)), db=tochka.ctx.db).cipher.decrypt(
            owner, link.consent_id_enc)


def test_saving_the_watch_list_of_one_bank_leaves_the_other_banks_accounts_watched(tochka):
    """The admin page lists one link's accounts; its save must not unwatch the other bank's (both linked)."""
    from b24app.sandbox.stack import link_bank
    from b24app.web.security import Frame, issue_frame_token

    assert 'id="link-ok"' in link_bank(tochka).text  # T-Bank linked after Tochka: the page shows T-Bank's
    with tochka.ctx.db.session() as s:
        tbank = s.scalar(select(BankLink).where(BankLink.provider == "tbank"))
        tbank_accounts = list(s.scalars(select(BankAccount).where(BankAccount.link_id == tbank.id)))
        tochka_acc = s.scalar(select(BankAccount).where(BankAccount.account_number == ACCOUNT))
    assert tochka_acc.watched
    with tochka.flask_app.test_request_context():
        token = issue_frame_token(Frame(tochka.member_id(), 1, True, "DEFAULT", None, "ru"))
    keep = [a.id for a in tbank_accounts][:1]
    r = tochka.flask_app.test_client().post("/bank/accounts", json={"watched": keep},
                                            headers={"X-Frame-Token": token})
    assert r.status_code == 200
    with tochka.ctx.db.session() as s:
        assert s.get(BankAccount, tochka_acc.id).watched  # the other bank's account stays watched
        assert sorted(a.id for a in s.scalars(select(BankAccount).where(BankAccount.link_id == tbank.id,
                                                                        BankAccount.watched.is_(True)))) == keep


def test_a_duplicated_webhook_and_rate_limits_still_store_the_payment_once(tochka):
    from b24app.pipeline.invoices import refresh_all

    refresh_all(tochka.ctx, tochka.ctx.portals.find(tochka.member_id()))
    httpx.post(f"{tochka.tochka_url}/sandbox/faults", json={"webhook_duplicate": 1, "api_429": 2}).raise_for_status()
    tochka.start_worker(idle_sleep=0.05)
    tochka.pay_tochka("12000.00", "Оплата по счету № 1207 от 14.01.2026")
    wait_for(lambda: _invoice_stage(tochka, INVOICE).endswith(":P"), timeout=20)
    tokens = wait_for(lambda: [d["token"] for d in tochka.tochka_state()["deliveries"]
                               if d["status"] == 200] if len(tochka.tochka_state()["deliveries"]) >= 2 else [])
    assert len(tokens) >= 2 and len(set(tokens)) == 1  # the doubled one acknowledged too: Tochka stops retrying
    assert tochka.tochka_state()["faults"]["api_429"] == 0  # the client was slowed down, and retried
    assert len(_ops(tochka)) == 1


@pytest.mark.parametrize(("inn", "kpp", "field", "problem"), [
    ("7701234567", "770101001", "inn", "checksum"),    # one digit off: no such INN
    ("7701234560", "", "kpp", "required"),
])
def test_a_mistyped_inn_or_kpp_is_refused_on_the_tochka_form_before_the_bank(tochka, inn, kpp, field, problem):
    """The Tochka form checks the INN's check digits and the KPP as T-Bank's does, red at the field, and sends
    nobody to Tochka's pages."""
    from b24app.sandbox.stack import link_ticket, submit_form

    consents = len(tochka.tochka_state()["consents"])
    with httpx.Client(timeout=30) as browser:
        page = browser.get(f"{tochka.app_url}/bank/tochka/start", params={"ticket": link_ticket(tochka)})
        answer = submit_form(browser, page, {"inn": inn, "kpp": kpp})
    assert answer.status_code == 400 and "location" not in answer.headers
    assert f'id="{field}-error" class="field-error" role="alert" data-error="{problem}"' in answer.text
    assert len(tochka.tochka_state()["consents"]) == consents   # no consent was created at Tochka
