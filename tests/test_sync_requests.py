"""A sync request (the bank's webhook, "check the bank now") that arrives while the account is being read must
not be forgotten when that read ends: the read may have started before the payment existed. Found by the mixed
soak (`benchmarks/soak.py --banks tbank,tochka --files`): a Tochka webhook that came during a failing statement
read was overwritten by the failure's back-off, and the payment waited a minute (up to 15 at the cap)."""
from __future__ import annotations

import time

import httpx
from sqlalchemy import select

from b24app.storage.models import BankAccount, Operation
from b24app.pipeline.sync import request_sync
from conftest import start_seeded_stack, wait_for


def _account(st) -> BankAccount:
    with st.ctx.db.session() as s:
        return s.scalars(select(BankAccount).where(BankAccount.watched.is_(True)).order_by(BankAccount.id)).first()


def _stored(st, document_number: str) -> bool:
    with st.ctx.db.session() as s:
        return s.scalar(select(Operation.id).where(Operation.document_number == document_number)) is not None


def _pay_during_a_read(st, number: str, after: float) -> None:
    """Ask for a read, wait until the worker holds the account (its statement request is on its way, slowed by
    the sandbox's latency), then pay `after` seconds later: the bank's webhook reaches the app while the read is
    still running. The sandbox stamps operations to the second: after 1.2 s the payment is past the read's end."""
    acc = _account(st)
    request_sync(st.ctx, acc.portal_id, [acc.id])
    wait_for(lambda: _account(st).lease_owner is not None, timeout=10, interval=0.02)
    time.sleep(after)
    st.pay("12000.00", "Оплата по счету № 1207", payerInn="7712345678", documentNumber=number,
           accountNumber=acc.account_number)


def test_a_webhook_during_a_read_is_answered_at_once_not_at_the_next_interval(tmp_path):
    st = start_seeded_stack(tmp_path, link=True, worker=True, sync_interval=60)
    try:
        wait_for(lambda: _account(st).last_synced_at is not None, timeout=15)  # the first read after linking
        httpx.post(f"{st.bank_url}/sandbox/config", json={"latency_ms": 2500}, timeout=30).raise_for_status()
        _pay_during_a_read(st, "7001", after=1.2)
        httpx.post(f"{st.bank_url}/sandbox/config", json={"latency_ms": 0}, timeout=30).raise_for_status()
        # the read in progress ends without it; the webhook's request keeps the account due: seconds, not a minute
        wait_for(lambda: _stored(st, "7001"), timeout=12)
    finally:
        st.stop()


def test_a_webhook_during_a_failing_read_is_not_lost_in_the_back_off(tmp_path):
    st = start_seeded_stack(tmp_path, link=True, worker=True, sync_interval=60)
    try:
        wait_for(lambda: _account(st).last_synced_at is not None, timeout=15)
        httpx.post(f"{st.bank_url}/sandbox/config", json={"latency_ms": 400}, timeout=30).raise_for_status()
        httpx.post(f"{st.bank_url}/sandbox/faults", json={"kinds": {"server_error": 1.0}}, timeout=30).raise_for_status()
        _pay_during_a_read(st, "7002", after=0.3)
        wait_for(lambda: _account(st).failures >= 1, timeout=20, interval=0.02)  # that read failed (5xx)
        httpx.delete(f"{st.bank_url}/sandbox/faults", timeout=30).raise_for_status()
        httpx.post(f"{st.bank_url}/sandbox/config", json={"latency_ms": 0}, timeout=30).raise_for_status()
        # the bank is back: the webhook that came during the failed read is answered now, not after a 30 s back-off
        wait_for(lambda: _stored(st, "7002"), timeout=12)
    finally:
        st.stop()
