"""A renamed portal (its old address answers 302 to the new one) still opens the app's tab: the placement's
verifying call follows the portal from the stored address, and the app stores the new one.

Its own module: the placement tests share one module-scoped stack, and on PostgreSQL a fresh stack empties the
one test database."""
from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

import httpx
from sqlalchemy import select

from b24app.storage.models import Portal


def open_tab(st, deal_id: int, user: int = 2, **override):
    """Open the deal card at the portal's current address and post its app tab form to the app."""
    page = httpx.get(f"{st.portal_url}/crm/deal/details/{deal_id}/", params={"user": user, "tab": 0}, timeout=30)
    page.raise_for_status()
    m = re.search(r'<form id="app-form-0" method="post" action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    assert m, "the deal card has no app tab"
    fields = {html.unescape(k): html.unescape(v)
              for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', m.group(2))}
    fields.update(override)
    url = urlsplit(html.unescape(m.group(1)))
    return st.flask_app.test_client().post(f"{url.path}?{url.query}", data=fields)


def test_a_renamed_portal_still_opens_its_tab_and_the_app_follows_it(installed):
    """The app stored the portal's old address; the portal was renamed (its old address answers 302), then
    renamed again by a fault on the verifying call itself. The tab still opens, framed by the portal, and the
    stored address is the new one: learnt only once the posted AUTH_ID had been verified there."""
    st = installed
    deal_id = st.deals[0]["deal_id"]
    with st.ctx.db.session() as s:
        old_endpoint = s.scalar(select(Portal.client_endpoint))
    assert st.portal_http("POST", "/sandbox/rename", json={"new_code": "renamed"}).json()["code"] == "renamed"
    st.portal_code = "renamed"  # the portal page is opened at its new address; only the app is behind

    forged = open_tab(st, deal_id, AUTH_ID="forged-token-0000000000000000")
    assert forged.status_code == 403
    with st.ctx.db.session() as s:
        assert s.scalar(select(Portal.client_endpoint)) == old_endpoint  # a refused POST teaches nothing

    requests_before = st.portal_state()["requests"]
    httpx.post(f"{st.sandbox_url}/sandbox/faults", json={"kinds": {"rename": 0.5}, "seed": 1},
               timeout=30).raise_for_status()  # random.Random(1): the first draw renames, the second does not
    try:
        resp = open_tab(st, deal_id)
    finally:
        httpx.delete(f"{st.sandbox_url}/sandbox/faults", timeout=30)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    assert 'id="b24app-config"' in resp.get_data(as_text=True)  # the page with its frame token
    state = st.portal_state()
    assert st.portal_code == state["code"] == "renamed-r1" and state["faults"] == {"rename": 1}
    assert state["requests"] - requests_before == 2  # the redirected batch and its re-POST (old code: no count)
    with st.ctx.db.session() as s:
        row = s.scalar(select(Portal))
        assert row.client_endpoint == state["client_endpoint"] == f"{st.sandbox_url}/p/renamed-r1/rest/"
        assert row.domain == state["domain"]
    csp = resp.headers["Content-Security-Policy"]
    assert f"frame-ancestors {st.sandbox_url};" in csp
