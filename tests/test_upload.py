"""The admin page's 1C statement upload over HTTP (web/upload.py): preview, import, the plain form without script,
every bad file refused with its line and nothing stored, the preview not forgeable, file-only accounts."""
from __future__ import annotations

import html
import json
import re
import socket
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from b24app.storage.models import BankAccount, BankLink, Operation, StatementUpload
from b24app.sandbox.stack import APP_CLIENT_ID, ensure_own_company
from onec_samples import Doc, statement_bytes
from test_statement_import import item, our_account, run_worker_until_idle, today
from test_web_admin import open_app
from test_web_placement import open_tab

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

NOT_OURS = "40702810500000000777"
FILE_ONLY = "40702810100000000555"   # an account at a bank the app has no live link to
FILE_INN = "7701234567"              # onec_samples.OUR_INN: the recipient INN of the sample documents


def admin_token(st, user: int = 1) -> str:
    """The frame token of the app page as Bitrix24 opens it for `user` (1: the portal's admin)."""
    page = httpx.get(f"{st.portal_url}/marketplace/app/{APP_CLIENT_ID}/", params={"user": user, "lang": "en"},
                     timeout=30)
    m = re.search(r'<form id="app-form-0" method="post" action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    fields = {html.unescape(k): html.unescape(v)
              for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', m.group(2))}
    url = urlsplit(html.unescape(m.group(1)))
    resp = httpx.post(f"{st.app_url}{url.path}?{url.query}", data=fields, timeout=30)
    assert resp.status_code == 200, resp.text[:300]
    return json.loads(re.search(r'id="b24app-config">(.*?)</script>', resp.text, re.S).group(1))["token"]


def upload(st, token: str, data: bytes, name: str = "kl_to_1c.txt", *, header: bool = True):
    if header:
        return httpx.post(f"{st.app_url}/app/upload", files={"file": (name, data, "text/plain")},
                          headers={"X-Frame-Token": token}, timeout=60)
    return httpx.post(f"{st.app_url}/app/upload", files={"file": (name, data, "text/plain")},
                      data={"frame_token": token}, timeout=60)


def do_import(st, token: str, upload_id: str, confirm: list[str] = (), *, header: bool = True):
    data = {"upload": upload_id, "confirm": list(confirm)}
    if header:
        return httpx.post(f"{st.app_url}/app/upload/import", data=data, headers={"X-Frame-Token": token}, timeout=60)
    return httpx.post(f"{st.app_url}/app/upload/import", data={**data, "frame_token": token}, timeout=60)


def counts(text: str) -> dict:
    m = re.search(r'id="upload-preview" data-incoming="(\d+)" data-new="(\d+)"\s+data-known="(\d+)" '
                  r'data-not-ours="(\d+)"', text)
    assert m, text[:1500]
    return dict(zip(("incoming", "new", "known", "not_ours"), map(int, m.groups())))


def statement_text_of(accounts: list[str], docs: list[Doc]) -> bytes:
    """One statement of several accounts: the sample's header and sections, one РасчСчет section per account."""
    text = statement_bytes(accounts[0], docs).decode("cp1251")
    extra = "".join(f"СекцияРасчСчет\r\nРасчСчет={a}\r\nКонецРасчСчет\r\n" for a in accounts[1:])
    return text.replace("КонецРасчСчет\r\n", "КонецРасчСчет\r\n" + extra, 1).encode("cp1251")


def stored(st, model=Operation) -> int:
    with st.ctx.db.session() as s:
        return s.scalar(select(func.count()).select_from(model))


def pay_d0(st, acc: str, **kw) -> bytes:
    d0 = st.deals[0]  # 1207, 12 000.00
    return statement_bytes(acc, [
        Doc("310", today(st), "12000.00", f"Оплата по счету № {d0['number']} от 14.01.2026", acc,
            payer_inn=d0["inn"], payer_name=d0["company"], **kw),
        Doc("13", today(st), "700.00", "Чужой платёж", NOT_OURS, payer_account="40702810600000000888")])


# -- the happy path ---------------------------------------------------------------------------------------------
def test_preview_then_import_pays_the_invoice_and_the_same_file_again_is_0_new(linked):
    token, acc, d0 = admin_token(linked), our_account(linked), linked.deals[0]
    data = pay_d0(linked, acc)
    preview = upload(linked, token, data)
    assert preview.status_code == 200, preview.text
    body = preview.json()
    assert counts(body["html"]) == {"incoming": 1, "new": 1, "known": 0, "not_ours": 1}
    assert acc in body["html"] and stored(linked) == 0 and stored(linked, StatementUpload) == 1

    done = do_import(linked, token, body["upload"])
    assert done.status_code == 200, done.text
    assert 'id="upload-result" data-new="1" data-known="0"' in done.json()["html"]
    assert stored(linked, StatementUpload) == 0  # used up
    run_worker_until_idle(linked)
    assert item(linked, d0["invoice_id"])["stageId"] == "DT31_2:P"
    with linked.ctx.db.session() as s:
        assert s.scalar(select(BankAccount.file_imported_at).where(BankAccount.account_number == acc)) is not None

    again = upload(linked, token, data).json()
    assert counts(again["html"]) == {"incoming": 1, "new": 0, "known": 1, "not_ours": 1}
    second = do_import(linked, token, again["upload"]).json()["html"]
    assert 'data-new="0"' in second and "0 new" in second and stored(linked) == 1

    # the deal tab says which bank the payment came from
    tab = open_tab(linked, "deal", d0["deal_id"], user=d0["user"], lang="en").get_data(as_text=True)
    assert 'data-bank="tbank" data-via="file"' in tab and "T-Bank, 1C file" in tab


def test_the_plain_form_works_without_script(linked):
    """No script: the token rides in a form field, each answer is a whole page with the next form in it."""
    token, acc, d0 = admin_token(linked), our_account(linked), linked.deals[0]
    page = upload(linked, token, pay_d0(linked, acc), header=False)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert counts(page.text)["new"] == 1
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(linked.portal_url))
    assert f"frame-ancestors {origin};" in page.headers["content-security-policy"]  # shown inside the portal
    form = re.search(r'<form method="post" action="([^"]+)" id="import-form">(.*?)</form>', page.text, re.S)
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(2)))
    assert set(fields) == {"frame_token", "upload"}
    done = httpx.post(f"{linked.app_url}{form.group(1)}", data=fields, timeout=60)
    assert done.status_code == 200 and 'id="upload-result" data-new="1"' in done.text
    run_worker_until_idle(linked)
    assert item(linked, d0["invoice_id"])["stageId"] == "DT31_2:P"


# -- bad files: a clear error with the line, nothing stored ----------------------------------------------------
def _without_end_of_document(acc: str) -> bytes:
    lines = statement_bytes(acc, [Doc("310", "15.01.2026", "12000.00", "Оплата", acc)]).decode("cp1251").split("\r\n")
    lines.remove("КонецДокумента")
    return "\r\n".join(lines).encode("cp1251")


def _truncated(acc: str) -> bytes:
    data = statement_bytes(acc, [Doc("310", "15.01.2026", "12000.00", "Оплата", acc)])
    return data[: data.index("ПолучательСчет".encode("cp1251"))]


def _wrong_encoding(acc: str) -> bytes:  # says Windows (cp1251), is UTF-8
    return statement_bytes(acc, [Doc("310", "15.01.2026", "12000.00", "Оплата", acc)], codec="utf-8",
                           declared="Windows")


@pytest.mark.parametrize("build, expected", [
    (_without_end_of_document, r"line \d+: .*(no КонецДокумента|КонецДокумента)"),
    (_truncated, r"line \d+: .*truncated"),
    (_wrong_encoding, r"line \d+: .*encoding"),
])
def test_a_bad_file_is_refused_with_its_line_and_nothing_is_stored(linked, build, expected):
    token = admin_token(linked)
    resp = upload(linked, token, build(our_account(linked)))
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert 'id="upload-error"' in body["html"] and body["upload"] is None
    assert re.search(expected, html.unescape(body["html"])), body["html"]
    assert stored(linked) == 0 and stored(linked, StatementUpload) == 0


def test_a_50_mb_file_is_refused_from_its_content_length_before_the_body_is_read(linked):
    token, limit = admin_token(linked), linked.ctx.settings.statement_max_bytes
    url = urlsplit(linked.app_url)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall((f"POST /app/upload HTTP/1.1\r\nHost: {url.netloc}\r\nX-Frame-Token: {token}\r\n"
                      "Content-Type: multipart/form-data; boundary=b24\r\n"
                      f"Content-Length: {50 * 1024 * 1024}\r\nConnection: close\r\n\r\n").encode())
        answer = b""
        while chunk := sock.recv(65536):  # not one byte of the 50 MB is sent: the answer comes anyway
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    message = html.unescape(json.loads(body.split(b"\r\n0\r\n")[0].split(b"\r\n", 1)[-1]
                                       if b"chunked" in head.lower() else body)["html"])
    assert "50.0 MB" in message and f"{limit // (1024 * 1024)}.0 MB" in message and "Nothing was imported" in message


def test_a_file_just_over_the_limit_is_refused_while_reading(linked):
    token, limit = admin_token(linked), linked.ctx.settings.statement_max_bytes
    data = statement_bytes(our_account(linked), []) + b" " * limit
    resp = upload(linked, token, data)
    assert resp.status_code == 413 and "Nothing was imported" in resp.json()["html"]
    assert stored(linked, StatementUpload) == 0


def test_a_body_of_unknown_length_is_cut_off_at_the_limit(linked):
    """Chunked, no Content-Length: the limit holds while the body streams."""
    token, limit = admin_token(linked), linked.ctx.settings.statement_max_bytes
    head = (b'--b24\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\n" + statement_bytes(our_account(linked), []))

    def body():
        yield head
        for _ in range(limit // (1024 * 1024) + 2):
            yield b" " * (1024 * 1024)
        yield b"\r\n--b24--\r\n"

    try:
        resp = httpx.post(f"{linked.app_url}/app/upload", content=body(), timeout=60,
                          headers={"X-Frame-Token": token, "Content-Type": "multipart/form-data; boundary=b24"})
    except httpx.HTTPError:  # the server may close before all of it is sent: then nothing can have been stored
        resp = None
    if resp is not None:
        assert resp.status_code == 413 and "Nothing was imported" in resp.json()["html"]
    assert stored(linked, StatementUpload) == 0 and stored(linked) == 0


def test_another_companys_file_is_refused_unless_confirmed_and_nothing_is_imported(linked):
    token = admin_token(linked)
    data = statement_bytes(NOT_OURS, [Doc("1", today(linked), "500.00", "Оплата", NOT_OURS, recipient_inn="7709876543")])
    body = upload(linked, token, data).json()
    assert f'name="confirm" value="{NOT_OURS}"' in body["html"] and "7709876543" in body["html"]
    refused = do_import(linked, token, body["upload"])
    assert refused.status_code == 400 and "none was confirmed as ours" in refused.json()["html"]
    assert stored(linked) == 0
    with linked.ctx.db.session() as s:
        assert s.scalar(select(func.count()).select_from(BankAccount).where(
            BankAccount.account_number == NOT_OURS)) == 0
    # a confirmation can only name an account the file itself names: another number confirms nothing
    assert do_import(linked, token, body["upload"], ["40702810999999999999"]).status_code == 400
    assert stored(linked) == 0


def test_an_account_the_file_does_not_name_properly_cannot_be_added(linked):
    token, odd = admin_token(linked), "4070281050000000077712345"  # 25 digits: no account number
    resp = upload(linked, token, statement_bytes(odd, [Doc("1", today(linked), "500.00", "Оплата", odd)]))
    assert resp.status_code == 400 and "none of which is this portal" in html.unescape(resp.json()["html"])
    assert stored(linked, StatementUpload) == 0 and stored(linked) == 0
    # next to an account of ours, it is named in the preview and its documents are left out
    acc = our_account(linked)
    body = upload(linked, token, statement_text_of([acc, odd], [
        Doc("1", today(linked), "500.00", "Оплата", odd), Doc("2", today(linked), "600.00", "Оплата", acc)])).json()
    assert "does not say whose it is" in body["html"] and 'name="confirm"' not in body["html"]
    assert counts(body["html"]) == {"incoming": 1, "new": 1, "known": 0, "not_ours": 1}
    assert do_import(linked, token, body["upload"], [odd]).status_code == 200
    assert stored(linked) == 1 and stored(linked, BankLink) == 1  # the T-Bank link only


def test_the_preview_cannot_be_forged_into_another_import(linked):
    admin = admin_token(linked)
    body = upload(linked, admin, pay_d0(linked, our_account(linked))).json()
    assert do_import(linked, admin, "x" * 32).status_code == 404                # a guessed id
    user = admin_token(linked, user=2)                                            # not an administrator
    refused = do_import(linked, user, body["upload"])
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    assert upload(linked, user, b"1CClientBankExchange\r\n").status_code == 403
    assert do_import(linked, "forged", body["upload"]).status_code == 401
    assert httpx.post(f"{linked.app_url}/app/upload/import", data={"upload": body["upload"]}).status_code == 401
    assert stored(linked) == 0
    assert do_import(linked, admin, body["upload"]).status_code == 200
    assert do_import(linked, admin, body["upload"]).status_code == 404           # used once


# -- a portal with no live bank: accounts come from the file ---------------------------------------------------
def test_a_portal_without_a_bank_link_imports_a_file_of_its_own_company(installed):
    from b24app.pipeline.invoices import refresh_all

    st, d0 = installed, installed.deals[0]
    ensure_own_company(st, FILE_INN)
    refresh_all(st.ctx, st.ctx.portals.find(st.member_id()))
    token = admin_token(st)
    body = upload(st, token, pay_d0(st, FILE_ONLY)).json()
    assert counts(body["html"]) == {"incoming": 1, "new": 1, "known": 0, "not_ours": 1}
    assert "belongs to one of your companies" in body["html"] and 'name="confirm"' not in body["html"]
    done = do_import(st, token, body["upload"]).json()["html"]
    assert 'data-new="1"' in done and FILE_ONLY in done
    with st.ctx.db.session() as s:
        link = s.scalar(select(BankLink).where(BankLink.provider == "file"))
        acc = s.scalar(select(BankAccount).where(BankAccount.account_number == FILE_ONLY))
    assert (link.inn, link.inn_check, link.status) == (FILE_INN, "own_company", "active")
    assert acc.link_id == link.id and not acc.watched and acc.file_imported_at is not None
    run_worker_until_idle(st)
    assert item(st, d0["invoice_id"])["stageId"] == "DT31_2:P"
    tab = open_tab(st, "deal", d0["deal_id"], user=d0["user"], lang="en").get_data(as_text=True)
    assert 'data-bank="file" data-via="file"' in tab

    # the bank card still offers a live link (a file is no bank connection), the sources list shows the file
    card = httpx.get(f"{st.app_url}/app/api/bank", headers={"X-Frame-Token": token}, timeout=30).json()
    assert card["linked"] is False
    page = httpx.post(f"{st.app_url}/app/upload", headers={"X-Frame-Token": token}, timeout=30)  # no file
    assert page.status_code == 400 and "Choose a 1C statement file" in page.json()["html"]
    # a file account is never polled: ticking it to watch changes nothing (there is no bank to read)
    httpx.post(f"{st.app_url}/bank/accounts", json={"watched": [acc.id]}, headers={"X-Frame-Token": token},
               timeout=30).raise_for_status()
    with st.ctx.db.session() as s:
        assert s.get(BankAccount, acc.id).watched is False
    # the first-run checklist counts the imported statement as the bank and its account as the accounts
    html_page = open_app(st, user=1, lang="en").get_data(as_text=True)
    assert dict(re.findall(r'data-step="(\w+)" data-done="(\d)"', html_page)) == {
        "link": "1", "accounts": "1", "rules": "0", "payment": "1"}


def test_the_admin_page_lists_each_accounts_sources(linked):
    token, acc = admin_token(linked), our_account(linked)
    body = upload(linked, token, statement_bytes(FILE_ONLY, [
        Doc("1", today(linked), "500.00", "Оплата", FILE_ONLY, recipient_inn="7709876543")])).json()
    assert do_import(linked, token, body["upload"], [FILE_ONLY]).status_code == 200
    card = httpx.get(f"{linked.app_url}/app/api/bank", headers={"X-Frame-Token": token}, timeout=30).json()
    assert card["linked"] is True and "T-ID" in card["html"]  # the T-Bank link, not the newer file "link"
    page = open_app_page(linked)
    sources = re.search(r'<ul class="b24-accounts" id="account-sources">(.*?)</ul></li>\s*</ul>', page, re.S).group(1)
    tbank = re.search(r'data-account="[^"]*%s">.*?</ul>' % acc[-4:], sources, re.S).group(0)
    assert 'data-source="tbank" data-health="live"' in tbank and 'data-source="file"' not in tbank
    filed = re.search(r'data-account="[^"]*%s">.*?</ul>' % FILE_ONLY[-4:], sources, re.S).group(0)
    assert 'data-source="file" data-health="imported"' in filed and "last import" in filed


def open_app_page(st) -> str:
    page = httpx.get(f"{st.portal_url}/marketplace/app/{APP_CLIENT_ID}/", params={"user": 1, "lang": "en"},
                     timeout=30)
    m = re.search(r'<form id="app-form-0" method="post" action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    fields = {html.unescape(k): html.unescape(v)
              for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', m.group(2))}
    url = urlsplit(html.unescape(m.group(1)))
    return httpx.post(f"{st.app_url}{url.path}?{url.query}", data=fields, timeout=30).text


def test_a_file_account_of_a_company_not_ours_needs_the_admins_confirmation(installed):
    from b24app.pipeline.invoices import refresh_all

    st, d0 = installed, installed.deals[0]
    refresh_all(st.ctx, st.ctx.portals.find(st.member_id()))
    token = admin_token(st)
    body = upload(st, token, pay_d0(st, FILE_ONLY)).json()
    assert f'name="confirm" value="{FILE_ONLY}"' in body["html"]
    assert do_import(st, token, body["upload"]).status_code == 400 and stored(st) == 0
    body = upload(st, token, pay_d0(st, FILE_ONLY)).json()
    done = do_import(st, token, body["upload"], [FILE_ONLY])
    assert done.status_code == 200 and 'data-new="1"' in done.json()["html"]
    with st.ctx.db.session() as s:
        link = s.scalar(select(BankLink).where(BankLink.provider == "file"))
    assert (link.inn, link.inn_check) == (FILE_INN, "confirmed") and link.inn_confirmed_at is not None


def test_uploads_are_forgotten_when_the_app_is_uninstalled(linked):
    token = admin_token(linked)
    body = upload(linked, token, pay_d0(linked, our_account(linked))).json()
    assert stored(linked, StatementUpload) == 1
    r = httpx.post(f"{linked.portal_url}/sandbox/uninstall", json={"client_id": APP_CLIENT_ID, "clean": False},
                   timeout=30)
    assert r.status_code == 200, r.text
    assert stored(linked, StatementUpload) == 0  # bank data of a portal that left: not kept for 30 minutes
    assert do_import(linked, token, body["upload"]).status_code == 401 and stored(linked) == 0
