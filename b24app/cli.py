"""The `b24app` console script: demo, serve, worker, db upgrade, rotate-keys, probe, import-statement."""
from __future__ import annotations

import os
import sys

import click

from .config import ConfigError, from_env


def _settings(**overrides):
    try:
        return from_env(**overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def main() -> None:
    """b24app: T-Bank payments reconciled against Bitrix24 invoices."""


@main.command()
@click.option("--base-port", default=5000, show_default=True, help="app on N, portal sandbox on N+1, bank on N+2")
@click.option("--data-dir", default=None, help="keep data here (default: a fresh temporary directory)")
@click.option("--sync-interval", default=5, show_default=True, help="seconds between statement polls")
@click.option("--exit-after-ready", is_flag=True, help="stop right after printing 'demo ready' (for scripts)")
@click.option("--pay/--no-pay", default=True, show_default=True,
              help="the client pays two invoices (one in full, one partly) before the demo waits for you")
def demo(base_port: int, data_dir: str | None, sync_interval: int, exit_after_ready: bool, pay: bool) -> None:
    """Run the whole story on this machine: sandboxes, app, worker, install, bank link, payments."""
    from .demo import run_demo

    run_demo(base_port=base_port, data_dir=data_dir, sync_interval=sync_interval, exit_after_ready=exit_after_ready,
             pay=pay)


@main.command()
@click.option("--bind", default=None, help="host:port (default 127.0.0.1:8000)")
@click.option("--workers", type=int, default=None, help="gunicorn worker processes")
@click.option("--config", "config_path", default=None, help="gunicorn config (default install/gunicorn.conf.py)")
def serve(bind: str | None, workers: int | None, config_path: str | None) -> None:
    """Production web process (gunicorn, stateless; run several behind nginx)."""
    _settings()  # fail fast on bad configuration
    conf = config_path or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                       "install", "gunicorn.conf.py")
    # Run gunicorn from this interpreter: under systemd the venv's bin/ is not on PATH.
    argv = [sys.executable, "-m", "gunicorn", "b24app.wsgi:app"]
    if os.path.exists(conf):
        argv += ["-c", conf]
    if bind:
        argv += ["--bind", bind]
    if workers:
        argv += ["--workers", str(workers)]
    os.execv(argv[0], argv)


@main.command()
@click.option("--once", is_flag=True, help="one scheduling round, then exit")
@click.option("--max-seconds", type=float, default=None, help="stop after this long")
def worker(once: bool, max_seconds: float | None) -> None:
    """Background worker: sync statements, match payments, send Bitrix24 actions."""
    from .context import AppContext
    from .logging_setup import configure_logging
    from b24app.pipeline.worker import Worker, WorkerLockError, single_worker_lock

    settings = _settings()
    configure_logging(settings)
    ctx = AppContext.for_worker(settings)
    lock = None
    if ctx.db.is_sqlite:
        try:
            lock = single_worker_lock(settings.data_dir)
        except WorkerLockError as exc:
            raise click.ClickException(str(exc)) from None
    w = Worker(ctx)
    w.install_signal_handlers()
    try:
        if once:
            click.echo(f"done {w.run_once()} units of work")
        else:
            w.run(max_seconds=max_seconds)
    finally:
        ctx.close()
        if lock is not None:
            lock.close()


@main.group()
def db() -> None:
    """Database schema (Alembic)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION, then refresh PostgreSQL's planner statistics (ANALYZE)."""
    from b24app.storage.migrate import analyze, upgrade

    settings = _settings()
    upgrade(settings.database_url, revision)
    analyzed = analyze(settings.database_url)
    click.echo(f"database at {revision}" + (", statistics refreshed" if analyzed else ""))


@main.command("rotate-keys")
def rotate_keys() -> None:
    """Re-encrypt every stored token with the newest key in B24APP_TOKEN_KEYS."""
    from .context import AppContext
    from b24app.storage.keyrotation import rotate_all

    ctx = AppContext(_settings())
    count = rotate_all(ctx)
    click.echo(f"re-encrypted {count} values with the newest key")


@main.command("import-statement")
@click.option("--member-id", required=True, help="the installed portal whose accounts the statement is of")
@click.option("--yes", is_flag=True, help="import without asking (without it: preview only, or ask on a terminal)")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def import_statement_cmd(member_id: str, yes: bool, file: str) -> None:
    """Import a 1C statement file (1CClientBankExchange, any bank): its incoming payments are reconciled like
    payments read from T-Bank's API. Shows what it would import first."""
    from .context import AppContext
    from b24app.pipeline.statement_import import StatementImportError, import_statement, preview_statement

    ctx = AppContext(_settings())
    try:
        portal = ctx.portals.find(member_id)
        if portal is None or portal.status != "installed":
            raise click.ClickException(f"no installed portal with member_id {member_id}")
        try:
            preview = preview_statement(ctx, portal.id, file)
            click.echo(_describe(preview))
            if not preview.new:
                click.echo("nothing new to import")
                return
            if not yes:
                if not (sys.stdin.isatty() and sys.stdout.isatty()):
                    click.echo("preview only: run again with --yes to import")
                    return
                if not click.confirm(f"import {preview.new} new incoming payments?", default=False):
                    click.echo("not imported")
                    return
            result = import_statement(ctx, portal.id, file)
        except StatementImportError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"imported {result.new} new incoming payments ({result.known} already known); "
                   "the worker reconciles them with the open invoices")
    finally:
        ctx.close()


def _describe(p) -> str:
    period = (f", {p.date_from:%d.%m.%Y}–{p.date_to:%d.%m.%Y}" if p.date_from and p.date_to else "")
    return "\n".join([
        f"{p.file_name}: 1C statement {p.version}, {p.encoding}{period}, account(s) {', '.join(p.accounts)}",
        f"  {p.incoming} incoming payments: {p.new} new ({p.new_amount:.2f}), {p.known} already known",
        f"  {p.outgoing} outgoing payments (not imported: only incoming payments are reconciled)",
        f"  {p.not_ours} documents for accounts not ours (not imported)",
    ])


@main.group()
def probe() -> None:
    """Read-only conformance check of a real portal or bank against the documented contracts."""


@probe.command("bitrix")
@click.option("--webhook", default=None, help="an inbound webhook of the portal: https://PORTAL/rest/USER/CODE/")
@click.option("--member-id", default=None, help="an installed portal: use its stored OAuth tokens")
def probe_bitrix_cmd(webhook: str | None, member_id: str | None) -> None:
    """app.info, scope, user, smart invoices, funnels, stages, invoices, requisites, placements, events."""
    import httpx

    from .probe import BitrixReader, mask_webhook, probe_bitrix, render, webhook_code, webhook_sender

    if bool(webhook) == bool(member_id):
        raise click.UsageError("give exactly one of --webhook or --member-id")
    if webhook:
        with httpx.Client(timeout=30) as http:
            checks = probe_bitrix(BitrixReader(webhook_sender(http, webhook), webhook=True))
        title, secrets = f"Bitrix24 portal via webhook {mask_webhook(webhook)}", (webhook, webhook_code(webhook))
    else:
        from .context import AppContext

        ctx = AppContext(_settings())
        try:
            if ctx.portals.find(member_id) is None:
                raise click.ClickException(f"no installed portal with member_id {member_id}")
            client = ctx.bitrix(member_id)
            checks = probe_bitrix(BitrixReader(client.call_raw, webhook=False))
        finally:
            ctx.close()
        title, secrets = f"Bitrix24 portal {member_id} (stored OAuth tokens)", ()
    click.echo(render(title, checks, secrets))
    sys.exit(1 if any(c.failed for c in checks) else 0)


@probe.command("tbank")
@click.option("--member-id", default=None, help="the portal whose linked T-Bank company to check (T-ID tokens)")
@click.option("--token", default=None, envvar="B24APP_PROBE_TBANK_TOKEN",
              help="a static T-Business cabinet token instead (or env B24APP_PROBE_TBANK_TOKEN)")
@click.option("--base-url", default=None, help="T-API base URL (default: B24APP_TBANK_API_URL or the bank's)")
def probe_tbank_cmd(member_id: str | None, token: str | None, base_url: str | None) -> None:
    """introspect, accounts, company, one statement page, webhook permission."""
    import httpx

    from .probe import BankReader, probe_bank, render

    if bool(token) == bool(member_id):
        raise click.UsageError("give exactly one of --token or --member-id")
    if token:
        with httpx.Client(timeout=30) as http:
            checks = probe_bank(BankReader(http, base_url or "https://business.tbank.ru/openapi", lambda: token))
        click.echo(render("T-Bank (static token)", checks, (token,)))
        sys.exit(1 if any(c.failed for c in checks) else 0)
    from sqlalchemy import select

    from b24app.adapters.banks.errors import BankError
    from b24app.banklinks.tbank import LinkTokens
    from .context import AppContext
    from b24app.storage.models import BankLink

    settings = _settings()
    ctx = AppContext(settings)
    try:
        portal = ctx.portals.find(member_id)
        with ctx.db.session() as s:
            link_id = s.scalar(select(BankLink.id).where(BankLink.portal_id == portal.id, BankLink.status == "active")
                               .order_by(BankLink.id)) if portal else None
        if link_id is None:
            raise click.ClickException(f"no linked T-Bank company for member_id {member_id}")
        try:
            access = LinkTokens(ctx, link_id)()
        except BankError as exc:  # consent revoked, refresh refused...: say so, print no token
            raise click.ClickException(f"the link's token is not usable: {type(exc).__name__}: {exc}") from None
        reader = BankReader(ctx.http, base_url or settings.tbank_api_url, lambda: access)
        tid_url = settings.tbank_id_url.rstrip("/")

        def introspect():
            return BankReader(ctx.http, tid_url, lambda: "").request(
                "POST", "/auth/introspect", data={"token": access},
                auth=(settings.tbank_client_id, settings.tbank_client_secret))

        checks = probe_bank(reader, introspect=introspect)
    finally:
        ctx.close()
    click.echo(render(f"T-Bank company linked to {member_id}", checks, (access,)))
    sys.exit(1 if any(c.failed for c in checks) else 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
