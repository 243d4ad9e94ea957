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


def recording_worker_class():
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

    return RecordingWorker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    from b24app.config import Settings, finalize
    from b24app.context import AppContext

    with open(args.settings, encoding="utf-8") as fh:
        raw = json.load(fh)
    for key in ("token_keys", "bitrix_oauth_servers"):
        if key in raw:
            raw[key] = tuple(raw[key])
    settings = finalize(Settings(**raw))
    logging.getLogger("b24app").setLevel(logging.ERROR)
    logging.basicConfig(level=logging.ERROR)
    ctx = AppContext(settings)
    worker = recording_worker_class()(ctx)
    worker.install_signal_handlers()
    started = time.time()
    try:
        worker.run(max_seconds=args.seconds)
    finally:
        finished = time.time()
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump({"owner": worker.owner, "started": started, "finished": finished,
                       "concurrency": worker.concurrency, "records": worker.records,
                       "portal_runs": worker.portal_runs, "stats": worker.stats}, fh)
        ctx.close()


if __name__ == "__main__":
    main()
