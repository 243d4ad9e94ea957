"""`b24app demo`: the whole product on a laptop, on ports N (app), N+1 (Bitrix24 portal), N+2 (T-Bank)."""
from __future__ import annotations

import signal
import threading
import time

import click

from .sandbox.stack import DEMO_INN, DEMO_PHONE, link_bank, seed_crm, start_stack


def run_demo(*, base_port: int = 5000, data_dir: str | None = None, sync_interval: int = 5,
             exit_after_ready: bool = False) -> None:
    stack = start_stack(base_port=base_port, data_dir=data_dir, sync_interval=sync_interval)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        click.echo(f"app            {stack.app_url}")
        click.echo(f"portal sandbox {stack.portal_url}  (Bitrix24 stand-in)")
        click.echo(f"bank sandbox   {stack.bank_url}  (T-Bank stand-in)")
        result = stack.install()
        click.echo(f"installed into the portal: install page {result.get('install_status')}, "
                   f"installFinish {'seen' if result.get('install_finish') else 'NOT seen'}")
        deals = seed_crm(stack)
        click.echo(f"seeded {len(deals)} deals with smart invoices")
        page = link_bank(stack)
        if page.status_code != 200 or 'id="link-ok"' not in page.text:
            raise click.ClickException(f"bank link failed: HTTP {page.status_code}")
        click.echo(f"T-Bank linked by SMS (company INN {DEMO_INN}, phone {DEMO_PHONE})")
        stack.start_worker()
        first = deals[0]
        click.echo("")
        click.echo("Open these in a browser:")
        click.echo(f"  deal card with the Payments tab  {stack.portal_url}/crm/deal/details/{first['deal_id']}/")
        click.echo(f"  the app's admin page             {stack.portal_url}/marketplace/app/{stack.settings.bitrix_client_id}/")
        click.echo(f"  portal state (notifications)     {stack.portal_url}/sandbox/state")
        click.echo("Pay an invoice (the client's bank transfer):")
        click.echo(f"  curl -s -X POST {stack.bank_url}/sandbox/operations -H 'Content-Type: application/json' \\")
        click.echo(f"       -d '{{\"amount\": \"{first['amount']}\", \"payPurpose\": \"Оплата по счету № {first['number']} "
                   f"от 14.01.2026\", \"payerInn\": \"{first['inn']}\", \"payerName\": \"{first['company']}\"}}'")
        click.echo("demo ready", color=False)
        if exit_after_ready:
            return
        while not stop.is_set():
            stop.wait(0.5)
    finally:
        click.echo("stopping…")
        stack.stop()
        time.sleep(0.1)
