"""`b24app probe`: read-only conformance check, run against the sandboxes (all ok) and against a sandbox with a
deliberate difference (named, exit 1)."""
from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from click.testing import CliRunner

from b24app.cli import main
from b24app.probe import BankReader, BitrixReader, WriteRefused
from b24app.sandbox.portal import rest as portal_rest


def hook(st) -> str:
    return f"{st.portal_url}/rest/1/sandboxhook/"


def writes(st) -> dict:
    p = st.portal_state()
    return {k: len(p[k]) for k in ("notifications", "tasks", "timeline_comments", "trigger_executions")}


def test_probe_bitrix_webhook_against_the_demo_portal_is_all_ok(installed):
    before = writes(installed)
    result = CliRunner().invoke(main, ["probe", "bitrix", "--webhook", hook(installed)])
    assert result.exit_code == 0, result.output
    assert "all ok" in result.output and "differs" not in result.output
    assert "n/a with a webhook" in result.output  # placement.get / event.get need an application
    assert "sandboxhook" not in result.output and "/rest/1/***" in result.output  # the webhook's code is a secret
    assert writes(installed) == before


def test_probe_names_a_dropped_field_and_fails(installed, monkeypatch):
    spec = portal_rest.METHODS["crm.item.list"]
    real = spec.fn

    def without_account_number(ctx, params):
        out = real(ctx, params)
        for item in out.result["items"]:
            item.pop("accountNumber", None)
        return out

    monkeypatch.setattr(spec, "fn", without_account_number)
    result = CliRunner().invoke(main, ["probe", "bitrix", "--webhook", hook(installed)])
    assert result.exit_code == 1, result.output
    line = next(l for l in result.output.splitlines() if l.startswith("invoices, one page"))
    assert "differs" in line and "result.items[].accountNumber: missing" in line


def test_probe_reports_a_missing_scope(installed, monkeypatch):
    monkeypatch.setattr(portal_rest.METHODS["scope"], "fn", lambda ctx, params: ["crm", "user"])
    result = CliRunner().invoke(main, ["probe", "bitrix", "--webhook", hook(installed)])
    assert result.exit_code == 1
    assert "missing scope" in result.output and "im, placement, sale, task" in result.output


def run_cli(st, *args):
    env = {**os.environ, **st.worker_env(), "PYTHONPATH": os.getcwd()}
    return subprocess.run([sys.executable, "-m", "b24app.cli", "probe", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_probe_bitrix_member_id_uses_the_stored_tokens(installed):
    before = writes(installed)
    out = run_cli(installed, "bitrix", "--member-id", installed.member_id())
    assert out.returncode == 0, out.stdout + out.stderr
    assert not [l for l in out.stdout.splitlines() if any(s in l for s in ("differs", "missing scope", " error "))]
    assert "placement.get" in out.stdout and "n/a" not in out.stdout.split("placement.get", 1)[1].splitlines()[0]
    assert writes(installed) == before
    creds = installed.ctx.portals.load(installed.member_id())
    assert creds.access_token not in out.stdout + out.stderr and creds.refresh_token not in out.stdout + out.stderr


def test_probe_tbank_member_id_is_all_ok_and_prints_no_token(linked):
    from sqlalchemy import select

    from b24app.banklinks.tbank import LinkTokens
    from b24app.storage.models import BankLink

    hooks = len(linked.bank_state().get("webhooks") or [])
    out = run_cli(linked, "tbank", "--member-id", linked.member_id())
    assert out.returncode == 0, out.stdout + out.stderr
    assert "all ok" in out.stdout and "introspect" in out.stdout and "webhook permission" in out.stdout
    with linked.ctx.db.session() as s:
        link_id = s.scalar(select(BankLink.id))
    assert LinkTokens(linked.ctx, link_id)() not in out.stdout + out.stderr
    assert len(linked.bank_state().get("webhooks") or []) == hooks


def test_probe_tbank_static_token_against_the_sandbox(linked):
    token = httpx.post(f"{linked.bank_url}/sandbox/static-tokens", json={"inn": "7701234560", "kpp": "770101001"},
                       timeout=30).json()
    token = token.get("token") or token.get("access_token")
    result = CliRunner().invoke(main, ["probe", "tbank", "--token", token, "--base-url", linked.settings.tbank_api_url])
    assert result.exit_code == 0, result.output
    assert token not in result.output and "n/a with a static cabinet token" in result.output


def test_the_probe_refuses_anything_but_reads():
    sent = []
    reader = BitrixReader(lambda m, p: sent.append(m) or {"result": True}, webhook=True)
    for method in ("crm.item.update", "crm.deal.update", "event.bind", "placement.bind", "im.notify.system.add",
                   "batch", "tasks.task.add", "crm.timeline.comment.add"):
        with pytest.raises(WriteRefused):
            reader.call_raw(method, {})
    assert sent == []
    bank = BankReader(httpx.Client(), "http://127.0.0.1:9", lambda: "t")
    for verb, path in (("POST", "/api/v1/webhook"), ("DELETE", "/api/v1/webhook/1"), ("POST", "/auth/revoke"),
                       ("POST", "/auth/token")):
        with pytest.raises(WriteRefused):
            bank.request(verb, path)


def test_probe_names_an_unbound_placement(installed):
    from b24app.probe import probe_bitrix

    client = installed.ctx.bitrix(installed.member_id())
    client.call("placement.unbind", {"PLACEMENT": "CRM_SMART_INVOICE_DETAIL_TAB"})
    checks = {c.name: c for c in probe_bitrix(BitrixReader(client.call_raw, webhook=False))}
    assert checks["manifest placements bound"].status == "differs"
    assert checks["manifest placements bound"].detail == "not bound: CRM_SMART_INVOICE_DETAIL_TAB"
    assert checks["manifest events bound"].status == "ok" and checks["placement.get"].status == "ok"
