"""The app's real `Worker` in its own process, recording when each account fell due and when it was synced.

    python -m benchmarks.scale_worker --settings FILE --seconds S --out FILE [--variant app|default-pool|rounds]

`--settings` is a JSON object of `b24app.config.Settings` fields. The recording adds no query: the due
time of a claimed account is what the claim statement returns (`Worker.claim_due_accounts`), success
from `sync.sync_account` returning. The worker is `b24app.pipeline.worker.Worker` unchanged, with the context
`b24app worker` gives it (`AppContext.for_worker`: a database pool sized to its threads);
`default-pool` gives it the general-purpose pool instead (10 + 20 overflow connections, ping on
checkout: what the worker had before 2026-12-02); `rounds` drives it with the loop it had before commit
09f4975 (`run_once` in a loop, each round a barrier), for comparison. At the end the records are
written to `--out` as JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import threading
import time


def recording_worker_class():
    from b24app.pipeline import sync
    from b24app.pipeline.worker import Worker

    outcome = threading.local()
    real_sync_account = sync.sync_account

    def sync_account(*args, **kwargs):
        """`sync.sync_account` as is, noting in this thread that it returned normally."""
        result = real_sync_account(*args, **kwargs)
        outcome.ok = True
        return result

    sync.sync_account = sync_account  # the worker calls it through the module: see Worker.sync_one

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

        def claim_due_accounts(self, limit: int):
            asked = time.time()
            rows = super().claim_due_accounts(limit)
            claimed = time.time()
            with self._lock:
                self.timings["claim_accounts"].append(claimed - asked)
                for account_id, due in rows:
                    self._due[account_id] = (due.timestamp() if due else claimed, claimed)
            return rows

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
        if record.exc_info and record.exc_info[1] is not None:
            exc, tb = record.exc_info[1], record.exc_info[2]
            where = ""
            while tb is not None:  # the innermost frame of our own code says where it broke
                if "/b24app/" in tb.tb_frame.f_code.co_filename:
                    where = f" at {tb.tb_frame.f_code.co_filename.rsplit('/b24app/', 1)[1]}:{tb.tb_lineno}"
                tb = tb.tb_next
            key += f" [{type(exc).__name__}: {str(exc)[:120]}{where}]"
        self.counts[key] = self.counts.get(key, 0) + 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--variant", choices=("app", "default-pool", "rounds"), default="app",
                        help="app: as `b24app worker` runs it; default-pool: the general-purpose database pool; "
                             "rounds: the loop of `run_once` rounds the worker had before commit 09f4975")
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
    ctx = AppContext(settings) if args.variant == "default-pool" else AppContext.for_worker(settings)
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
