"""Counters in Prometheus text format, computed from the database so every process reports the same truth."""
from __future__ import annotations

from sqlalchemy import func, select

from .clock import utcnow
from b24app.storage.models import BankAccount, Decision, Operation, OutboxItem, Portal


def render_prometheus(ctx) -> str:
    lines: list[str] = []

    def metric(name: str, help_: str, kind: str, samples: list[tuple[dict, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lab = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            lines.append(f"{name}{{{lab}}} {value}" if lab else f"{name} {value}")

    with ctx.db.session() as s:
        portals = s.execute(select(Portal.status, func.count()).group_by(Portal.status)).all()
        ops = s.execute(select(Operation.state, func.count()).group_by(Operation.state)).all()
        decisions = s.execute(select(Decision.outcome, func.count()).group_by(Decision.outcome)).all()
        outbox = s.execute(select(OutboxItem.status, func.count()).group_by(OutboxItem.status)).all()
        oldest_due = s.scalar(select(func.min(BankAccount.next_sync_at)).where(BankAccount.watched.is_(True)))
        synced = s.scalar(select(func.count()).select_from(BankAccount).where(BankAccount.last_synced_at.is_not(None)))
        errors = s.scalar(select(func.count()).select_from(BankAccount).where(BankAccount.last_error.is_not(None)))
    metric("b24app_portals", "Portals by install status", "gauge", [({"status": k}, v) for k, v in portals])
    metric("b24app_operations", "Bank operations by reconciliation state", "gauge", [({"state": k}, v) for k, v in ops])
    metric("b24app_decisions_total", "Match decisions by outcome", "counter", [({"outcome": k}, v) for k, v in decisions])
    metric("b24app_outbox", "Bitrix24 actions by status", "gauge", [({"status": k}, v) for k, v in outbox])
    metric("b24app_accounts_synced", "Watched accounts synced at least once", "gauge", [({}, synced or 0)])
    metric("b24app_accounts_in_error", "Accounts whose last sync failed", "gauge", [({}, errors or 0)])
    lag = max(0.0, (utcnow() - oldest_due).total_seconds()) if oldest_due else 0.0
    metric("b24app_sync_lag_seconds", "How late the most overdue account is", "gauge", [({}, round(lag, 3))])
    return "\n".join(lines) + "\n"
