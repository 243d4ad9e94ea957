"""`b24app demo`: the whole product on a laptop, on ports N (app), N+1 (Bitrix24 portal), N+2 (T-Bank), N+3 (Tochka)."""
from __future__ import annotations

import signal
import threading
import time
from decimal import Decimal

import click

from .domain.formatting import format_money
from b24app.sandbox.portal.app import sandbox_state
from b24app.sandbox.portal.crm import stage_semantics
from .sandbox.stack import DEMO_INN, DEMO_PHONE, PortInUse, link_bank, link_tochka, seed_crm, start_stack


def _the_client_pays(stack, deals: list[dict]) -> None:
    """The main job, once, as it happens: one invoice paid in full and one underpaid through T-Bank, one paid in
    full through Tochka (its signed webhook); print what the app did."""
    state = sandbox_state(stack.portal_server.app)
    portal = state.portals[stack.portal_code]
    full, part, other = deals[0], deals[1], deals[3]
    partial = (Decimal(part["amount"]) * Decimal("0.8")).quantize(Decimal("1"))
    click.echo("")
    click.echo("The client pays (bank transfers into the linked accounts):")
    for bank, deal, amount, purpose in (
            ("T-Bank", full, Decimal(full["amount"]), f"Оплата по счету № {full['number']} от 14.01.2026"),
            ("T-Bank", part, partial, f"Оплата по сч. {part['number']} частично"),
            ("Tochka", other, Decimal(other["amount"]), f"Оплата по счету № {other['number']} от 15.01.2026")):
        with state.lock:
            notes_before = sum(1 for n in portal.notifications if n["user_id"] == deal["user"])
        started = time.monotonic()
        if bank == "Tochka":
            stack.pay_tochka(amount, purpose, payer_inn=deal["inn"], payer_name=deal["company"])
        else:
            stack.pay(amount, purpose, payerInn=deal["inn"], payerName=deal["company"])

        def told() -> bool:
            with state.lock:
                return sum(1 for n in portal.notifications if n["user_id"] == deal["user"]) > notes_before

        while not told() and time.monotonic() - started < 60:
            time.sleep(0.05)
        with state.lock:
            stage = portal.invoices[deal["invoice_id"]].get("stageId")
        seconds = time.monotonic() - started
        user = portal.users.get(deal["user"])
        manager = f"{user.name} {user.last_name}" if user else f"user {deal['user']}"
        shown = f"  {bank}: {format_money(amount, 'RUB')} «{purpose}» →"
        if not told():
            click.echo(f"{shown} nothing yet after {seconds:.0f} s (see the admin page's history)")
        elif stage_semantics(stage) == "S":  # the invoice is in its funnel's success stage
            click.echo(f"{shown} invoice {deal['number']} paid after {seconds:.1f} s; the manager "
                       f"({manager}) notified, a comment on the deal's timeline")
        else:
            still = format_money(Decimal(deal["amount"]) - amount, "RUB")
            click.echo(f"{shown} underpaid, {still} still due: the manager ({manager}) told in chat "
                       f"after {seconds:.1f} s; the invoice stays open")


def run_demo(*, base_port: int = 5000, data_dir: str | None = None, sync_interval: int = 5,
             exit_after_ready: bool = False, pay: bool = True) -> None:
    try:
        stack = start_stack(base_port=base_port, data_dir=data_dir, sync_interval=sync_interval)
    except PortInUse as exc:
        other = base_port + 100
        raise click.ClickException(
            f"port {exc.port} is already in use (another `b24app demo`, or another program). The demo needs "
            f"{base_port} to {base_port + 3}; pick other ports with --base-port, e.g. "
            f"`b24app demo --base-port {other}` (uses {other} to {other + 3}).") from None
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        click.echo(f"app            {stack.app_url}")
        click.echo(f"portal sandbox {stack.portal_url}  (Bitrix24 stand-in)")
        click.echo(f"bank sandbox   {stack.bank_url}  (T-Bank stand-in)")
        click.echo(f"bank sandbox   {stack.tochka_url}  (Tochka stand-in)")
        result = stack.install()
        click.echo(f"installed into the portal: install page {result.get('install_status')}, "
                   f"installFinish {'seen' if result.get('install_finish') else 'NOT seen'}")
        deals = seed_crm(stack)
        click.echo(f"seeded {len(deals)} deals with smart invoices")
        # Tochka first, then T-Bank: the admin page shows the most recent link (T-Bank), both are watched.
        page = link_tochka(stack)
        if page.status_code != 200 or 'id="link-ok"' not in page.text:
            raise click.ClickException(f"Tochka link failed: HTTP {page.status_code}")
        click.echo(f"Tochka linked by its consent flow (company INN {DEMO_INN}, phone {DEMO_PHONE}, SMS code)")
        page = link_bank(stack)
        if page.status_code != 200 or 'id="link-ok"' not in page.text:
            raise click.ClickException(f"bank link failed: HTTP {page.status_code}")
        click.echo(f"T-Bank linked by SMS (company INN {DEMO_INN}, phone {DEMO_PHONE})")
        stack.start_worker()
        if pay:
            _the_client_pays(stack, deals)
        first = deals[2] if pay else deals[0]  # an invoice still open, for you to pay
        click.echo("")
        click.echo("Open these in a browser:")
        click.echo(f"  deal card with the Payments tab  {stack.portal_url}/crm/deal/details/{deals[0]['deal_id']}/")
        click.echo(f"  the app's admin page             {stack.portal_url}/marketplace/app/{stack.settings.bitrix_client_id}/")
        click.echo(f"  portal state (notifications)     {stack.portal_url}/sandbox/state")
        click.echo(f"Pay invoice {first['number']} (deal {first['deal_id']}) yourself (the client's bank transfer):")
        click.echo(f"  curl -s -X POST {stack.bank_url}/sandbox/operations -H 'Content-Type: application/json' \\")
        click.echo(f"       -d '{{\"amount\": \"{first['amount']}\", \"payPurpose\": \"Оплата по счету № {first['number']} "
                   f"от 14.01.2026\", \"payerInn\": \"{first['inn']}\", \"payerName\": \"{first['company']}\"}}'")
        click.echo("…or into the company's Tochka account (a signed incomingPayment webhook follows):")
        click.echo(f"  curl -s -X POST {stack.tochka_url}/sandbox/operations -H 'Content-Type: application/json' \\")
        click.echo(f"       -d '{{\"amount\": \"{first['amount']}\", \"purpose\": \"Оплата по счету № {first['number']} "
                   f"от 14.01.2026\", \"payer_inn\": \"{first['inn']}\", \"payer_name\": \"{first['company']}\"}}'")
        click.echo("demo ready", color=False)
        if exit_after_ready:
            return
        while not stop.is_set():
            stop.wait(0.5)
    finally:
        click.echo("stopping…")
        stack.stop()
        time.sleep(0.1)
