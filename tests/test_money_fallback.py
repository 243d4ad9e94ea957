"""Issue #15, part 1, end to end: a payment whose purpose names no invoice, through the T-Bank and Bitrix24
sandboxes and the admin page's HTTP API. The payer's INN leads to its open invoices; a MEDIUM proposal waits for
one click (or is applied when the rules say so); our own transfers and excluded bank categories stay out."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from b24app.storage.models import Allocation, Operation
from b24app.pipeline.rules import save_rules
from b24app.sandbox.tbank.app import DEMO_INN

from test_reconcile_e2e import item, sync_now
from test_review_money import current_decision, op_by_purpose, portal_of, review_item_html
from test_web_admin import api, open_app, token_of

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
PAID = "DT31_2:P"


def test_no_number_set_of_invoices_is_proposed_and_accepted_with_one_click(linked):
    vector = linked.deals[0]  # ООО «Вектор»: invoices 1207 (12 000) and 1208 (3 000)
    purpose = "Оплата за картриджи и консультации, НДС не облагается"
    linked.pay("15000.00", purpose, payerInn=vector["inn"], payerName=vector["company"])
    sync_now(linked)
    op = op_by_purpose(linked, purpose)
    assert op.state == "review"  # MEDIUM: not applied by default
    d = current_decision(linked, op.id)
    assert d.confidence == "medium" and [r["code"] for r in d.reasons] == ["no_number", "inn_amount_combination"]
    assert item(linked, linked.deals[0]["invoice_id"])["stageId"] != PAID

    token = token_of(open_app(linked, user=1, lang="ru"))
    html = review_item_html(api(linked, "GET", "/app/api/review", token).get_json()["html"], op.id)
    assert 'data-action="accept"' in html and "1207, 1208" in html
    assert "совпали ИНН и сумма набора счетов" in html
    en = api(linked, "GET", "/app/api/review", token_of(open_app(linked, user=1, lang="en"))).get_json()["html"]
    assert "INN and the sum of a set of invoices matched" in en

    viewer = token_of(open_app(linked, user=3, lang="ru"))
    assert api(linked, "POST", "/app/api/accept", viewer, {"operation": op.id}).status_code == 403
    r = api(linked, "POST", "/app/api/accept", token, {"operation": op.id})
    assert r.status_code == 200, r.get_json()
    again = api(linked, "POST", "/app/api/accept", token, {"operation": op.id})
    assert again.status_code == 409 and again.get_json()["error"] == "not_in_review"
    sync_now(linked)
    assert item(linked, linked.deals[0]["invoice_id"])["stageId"] == PAID
    assert item(linked, linked.deals[3]["invoice_id"])["stageId"] == PAID
    with linked.ctx.db.session() as s:
        allocs = s.scalars(select(Allocation).where(Allocation.operation_pk == op.id)).all()
        assert sorted(a.amount for a in allocs) == [3000, 12000]
    reasons = [r["code"] for r in current_decision(linked, op.id).reasons]
    assert reasons == ["accepted_proposal", "no_number", "inn_amount_combination"]
    # and it can be undone like any match
    assert api(linked, "POST", "/app/api/undo", token, {"operation": op.id}).status_code == 200


def test_accept_refuses_a_proposal_the_invoices_no_longer_fit(linked):
    vector = linked.deals[0]
    linked.pay("3000.00", "За консультации", payerInn=vector["inn"], payerName=vector["company"])
    sync_now(linked)
    op = op_by_purpose(linked, "За консультации")
    assert [r["code"] for r in current_decision(linked, op.id).reasons] == ["no_number", "inn_amount_unique"]
    # Meanwhile the invoice got paid by another payment that names it.
    linked.pay("1000.00", "Оплата по счету № 1208", payerInn=vector["inn"], payerName=vector["company"])
    sync_now(linked)
    token = token_of(open_app(linked, user=1, lang="ru"))
    r = api(linked, "POST", "/app/api/accept", token, {"operation": op.id})
    assert r.status_code == 409 and r.get_json()["error"] == "proposal_stale"
    assert op_by_purpose(linked, "За консультации").state == "review"


def test_medium_applied_automatically_when_the_rules_say_so(linked):
    vector = linked.deals[0]
    page = open_app(linked, user=1, lang="ru")
    assert 'name="apply_medium"' in page.get_data(as_text=True)
    token = token_of(page)
    r = api(linked, "POST", "/app/api/rules", token, {"apply_medium": True, "ignore_categories": "incomeLoan, x y"})
    assert r.status_code == 400 and r.get_json()["error"] == "ignore_categories"
    r = api(linked, "POST", "/app/api/rules", token, {"apply_medium": True, "ignore_categories": "incomeLoan"})
    assert r.status_code == 200 and r.get_json()["rules"]["ignore_categories"] == ["incomeLoan"]
    linked.pay("3000.00", "За консультации в январе", payerInn=vector["inn"], payerName=vector["company"])
    sync_now(linked)
    op = op_by_purpose(linked, "За консультации в январе")
    assert op.state == "matched"
    d = current_decision(linked, op.id)
    assert (d.outcome, d.confidence) == ("paid", "medium")
    assert [r["code"] for r in d.reasons] == ["no_number", "inn_amount_unique", "applied_medium"]
    assert item(linked, linked.deals[3]["invoice_id"])["stageId"] == PAID
    assert item(linked, linked.deals[0]["invoice_id"])["stageId"] != PAID


def test_own_transfers_and_excluded_categories_stay_out(linked):
    save_rules(linked.ctx, portal_of(linked).id, {"ignore_categories": "incomeLoan"})
    before = len(linked.portal_state()["notifications"])
    # From our own company (the linked bank's INN), even naming an invoice and paying its exact amount.
    linked.pay("12000.00", "Перевод собственных средств, счет 1207", payerInn=DEMO_INN, payerName="ООО «Демо»")
    linked.pay("3000.00", "Выдача транша", payerInn=linked.deals[0]["inn"], category="incomeLoan")
    sync_now(linked)
    own = op_by_purpose(linked, "Перевод собственных средств, счет 1207")
    loan = op_by_purpose(linked, "Выдача транша")
    assert (own.state, loan.state, loan.category) == ("ignored", "ignored", "incomeLoan")
    assert [r["code"] for r in current_decision(linked, own.id).reasons] == ["own_transfer"]
    assert [r["code"] for r in current_decision(linked, loan.id).reasons] == ["ignored_category"]
    assert item(linked, linked.deals[0]["invoice_id"])["stageId"] != PAID
    assert len(linked.portal_state()["notifications"]) == before
    token = token_of(open_app(linked, user=1, lang="ru"))
    closed = api(linked, "GET", "/app/api/review?state=closed", token).get_json()
    assert own.id in closed["operations"] and "перевод между своими счетами" in closed["html"]
    with linked.ctx.db.session() as s:
        assert s.get(Operation, own.id).reconciled_at is not None
