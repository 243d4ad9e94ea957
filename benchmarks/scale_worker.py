"""The app's real `Worker` in its own process, recording when each account fell due and when it was synced.

    python -m benchmarks.scale_worker --settings FILE --seconds S --out FILE

`--settings` is a JSON object of `b24app.config.Settings` fields. The recording adds one small query
per claimed batch (the claimed accounts' `next_sync_at`) and nothing per REST call; everything else is
`b24app.worker.Worker` unchanged. At the end the records are written to `--out` as JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import threading
import time


def recording_worker_classes():
    from sqlalchemy import select

    from b24app.models import BankAccount
    from b24app.worker import Worker

    class RecordingWorker(Worker):
        """Worker that remembers (account, due, claimed, started, released, ok) for every sync."""

        def __init__(self, ctx, **kw):
            super().__init__(ctx, **kw)
            self._lock = threading.Lock()
            self._due: dict[int, tuple[float, float]] = {}
            self._started: dict[int, float] = {}
            self.records: list[list] = []
            self.portal_runs: list[float] = []

        def claim_accounts(self, limit: int) -> list[int]:
            ids = super().claim_accounts(limit)
            claimed = time.time()
            if ids:
                with self.ctx.db.session() as s:
                    rows = s.execute(select(BankAccount.id, BankAccount.next_sync_at).where(BankAccount.id.in_(ids)))
                    due = {i: at.timestamp() for i, at in rows}
                with self._lock:
                    for i in ids:
                        self._due[i] = (due.get(i, claimed), claimed)
            return ids

        def sync_one(self, account_id: int) -> None:
            with self._lock:
                self._started[account_id] = time.time()
            super().sync_one(account_id)

        def release_account(self, account_id: int, ok: bool, interval: int, failures: int = 0,
                            retry_after: float | None = None) -> None:
            released = time.time()
            super().release_account(account_id, ok, interval, failures, retry_after)
            with self._lock:
                due, claimed = self._due.pop(account_id, (released, released))
                started = self._started.pop(account_id, released)
                self.records.append([account_id, due, claimed, started, released, ok])

        def portal_work(self, portal_id: int) -> None:
            started = time.time()
            super().portal_work(portal_id)
            with self._lock:
                self.portal_runs.append(time.time() - started)

    class PipelinedWorker(RecordingWorker):
        """PROPOSAL, not the app's code: the same claims and work, without a barrier per round.

        `Worker.run_once` claims at most `batch` accounts, waits for all of them, then for the due portals,
        and only then claims again, so one slow call holds up the round and at most `batch` syncs are ever
        in flight. Here a claim fills the free threads as soon as enough are free, portal work shares the
        pool, and the portal upkeep runs at most once a second.
        """

        def run(self, *, max_seconds: float | None = None) -> None:
            from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

            started = time.monotonic()
            upkeep_at = 0.0
            refill = max(1, self.concurrency // 4)
            inflight: set = set()
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="b24app-work") as pool:
                while not self.stopping.is_set():
                    if max_seconds is not None and time.monotonic() - started > max_seconds:
                        break
                    if time.monotonic() - upkeep_at >= 1.0:
                        self.schedule_portal_upkeep()
                        upkeep_at = time.monotonic()
                    free = self.concurrency - len(inflight)
                    if free >= refill:
                        for a in self.claim_accounts(free):
                            inflight.add(pool.submit(self.sync_one, a))
                        free = self.concurrency - len(inflight)
                        if free > 0:
                            for p in self.claim_portals(min(free, self.batch)):
                                inflight.add(pool.submit(self.portal_work, p))
                    if inflight:
                        done, pending = wait(inflight, timeout=self.idle_sleep, return_when=FIRST_COMPLETED)
                        inflight = set(pending)
                    else:
                        self.stopping.wait(self.idle_sleep)
                wait(inflight)

    return RecordingWorker, PipelinedWorker


class WarningCounter(logging.Handler):
    """Counts the app's warnings and errors by message and error type instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        key = f"{record.name}: {record.getMessage()} {getattr(record, 'error', '')}".strip()
        self.counts[key] = self.counts.get(key, 0) + 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--variant", choices=("app", "pipelined"), default="app",
                        help="app: b24app.worker.Worker as shipped; pipelined: the proposal above, with a "
                             "database pool as large as the thread pool")
    args = parser.parse_args(argv)

    from b24app.config import Settings, finalize
    from b24app.context import AppContext

    with open(args.settings, encoding="utf-8") as fh:
        raw = json.load(fh)
    for key in ("token_keys", "bitrix_oauth_servers"):
        if key in raw:
            raw[key] = tuple(raw[key])
    settings = finalize(Settings(**raw))
    warnings = WarningCounter()
    app_log = logging.getLogger("b24app")
    app_log.setLevel(logging.WARNING)
    app_log.handlers[:] = [warnings]
    app_log.propagate = False
    recording, pipelined = recording_worker_classes()
    if args.variant == "pipelined":
        from b24app.db import Database

        size = settings.worker_concurrency + 4
        ctx = AppContext(settings, db=Database(settings.database_url, **(
            {} if settings.database_url.startswith("sqlite") else {"pool_size": size, "max_overflow": 4})))
        worker = pipelined(ctx)
    else:
        ctx = AppContext(settings)
        worker = recording(ctx)
    worker.install_signal_handlers()
    started = time.time()
    try:
        worker.run(max_seconds=args.seconds)
    finally:
        finished = time.time()
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"owner": worker.owner, "variant": args.variant, "started": started, "finished": finished,
                       "concurrency": worker.concurrency, "records": worker.records,
                       "portal_runs": worker.portal_runs, "stats": worker.stats,
                       "warnings": dict(warnings.counts)}, fh)
        ctx.close()


if __name__ == "__main__":
    main()
