"""Linking T-Bank by SMS from the app, over real HTTP against the bank sandbox."""
from __future__ import annotations

import threading
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from b24app.banklinks import tbank as banklink
from b24app.banklinks.tbank import LinkNeedsConsent, LinkTokens
from b24app.storage.models import BankAccount, BankLink, OAuthState, OutboxItem, Portal
from b24app.sandbox.stack import link_bank, link_ticket, submit_form
from conftest import wait_for


def links(stack) -> list[BankLink]:
    with stack.ctx.db.session() as s:
        return list(s.scalars(select(BankLink)))


def accounts(stack) -> list[BankAccount]:
    with stack.ctx.db.session() as s:
        return list(s.scalars(select(BankAccount).order_by(BankAccount.id)))


def test_link_with_all_scopes_stores_tokens_and_watches_rub_current_accounts(linked):
    [link] = links(linked)
    assert link.status == "active" and link.kind == "tid" and link.inn == "7701234560"
    bank = linked.bank_state()
    assert any(c["client_id"] == "b24app-demo" for c in bank["consents"])
    accs = accounts(linked)
    assert len(accs) == 3
    watched = {a.account_number: a.watched for a in accs}
    assert [a.currency for a in accs if watched[a.account_number]] == ["RUB", "RUB"]
    assert not [a for a in accs if a.currency == "USD" and a.watched]
    # the webhook trigger was subscribed for our callback URL
    assert any(w["url"].startswith(linked.app_url + "/bank/webhook/") for w in bank["webhooks"])


def test_link_with_statement_scope_unticked_is_refused_plainly(installed):
    page = link_bank(installed, untick=("bank-statements",))
    assert page.status_code == 400
    assert 'data-reason="scopes_not_granted"' in page.text
    assert "Выписка" in page.text or "Statement" in page.text
    assert links(installed) == []


def test_refusing_consent_returns_a_clear_page_and_stores_nothing(installed):
    page = link_bank(installed, deny=True)
    assert page.status_code == 400 and 'data-reason="provider_error"' in page.text
    assert links(installed) == []
    with installed.ctx.db.session() as s:
        assert s.scalar(select(OAuthState)) is None  # the state was burnt


def start_until_callback(stack):
    """Drive the flow up to T-Bank's redirect back to us, without following it."""
    browser = httpx.Client(follow_redirects=True, timeout=30)
    page = browser.get(f"{stack.app_url}/bank/start", params={"ticket": link_ticket(stack)})
    page = submit_form(browser, page, {"inn": "7701234560", "kpp": "770101001"})
    page = submit_form(browser, page, {"phone": "+79990000001"})
    import re
    code = re.search(r'id="sms-code">(\d{4})<', page.text).group(1)
    page = submit_form(browser, page, {"code": code})
    browser.follow_redirects = False
    redirect = submit_form(browser, page, {}, button="allow")
    assert redirect.status_code in (302, 303), redirect.text[:300]
    return browser, redirect.headers["location"]


def test_state_is_single_use(installed):
    browser, callback = start_until_callback(installed)
    first = browser.get(callback)
    assert first.status_code == 200 and 'id="link-ok"' in first.text
    replay = browser.get(callback)
    assert replay.status_code == 400 and 'data-reason="state_invalid"' in replay.text
    assert len(links(installed)) == 1


def test_state_from_another_browser_is_refused(installed):
    _, callback = start_until_callback(installed)
    other_browser = httpx.Client(timeout=30)
    page = other_browser.get(callback)
    assert page.status_code == 400 and 'data-reason="state_other_browser"' in page.text
    assert links(installed) == []


def test_expired_state_is_refused(installed):
    browser, callback = start_until_callback(installed)
    with installed.ctx.db.session() as s:
        for st in s.scalars(select(OAuthState)):
            st.expires_at = installed.ctx.clock.now() - timedelta(seconds=1)
    page = browser.get(callback)
    assert page.status_code == 400 and 'data-reason="state_invalid"' in page.text
    assert links(installed) == []


@pytest.mark.parametrize("query, reason", [
    ({}, "state_missing"),
    ({"state": "made-up", "code": "c.x"}, "state_invalid"),
    ({"error": "access_denied"}, "provider_error"),
])
def test_callback_guards(installed, query, reason):
    page = httpx.get(f"{installed.app_url}/bank/callback", params=query, timeout=30)
    assert page.status_code == 400 and f'data-reason="{reason}"' in page.text


def test_ticket_is_required_and_signed(installed):
    assert httpx.get(f"{installed.app_url}/bank/start", timeout=30).status_code == 403
    assert httpx.get(f"{installed.app_url}/bank/start", params={"ticket": "forged.ticket.value"},
                     timeout=30).status_code == 403


def test_start_form_is_csrf_protected(installed):
    r = httpx.post(f"{installed.app_url}/bank/start", data={"ticket": link_ticket(installed), "inn": "7701234560"},
                   timeout=30)
    assert r.status_code == 400
    assert links(installed) == []


def test_refresh_rotation_with_two_workers_racing_yields_one_pair(linked):
    [link] = links(linked)
    httpx.post(f"{linked.bank_url}/sandbox/expire-tokens", timeout=30)
    with linked.ctx.db.session() as s:  # our copy also thinks it expired
        s.get(BankLink, link.id).access_expires_at = linked.ctx.clock.now()
    before = link.token_generation
    results, errors = [], []

    def use():
        try:
            results.append(LinkTokens(linked.ctx, link.id)())
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(set(results)) == 1
    [after] = links(linked)
    assert after.token_generation == before + 1
    refreshes = [t for t in linked.bank_state()["issued_tokens"] if t.get("kind") == "refresh"]
    assert sum(1 for t in refreshes if t.get("status") == "active") == 1


def test_invalid_grant_marks_the_link_and_tells_the_admin(linked):
    [link] = links(linked)
    refresh = linked.ctx.cipher.decrypt(f"bank:{link.portal_id}:{link.inn}:{link.kpp}", link.refresh_token_enc)
    r = httpx.post(f"{linked.bank_url}/auth/revoke", data={"token": refresh, "token_type_hint": "refresh_token"},
                   auth=("b24app-demo", "demo-secret"), timeout=30)
    assert r.status_code == 200
    with pytest.raises(LinkNeedsConsent):
        LinkTokens(linked.ctx, link.id)(True)
    [after] = links(linked)
    assert after.status == "needs_consent" and after.refresh_token_enc is None
    with linked.ctx.db.session() as s:
        notes = list(s.scalars(select(OutboxItem).where(OutboxItem.kind == "notify")))
    assert len(notes) == 1 and notes[0].payload["user_id"] == 1
    assert "7701234560" in notes[0].payload["message"]
    # the worker sends it to Bitrix24 chat
    from b24app.pipeline import outbox
    with linked.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
    outbox.deliver(linked.ctx, portal)
    sent = [n for n in linked.portal_state()["notifications"] if n["user_id"] == 1]
    assert sent and "СМС" in sent[-1]["message"]


def test_unlink_revokes_and_forgets(linked):
    [link] = links(linked)
    assert banklink.unlink(linked.ctx, link.portal_id, link.id)
    [after] = links(linked)
    assert after.status == "unlinked" and after.access_token_enc is None and after.refresh_token_enc is None
    assert not any(a.watched for a in accounts(linked))
    revoked = [t for t in linked.bank_state()["issued_tokens"] if t.get("status") == "revoked"]
    assert revoked


def test_pasted_cabinet_token_is_checked_then_stored(installed):
    token = httpx.post(f"{installed.bank_url}/sandbox/static-tokens", json={"inn": "7701234560", "kpp": "770101001"},
                       timeout=30).json()["token"]
    ticket = link_ticket(installed, is_admin=True)
    with httpx.Client(timeout=30, follow_redirects=True) as browser:
        page = browser.get(f"{installed.app_url}/bank/token", params={"ticket": ticket})
        bad = submit_form(browser, page, {"token": "t.not-a-real-token"})
        assert bad.status_code == 400 and 'data-reason="token_rejected"' in bad.text
        good = submit_form(browser, bad, {"token": token})
        assert good.status_code == 200 and 'id="link-ok"' in good.text
    [link] = links(installed)
    assert link.kind == "static" and link.company_name
    assert len(accounts(installed)) == 3


def test_pasting_a_token_is_for_admins_only(installed):
    ticket = link_ticket(installed, user_id=2, is_admin=False)
    assert httpx.get(f"{installed.app_url}/bank/token", params={"ticket": ticket}, timeout=30).status_code == 403


def test_webhook_triggers_a_sync_and_needs_the_secret(linked):
    [link] = links(linked)
    secret = linked.ctx.cipher.decrypt(f"webhook:{link.id}", link.webhook_secret_enc)
    url = f"{linked.app_url}/bank/webhook/{link.id}"
    acc = accounts(linked)[0]
    body = {"operationId": "x", "accountNumber": acc.account_number}
    assert httpx.post(url, json=body, headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    assert httpx.post(url, json=body, timeout=30).status_code == 401
    with linked.ctx.db.session() as s:
        s.get(BankAccount, acc.id).sync_requested_at = None
    ok = httpx.post(url, json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=30)
    assert ok.status_code == 200 and ok.json()["accounts"] == 1
    with linked.ctx.db.session() as s:
        assert s.get(BankAccount, acc.id).sync_requested_at is not None


def test_bank_webhook_delivery_reaches_the_app(linked):
    """The sandbox's own delivery (a real POST with our secret) makes the account due."""
    acc = accounts(linked)[0]
    with linked.ctx.db.session() as s:
        s.get(BankAccount, acc.id).sync_requested_at = None
    linked.pay("100.00", "test", accountNumber=acc.account_number)
    wait_for(lambda: any(d.get("status") == 200 for d in linked.bank_state()["webhook_deliveries"]))
    with linked.ctx.db.session() as s:
        assert s.get(BankAccount, acc.id).sync_requested_at is not None


# -- releasing a link at the bank (issue #11 item 11) ------------------------------------------------------------
def our_live_tokens(stack) -> list[dict]:
    """T-ID tokens the bank still honours for our client (pasted cabinet tokens are the customer's own)."""
    from b24app.sandbox.stack import BANK_CLIENT_ID

    return [t for t in stack.bank_state()["issued_tokens"]
            if t["client_id"] == BANK_CLIENT_ID and not t["static"] and t["status"] == "active"]


def admin_frame(stack) -> str:
    from b24app.web.security import Frame, issue_frame_token

    with stack.flask_app.test_request_context():
        return issue_frame_token(Frame(stack.member_id(), 1, True, "DEFAULT", None, "ru"))


def test_unlink_deletes_the_webhook_and_revokes_the_tokens_at_the_bank(linked):
    [link] = links(linked)
    assert linked.bank_state()["webhooks"] and our_live_tokens(linked)
    r = linked.flask_app.test_client().post("/bank/unlink", json={"link_id": link.id},
                                            headers={"X-Frame-Token": admin_frame(linked)})
    assert r.status_code == 200, r.get_json()
    assert linked.bank_state()["webhooks"] == []
    assert our_live_tokens(linked) == []
    [after] = links(linked)
    assert after.status == "unlinked" and after.webhook_id is None


@pytest.mark.parametrize("clean", [False, True], ids=["keep-data", "clean"])
def test_uninstall_deletes_the_webhook_and_revokes_the_tokens_at_the_bank(linked, clean):
    from b24app.sandbox.stack import APP_CLIENT_ID

    assert linked.bank_state()["webhooks"] and our_live_tokens(linked)
    r = linked.portal_http("POST", "/sandbox/uninstall", json={"client_id": APP_CLIENT_ID, "clean": clean})
    assert r.status_code == 200, r.text
    delivered = [d for d in linked.portal_state()["event_deliveries"] if d["event"] == "ONAPPUNINSTALL"]
    assert [d["status"] for d in delivered] == [200]
    assert linked.bank_state()["webhooks"] == []
    assert our_live_tokens(linked) == []
    with linked.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
    assert (portal is None) if clean else (portal.status == "uninstalled")


def test_uninstall_never_waits_long_for_a_hanging_bank_and_is_recorded(linked):
    """The bank's API hangs: the uninstall is recorded, answers within the budget, and what T-ID can still do
    (revoking the tokens) is done."""
    import time as _time

    from b24app.sandbox.stack import APP_CLIENT_ID

    httpx.post(f"{linked.bank_url}/sandbox/faults", json={"kinds": {"timeout": 1.0}}, timeout=30).raise_for_status()
    try:
        started = _time.monotonic()
        r = linked.portal_http("POST", "/sandbox/uninstall", json={"client_id": APP_CLIENT_ID, "clean": False})
        took = _time.monotonic() - started
    finally:
        httpx.delete(f"{linked.bank_url}/sandbox/faults", timeout=30)
    assert r.status_code == 200, r.text
    assert [d["status"] for d in linked.portal_state()["event_deliveries"] if d["event"] == "ONAPPUNINSTALL"] == [200]
    assert took < banklink.UNINSTALL_BUDGET + 5, took
    with linked.ctx.db.session() as s:
        portal = s.scalar(select(Portal))
    assert portal.status == "uninstalled"
    assert our_live_tokens(linked) == []
    assert all(l.access_token_enc is None and l.status == "unlinked" for l in links(linked))
@pytest.mark.parametrize(("inn", "kpp", "field", "problem"), [
    ("7701234567", "770101001", "inn", "checksum"),    # one digit off: no such INN
    ("770123456", "770101001", "inn", "format"),
    ("7701234560", "", "kpp", "required"),             # a company without its KPP
    ("7701234560", "77010100", "kpp", "format"),
    ("500100732259", "770101001", "kpp", "sole_trader"),
])
def test_a_mistyped_inn_or_kpp_is_refused_on_the_form_before_the_bank(installed, inn, kpp, field, problem):
    with httpx.Client(timeout=30) as browser:
        page = browser.get(f"{installed.app_url}/bank/start", params={"ticket": link_ticket(installed)})
        answer = submit_form(browser, page, {"inn": inn, "kpp": kpp})
    assert answer.status_code == 400 and "location" not in answer.headers  # not sent to T-Bank's phone step
    assert f'id="{field}-error" class="field-error" role="alert" data-error="{problem}"' in answer.text
    assert f'id="{field}" name="{field}"' in answer.text and 'aria-invalid="true"' in answer.text
    with installed.ctx.db.session() as s:
        assert s.scalar(select(OAuthState)) is None


def test_spaces_in_a_pasted_inn_are_ignored(installed):
    with httpx.Client(timeout=30) as browser:
        page = browser.get(f"{installed.app_url}/bank/start", params={"ticket": link_ticket(installed)})
        answer = submit_form(browser, page, {"inn": " 7701 234560 ", "kpp": "7701-01-001"})
    assert answer.status_code == 303 and "/auth/authorize" in answer.headers["location"]


def sms_flow(stack, browser: httpx.Client):
    """Up to T-Bank's SMS page, as a person would (INN form → phone)."""
    page = browser.get(f"{stack.app_url}/bank/start", params={"ticket": link_ticket(stack)})
    page = submit_form(browser, page, {"inn": "7701234560", "kpp": "770101001"})
    return submit_form(browser, page, {"phone": "+79990000001"})


def admin_bank_card(stack) -> str:
    from test_web_admin import open_app
    return open_app(stack).get_data(as_text=True)


def test_wrong_sms_code_three_times_leads_back_to_try_again_and_the_admin_page_says_why(installed):
    import re
    with httpx.Client(follow_redirects=True, timeout=30) as browser:
        page = sms_flow(installed, browser)
        for _ in range(3):
            page = submit_form(browser, page, {"code": "0000" if "0000" not in page.text else "9999"})
        assert page.status_code == 403 and "Превышено количество попыток" in page.text
        back = re.search(r'id="back-to-app" href="([^"]+)"', page.text)
        assert back, "the bank's dead end offers no way back to the app"
        result = browser.get(back.group(1).replace("&amp;", "&"))
        assert result.status_code == 400 and 'data-reason="provider_error"' in result.text
        assert "слишком много раз" in result.text
        assert 'id="close"' in result.text
        retry = re.search(r'id="retry" href="([^"]+)"', result.text)
        assert retry, "no 'try again' on the failure page"
        again = browser.get(f"{installed.app_url}{retry.group(1).replace('&amp;', '&')}")
        assert again.status_code == 200 and 'id="inn"' in again.text
    card = admin_bank_card(installed)
    assert 'id="link-failure" data-reason="provider_error"' in card and "слишком много раз" in card

    # A successful link afterwards clears the note.
    assert 'id="link-ok"' in link_bank(installed).text
    assert 'id="link-failure"' not in admin_bank_card(installed)


@pytest.mark.parametrize(("kw", "reason", "words"), [
    ({"deny": True}, "provider_error", "Доступ не выдан"),
    ({"untick": ("bank-statements",)}, "scopes_not_granted", "«Выписка»"),
])
def test_refused_consent_or_an_unticked_scope_offers_try_again_and_close(installed, kw, reason, words):
    page = link_bank(installed, **kw)
    assert page.status_code == 400 and f'data-reason="{reason}"' in page.text
    assert 'id="retry" href="/bank/start?ticket=' in page.text and 'id="close"' in page.text
    card = admin_bank_card(installed)
    assert f'id="link-failure" data-reason="{reason}"' in card and words in card


def test_after_linking_the_company_is_named_as_the_bank_has_it(installed):
    page = link_bank(installed)
    assert 'id="link-company"' in page.text and "ООО «Ромашка»" in page.text
    [link] = links(installed)
    assert link.company_name == "ООО «Ромашка»"           # from T-Bank's GET /api/v1/company
    card = admin_bank_card(installed)
    assert "ООО «Ромашка»" in card and "7701234560" in card


def test_without_the_company_info_scope_the_link_works_and_shows_the_inn(installed):
    page = link_bank(installed, untick=("company-info",))
    assert page.status_code == 200 and 'id="link-ok"' in page.text and 'id="link-company"' not in page.text
    [link] = links(installed)
    assert link.status == "active" and link.company_name is None
    assert "7701234560" in admin_bank_card(installed)
