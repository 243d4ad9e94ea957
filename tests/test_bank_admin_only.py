"""Only administrators add, change or remove a bank link; a company that is not one of the portal's own
needs the admin's explicit confirmation. Payments into a linked account mark the portal's invoices paid,
so a salesperson who could link their own account could mark company invoices paid (issue #11, item 3)."""
from __future__ import annotations

import re

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import func, select

from b24app.banklinks import tbank as banklink
from b24app.banklinks.tbank import LinkFailed
from b24app.storage.models import BankAccount, BankLink, OAuthState
from b24app.sandbox.stack import link_bank, link_ticket, submit_form
from conftest import start_seeded_stack

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
# The salesperson's own sole-proprietor account, known to the bank but no company of the portal.
OWN_IP = {"inn": "500100732259", "kpp": "0", "name": "ИП Продавцов", "phones": ["+79990000077"],
          "accounts": [{"currency": "RUB"}]}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    st = start_seeded_stack(tmp_path_factory.mktemp("adminonly"), link=True)
    httpx.post(f"{st.bank_url}/sandbox/companies", json=OWN_IP, timeout=30).raise_for_status()
    yield st
    st.stop()


def frame(st, *, user: int, admin: bool, deal: int | None = None, owner: int | None = None) -> str:
    from b24app.web.security import Frame, issue_frame_token

    placement = "CRM_DEAL_DETAIL_TAB" if deal else "DEFAULT"
    with st.flask_app.test_request_context():
        return issue_frame_token(Frame(st.member_id(), user, admin, placement, deal, "ru", owner_id=owner))


def state_of(st) -> dict:
    with st.ctx.db.session() as s:
        return {"links": [(l.id, l.inn, l.status, l.access_token_enc) for l in s.scalars(select(BankLink))],
                "watched": sorted(a.id for a in s.scalars(select(BankAccount).where(BankAccount.watched.is_(True)))),
                "states": s.scalar(select(func.count()).select_from(OAuthState))}


def csrf_of(page: httpx.Response) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)


def test_a_deal_owner_who_is_no_admin_gets_no_ticket_and_is_refused_everywhere(env):
    d = env.deals[0]  # responsible: user 2, no administrator
    owner = frame(env, user=2, admin=False, deal=d["deal_id"], owner=2)
    client = env.flask_app.test_client()
    before = state_of(env)
    authorize_calls = env.bank_state()["requests"].get("/auth/authorize", 0)

    r = client.post(f"/placement/api/deal/{d['deal_id']}/link", headers={"X-Frame-Token": owner})
    assert r.status_code == 403 and "администратор" in r.get_json()["message"]  # frame in Russian
    listing = client.get("/bank/accounts", headers={"X-Frame-Token": owner}).get_json()
    assert listing["link_url"] is None and listing["token_url"] is None
    [link_id] = [l[0] for l in before["links"]]
    assert client.post("/bank/unlink", json={"link_id": link_id}, headers={"X-Frame-Token": owner}).status_code == 403
    assert client.post("/bank/accounts", json={"watched": []}, headers={"X-Frame-Token": owner}).status_code == 403

    # A ticket as the old code issued it to the deal's responsible (a=False), replayed: refused at every step.
    replayed = link_ticket(env, user_id=2, is_admin=False)
    # ... and an administrator's ticket payload under a tampered signature.
    ser = URLSafeTimedSerializer(env.settings.secret_key, salt="b24app.adapters.banks-link.v1")
    _, raw = ser.loads_unsafe(replayed)
    forged = ser.dump_payload({**raw, "a": True}).decode() + "." + ".".join(replayed.rsplit(".", 2)[-2:])
    with httpx.Client(timeout=30, follow_redirects=False) as browser:
        admin_page = browser.get(f"{env.app_url}/bank/start", params={"ticket": link_ticket(env)})
        csrf = csrf_of(admin_page)  # a valid CSRF token of this browser session
        for ticket in (replayed, forged):
            for path in ("/bank/start", "/bank/token"):
                page = browser.get(f"{env.app_url}{path}", params={"ticket": ticket})
                assert page.status_code == 403, (path, page.status_code)
                assert ticket is forged or "administrator" in page.text  # a clear error
            started = browser.post(f"{env.app_url}/bank/start", data={
                "ticket": ticket, "csrf_token": csrf, "inn": OWN_IP["inn"], "kpp": "", "confirm_foreign": OWN_IP["inn"]})
            assert started.status_code == 403 and "location" not in started.headers
            pasted = browser.post(f"{env.app_url}/bank/token", data={
                "ticket": ticket, "csrf_token": csrf, "token": "t.static-x", "confirm_foreign": OWN_IP["inn"]})
            assert pasted.status_code == 403
    assert state_of(env) == before
    assert env.bank_state()["requests"].get("/auth/authorize", 0) == authorize_calls


def test_a_link_state_without_an_administrator_is_refused_at_the_callback(env):
    """States written before this rule (no admin mark) cannot complete a link, even with the right browser."""
    portal_id = env.ctx.portals.find(env.member_id()).id
    state = banklink.issue_state(env.ctx, portal_id, 2, {"inn": OWN_IP["inn"], "kpp": "0", "verifier": "v" * 43,
                                                         "nonce": "n"})
    before = state_of(env)
    with pytest.raises(LinkFailed) as refused:
        banklink.complete_link(env.ctx, error=None, state=state, code="c.any", browser_nonce="n")
    assert refused.value.reason == "not_admin"
    assert state_of(env)["links"] == before["links"]
    with pytest.raises(LinkFailed):
        banklink.start_link(env.ctx, portal_id, 2, OWN_IP["inn"], "0", "n", is_admin=False, checked="confirmed")


def test_an_admin_linking_a_company_not_among_the_portals_is_asked_to_confirm(env):
    before = state_of(env)
    authorize_calls = env.bank_state()["requests"].get("/auth/authorize", 0)
    asked = link_bank(env, inn=OWN_IP["inn"], kpp="", phone=OWN_IP["phones"][0], own_company=False)
    assert asked.status_code == 409
    assert 'id="confirm-foreign"' in asked.text and OWN_IP["inn"] in asked.text
    assert state_of(env) == before  # nothing linked, no OAuth state, T-Bank not even asked
    assert env.bank_state()["requests"].get("/auth/authorize", 0) == authorize_calls

    # The second step: the admin ticks the box and goes on through T-Bank's pages.
    with httpx.Client(follow_redirects=True, timeout=30) as browser:
        page = browser.get(f"{env.app_url}/bank/start", params={"ticket": link_ticket(env)})
        page = submit_form(browser, page, {"inn": OWN_IP["inn"], "kpp": ""})
        assert page.status_code == 409
        # ticking the box for one INN and sending another is asked again
        swapped = submit_form(browser, page, {"confirm_foreign": OWN_IP["inn"], "inn": "7702345672",
                                               "kpp": "770201001"})
        assert swapped.status_code == 409 and 'id="confirm-foreign"' in swapped.text and "7702345672" in swapped.text
        page = submit_form(browser, page, {"confirm_foreign": OWN_IP["inn"]})  # the box names the INN
        page = submit_form(browser, page, {"phone": OWN_IP["phones"][0]})
        code = re.search(r'id="sms-code">(\d{4})<', page.text).group(1)
        page = submit_form(browser, page, {"code": code})
        done = submit_form(browser, page, {}, button="allow")
    assert done.status_code == 200 and 'id="link-ok"' in done.text
    with env.ctx.db.session() as s:
        link = s.scalar(select(BankLink).where(BankLink.inn == OWN_IP["inn"]))
        own = s.scalar(select(BankLink).where(BankLink.inn != OWN_IP["inn"]))
    assert link.inn_check == "confirmed" and link.inn_confirmed_at is not None and link.linked_by == 1
    assert own.inn_check == "own_company" and own.inn_confirmed_at is None
    banklink.unlink(env.ctx, link.portal_id, link.id)


def test_a_pasted_token_of_a_foreign_company_needs_the_confirmation_too(env):
    token = httpx.post(f"{env.bank_url}/sandbox/static-tokens", json={"inn": OWN_IP["inn"], "kpp": "0"},
                       timeout=30).json()["token"]
    before = state_of(env)
    with httpx.Client(timeout=30, follow_redirects=True) as browser:
        page = browser.get(f"{env.app_url}/bank/token", params={"ticket": link_ticket(env)})
        asked = submit_form(browser, page, {"token": token})
        assert asked.status_code == 409 and 'data-reason="inn_not_own_company"' in asked.text
        assert 'name="confirm_foreign"' in asked.text and token not in asked.text
        assert state_of(env) == before
        # a confirmation of another INN than the token's company is no confirmation
        other = submit_form(browser, asked, {"token": token, "confirm_foreign": "7701234567"})
        assert other.status_code == 409 and state_of(env) == before
        done = submit_form(browser, asked, {"token": token, "confirm_foreign": OWN_IP["inn"]})
    assert done.status_code == 200 and 'id="link-ok"' in done.text
    with env.ctx.db.session() as s:
        link = s.scalar(select(BankLink).where(BankLink.inn == OWN_IP["inn"]))
    assert link.kind == "static" and link.inn_check == "confirmed" and link.status == "active"
    banklink.unlink(env.ctx, link.portal_id, link.id)


def test_the_account_list_shows_masked_numbers_only(env):
    """Issue #11 item 12: GET /bank/accounts gave every user of the portal the full account numbers."""
    numbers = [a["accountNumber"] for a in env.bank_state()["accounts"]]
    client = env.flask_app.test_client()
    d = env.deals[0]
    for token in (frame(env, user=3, admin=False, deal=d["deal_id"], owner=2), frame(env, user=1, admin=True)):
        r = client.get("/bank/accounts", headers={"X-Frame-Token": token})
        assert r.status_code == 200
        listed = r.get_json()["accounts"]
        assert listed and all(a["account_number"].startswith("•••• ") for a in listed)
        assert not [n for n in numbers if n in r.get_data(as_text=True)]
