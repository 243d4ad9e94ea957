"""The app's real `Worker` in its own process, recording when each account fell due and when it was synced.

    python -m benchmarks.scale_worker --settings FILE --seconds S --out FILE [--variant app|sized-pool|rounds]

`--settings` is a JSON object of `b24app.config.Settings` fields. The recording adds no query: the due
time of a claimed account is taken from the row the claim query loads (an ORM load event), success
from `sync.sync_account` returning. The worker is `b24app.worker.Worker` unchanged; `sized-pool` only
gives it a database pool as large as its thread pool (`b24app.db.make_engine` defaults to 10 + 20
overflow connections); `rounds` drives it with the loop it had before commit 09f4975 (`run_once` in
a loop, each round a barrier), for comparison. At the end the records are written to `--out` as JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import threading
import time


def recording_worker_class():
    from sqlalchemy import event

    from b24app import sync
    from b24app.models import BankAccount
    from b24app.worker import Worker

    outcome = threading.local()
    real_sync_account = sync.sync_account

    def sync_account(*args, **kwargs):
        """`sync.sync_account` as is, noting in this thread that it returned normally."""
        result = real_sync_account(*args, **kwargs)
        outcome.ok = True
        return result

    sync.sync_account = sync_account  # the worker calls it through the module: see Worker.sync_one

    loaded_due: dict[int, float] = {}

    @event.listens_for(BankAccount, "load")
    def _remember_due(target, _context) -> None:
        """The claim query loads the rows it leases: note their `next_sync_at` without another query."""
        if target.next_sync_at is not None:
            loaded_due[target.id] = target.next_sync_at.timestamp()

    class RecordingWorker(Worker):
        """Worker that remembers (account, due, claimed, started, finished, ok) for every sync, and how long
        each account claim and each portal upkeep took."""

        def __init__(self, ctx, **kw):
            super().__init__(ctx, **kw)
            self._lock = threading.Lock()
            self._due: dict[int, tuple[float, float]] = {}
            self.records: list[list] = []
            self.portal_runs: list[float] = []
            self.timings: dict[str, list[float]] = {"claim_accounts": [], "upkeep": []}

        def claim_accounts(self, limit: int) -> list[int]:
            asked = time.time()
            ids = super().claim_accounts(limit)
            claimed = time.time()
            with self._lock:
                self.timings["claim_accounts"].append(claimed - asked)
                for i in ids:
                    self._due[i] = (loaded_due.get(i, claimed), claimed)
            return ids

        def run_in_rounds(self, *, max_seconds: float | None = None) -> None:
            """The worker's loop before commit 09f4975: `run_once` rounds, each a barrier (for comparison)."""
            from concurrent.futures import ThreadPoolExecutor

            started = time.monotonic()
            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="b24app-work") as pool:
                while not self.stopping.is_set():
                    done = self.run_once(pool)
                    if max_seconds is not None and time.monotonic() - started > max_seconds:
                        break
                    if not done:
                        self.stopping.wait(self.idle_sleep)

        def schedule_portal_upkeep(self) -> None:
            started = time.time()
            super().schedule_portal_upkeep()
            with self._lock:
                self.timings["upkeep"].append(time.time() - started)

        def sync_one(self, account_id: int) -> None:
            started = time.time()
            outcome.ok = False
            super().sync_one(account_id)
            finished = time.time()
            with self._lock:
                due, claimed = self._due.pop(account_id, (started, started))
                self.records.append([account_id, due, claimed, started, finished, bool(outcome.ok)])

        def portal_work(self, portal_id: int) -> None:
            started = time.time()
            super().portal_work(portal_id)
            with self._lock:
                self.portal_runs.append(time.time() - started)

    return RecordingWorker


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
    parser.add_argument("--variant", choices=("app", "sized-pool", "rounds"), default="app",
                        help="app: as shipped; sized-pool: a database pool as large as the thread pool; "
                             "rounds: the loop of `run_once` rounds the worker had before commit 09f4975")
    args = parser.parse_args(argv)

    from b24app.config import Settings, finalize
    from b24app.context import AppContext
    from b24app.db import Database

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
    db = None
    if args.variant == "sized-pool" and not settings.database_url.startswith("sqlite"):
        db = Database(settings.database_url, pool_size=settings.worker_concurrency + 4, max_overflow=4)
    ctx = AppContext(settings, db=db)
    worker = recording_worker_class()(ctx)
    worker.install_signal_handlers()
    started = time.time()
    try:
        if args.variant == "rounds":
            worker.run_in_rounds(max_seconds=args.seconds)
        else:
            worker.run(max_seconds=args.seconds)
    finally:
        finished = time.time()
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"owner": worker.owner, "variant": args.variant, "started": started, "finished": finished,
                       "concurrency": worker.concurrency, "records": worker.records,
                       "portal_runs": worker.portal_runs, "timings": worker.timings, "stats": worker.stats,
                       "warnings": dict(warnings.counts)}, fh)
        ctx.close()


if __name__ == "__main__":
    main()
