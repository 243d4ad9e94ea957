"""Scale: N watched accounts across M portals, polled by the real worker(s) against slow sandboxes.

    .venv/bin/python -m benchmarks.bench_scale                 # quick: 200 accounts / 50 portals
    .venv/bin/python -m benchmarks.bench_scale --full          # 1,000 and 10,000 accounts / 1,000 portals
    options: --accounts 1000,10000 --portals 1000 --interval 60 --duration 150 --latency-ms 100
             --configs 1:postgres,4:postgres,1:postgres:app:64 --concurrency N --json PATH

The portal and bank sandboxes run in their own processes with `latency_ms` injected into every API
answer. Portals are created and the app installed through the portal sandbox's control API (which
issues real OAuth tokens); each portal's company gets its accounts and a static API token from the
bank sandbox's control API; portals, links and accounts are then inserted with the app's models and
its token cipher (driving the full install and SMS link flow 1,000 times would take far too long).

Accounts fall due uniformly over one interval from the start (the steady state: no thundering herd),
invoice caches are spread over the 15-minute re-read interval likewise. Then 1 or K processes of
`b24app.pipeline.worker.Worker` (unchanged, with the context `b24app worker` gives it; scale_worker.py records;
its `default-pool` variant gives it the general-purpose database pool instead of one sized to its
threads, `rounds` drives it with the pre-09f4975 loop) run for
`--duration` seconds; planner statistics are refreshed (ANALYZE) before each run. Reported:
demanded and sustained polls/s, lag from `next_sync_at` to the sync being done (and to being
claimed), accounts left overdue when the run ended (counted into the lag as lower bounds), worker RSS
(max over the run, per process), CPU use of each process, errors, and double syncs: two successful
syncs of one account less than 0.9 interval apart (the worker schedules the next sync 0.9-1.1 interval
after the previous one), or overlapping in time.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx

from .reporting import REPO, Report, Table, emit, fmt, percentile

CLIENT_ID, CLIENT_SECRET = "local.b24app.scale", "scale-secret-0123456789"
BANK_CLIENT_ID, BANK_CLIENT_SECRET = "b24app-scale", "scale-bank-secret"
GRACE = 4.0            # seconds for the worker processes to start before the first account falls due
REFRESH_INTERVAL = 900  # the production default of B24APP_INVOICE_REFRESH_INTERVAL


# -- processes ---------------------------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    cpu_start: float = 0.0
    rss_max_kb: int = 0
    samples: list[int] = field(default_factory=list)

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return self.cpu_start
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sample_rss(self) -> None:
        try:
            for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    kb = int(line.split()[1])
                    self.rss_max_kb = max(self.rss_max_kb, kb)
                    self.samples.append(kb)
        except OSError:
            pass


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts) - idle, sum(parts)


def start_sandbox(kind: str) -> tuple[Proc, str]:
    popen = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.sandbox_process", kind, "--client-id",
         CLIENT_ID if kind == "portal" else BANK_CLIENT_ID, "--client-secret",
         CLIENT_SECRET if kind == "portal" else BANK_CLIENT_SECRET],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = popen.stdout.readline()
    if not line:
        raise RuntimeError(f"{kind} sandbox did not start")
    return Proc(f"{kind} sandbox", popen), json.loads(line)["url"]


def stop_proc(proc: Proc) -> None:
    if proc.popen.poll() is None:
        try:
            proc.popen.stdin.close()
        except (OSError, AttributeError):
            pass
        try:
            proc.popen.wait(10)
        except subprocess.TimeoutExpired:
            proc.popen.terminate()
            try:
                proc.popen.wait(10)
            except subprocess.TimeoutExpired:
                proc.popen.kill()


# -- databases ---------------------------------------------------------------------------------------------
class Databases:
    """SQLite files in a temporary directory, and a throwaway PostgreSQL cluster started on first use."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        # The cluster runs as the `postgres` user, which cannot enter our private temporary directory.
        self.pg_dir = Path(tempfile.gettempdir()) / f"b24app-scale-pg-{os.getpid()}"
        self.pg_url: str | None = None

    def fresh(self, kind: str, name: str) -> str:
        from b24app.storage.migrate import upgrade

        if kind == "sqlite":
            path = self.workdir / f"{name}.sqlite3"
            path.unlink(missing_ok=True)
            url = f"sqlite:///{path}"
        else:
            url = self._postgres()
            from sqlalchemy import create_engine, text
            engine = create_engine(url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
            engine.dispose()
        upgrade(url)
        return url

    def _postgres(self) -> str:
        if self.pg_url is None:
            out = subprocess.run([sys.executable, "scripts/pg_throwaway.py", "start", "--dir", str(self.pg_dir)],
                                 cwd=REPO, capture_output=True, text=True, timeout=180)
            if out.returncode != 0:
                raise RuntimeError(f"PostgreSQL did not start: {out.stderr.strip()[-500:]}")
            self.pg_url = out.stdout.strip().splitlines()[-1]
        return self.pg_url

    def close(self) -> None:
        if self.pg_url is not None:
            subprocess.run([sys.executable, "scripts/pg_throwaway.py", "stop", "--dir", str(self.pg_dir)],
                           cwd=REPO, capture_output=True, timeout=120)
            self.pg_url = None


def postgres_available() -> bool:
    return any(Path("/usr/lib/postgresql").glob("*/bin/initdb"))


# -- seeding -----------------------------------------------------------------------------------------------
def settings_for(database_url: str, portal_url: str, bank_url: str, data_dir: Path, token_key: str,
                 interval: int, concurrency: int | None) -> dict:
    fields = {
        "mode": "demo", "data_dir": str(data_dir), "secret_key": "scale-benchmark-secret-key-0123456789abcdef",
        "token_keys": [token_key], "database_url": database_url, "public_url": "http://127.0.0.1:9",
        "bitrix_client_id": CLIENT_ID, "bitrix_client_secret": CLIENT_SECRET,
        "bitrix_oauth_servers": [portal_url], "tbank_client_id": BANK_CLIENT_ID,
        "tbank_client_secret": BANK_CLIENT_SECRET, "tbank_id_url": bank_url,
        "tbank_api_url": f"{bank_url}/openapi", "sync_interval": interval,
        "invoice_refresh_interval": REFRESH_INTERVAL,
    }
    if concurrency:
        fields["worker_concurrency"] = concurrency
    return fields


def _context(fields: dict):
    from b24app.config import Settings, finalize
    from b24app.context import AppContext

    raw = {**fields, "token_keys": tuple(fields["token_keys"]),
           "bitrix_oauth_servers": tuple(fields["bitrix_oauth_servers"])}
    return AppContext(finalize(Settings(**raw)))


def _bindings_signature(ctx) -> str:
    """What the worker compares `Portal.bindings_version` with (seeded portals count as bound at install)."""
    return getattr(ctx, "bindings_signature", None) or ctx.manifest.version


def seed(fields: dict, portal_url: str, bank_url: str, accounts: int, portals: int, rng: random.Random) -> dict:
    """Portals and companies in the sandboxes (control API), then rows in the app's database."""
    from b24app.storage.models import BankAccount, BankLink, Portal
    from b24app.portals.store import token_hash

    started = time.monotonic()
    per_portal = [accounts // portals + (1 if n < accounts % portals else 0) for n in range(portals)]
    host = portal_url.split("://", 1)[1]

    def one(n: int) -> dict:
        code = f"s{n:05d}"
        with httpx.Client(timeout=60) as http:
            created = http.post(f"{portal_url}/sandbox/portals", json={"code": code}).raise_for_status().json()
            inst = http.post(f"{portal_url}/p/{code}/sandbox/install",
                             json={"client_id": CLIENT_ID, "user_id": 1}).raise_for_status().json()
            inn, kpp = f"77{n:08d}", "770101001"
            company = http.post(f"{bank_url}/sandbox/companies", json={
                "inn": inn, "kpp": kpp, "name": f"ООО «Масштаб {n}»",
                "accounts": [{"currency": "RUB"} for _ in range(per_portal[n])]}).raise_for_status().json()
            token = http.post(f"{bank_url}/sandbox/static-tokens",
                              json={"inn": inn, "kpp": kpp}).raise_for_status().json()["token"]
        return {"code": code, "member_id": created["member_id"], "access": inst["access_token"],
                "refresh": inst["refresh_token"], "app_token": inst["application_token"], "inn": inn, "kpp": kpp,
                "accounts": [a["accountNumber"] for a in company["accounts"]], "bank_token": token}

    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(one, range(portals)))
    sandbox_s = time.monotonic() - started

    ctx = _context(fields)
    now = datetime.now(timezone.utc)
    enc = ctx.cipher.encrypt
    try:
        with ctx.db.session() as s:
            rows = []
            for m in made:
                p = Portal(member_id=m["member_id"], domain=f"{host}/p/{m['code']}",
                           client_endpoint=f"{portal_url}/p/{m['code']}/rest/", server_endpoint=f"{portal_url}/rest/",
                           status="installed", lang="ru", scope="crm,placement,im,task,user_brief,sale", installed_by=1,
                           application_token_hash=token_hash(m["app_token"]),
                           access_token_enc=enc(m["member_id"], m["access"]),
                           refresh_token_enc=enc(m["member_id"], m["refresh"]),
                           access_expires_at=now + timedelta(hours=1), token_generation=1, settings={},
                           invoices_refreshed_at=now, bindings_version=_bindings_signature(ctx))
                s.add(p)
                rows.append((p, m))
            s.flush()
            for p, m in rows:
                link = BankLink(portal_id=p.id, kind="static", status="active", inn=m["inn"], kpp=m["kpp"],
                                company_name=f"ООО «Масштаб {m['code']}»", scopes=[],
                                access_token_enc=enc(f"bank:{p.id}:{m['inn']}:{m['kpp']}", m["bank_token"]),
                                access_expires_at=now + timedelta(days=90), token_generation=1)
                s.add(link)
                s.flush()
                for number in m["accounts"]:
                    s.add(BankAccount(link_id=link.id, portal_id=p.id, account_number=number, currency="RUB",
                                      name="Расчетный счет RUB", account_type="Current", watched=True,
                                      synced_until=now - timedelta(minutes=5),
                                      next_sync_at=now + timedelta(days=1)))
    finally:
        ctx.close()
    return {"sandbox_s": sandbox_s, "total_s": time.monotonic() - started}


def reset_schedule(fields: dict, t0: float, interval: int, rng: random.Random) -> None:
    """Every account due once within [t0, t0 + interval); invoice caches spread over the re-read interval."""
    from sqlalchemy import select, text, update

    from b24app.storage.models import BankAccount, Portal, RateBucket

    ctx = _context(fields)
    start = datetime.fromtimestamp(t0, timezone.utc)
    now = datetime.now(timezone.utc)
    try:
        with ctx.db.session() as s:
            ids = list(s.scalars(select(BankAccount.id)))
            s.execute(update(BankAccount), [
                {"id": i, "next_sync_at": start + timedelta(seconds=rng.uniform(0, interval)),
                 "lease_owner": None, "lease_until": None, "failures": 0, "last_error": None,
                 "synced_until": now - timedelta(minutes=5)} for i in ids])
            pids = list(s.scalars(select(Portal.id)))
            s.execute(update(Portal), [
                {"id": i, "invoices_refreshed_at": now - timedelta(seconds=rng.uniform(0, REFRESH_INTERVAL)),
                 "work_due_at": None, "lease_owner": None, "lease_until": None} for i in pids])
            s.execute(RateBucket.__table__.delete())
        # Fresh planner statistics, as autovacuum would have them in a running deployment: without them
        # PostgreSQL plans the claim query as a nested loop over every due account (150 ms instead of 1 ms).
        with ctx.db.engine.connect() as conn:
            conn.execute(text("ANALYZE"))
            conn.commit()
    finally:
        ctx.close()


# -- one run -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Config:
    """One measured configuration: worker processes, database, worker variant, threads per worker."""

    workers: int
    db: str
    variant: str = "app"
    concurrency: int | None = None

    @classmethod
    def parse(cls, text: str) -> "Config":
        parts = text.split(":")
        return cls(int(parts[0]), parts[1], parts[2] if len(parts) > 2 else "app",
                   int(parts[3]) if len(parts) > 3 else None)


def postgres_cpu_seconds(pg_dir: Path) -> float:
    """CPU seconds used so far by the throwaway cluster's postmaster and its live children."""
    try:
        postmaster = int((pg_dir / "data" / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid_part, rest = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        fields = rest.split()
        pid = int(stat.parent.name)
        if pid == postmaster or int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return total / os.sysconf("SC_CLK_TCK")


def postgres_sessions(url: str) -> int:
    """Connections (sessions) the database has accepted so far (PostgreSQL 14+ counts them)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text(
                "SELECT sessions FROM pg_stat_database WHERE datname = current_database()")).scalar() or 0)
    finally:
        engine.dispose()


def run_workers(fields: dict, workdir: Path, config: Config, duration: float, sandboxes: list[Proc],
                interval: int, rng: random.Random, pg_dir: Path | None) -> dict:
    settings_path = workdir / "settings.json"
    settings_path.write_text(json.dumps(fields))
    t0 = time.time() + GRACE
    reset_schedule(fields, t0, interval, rng)
    outs = [workdir / f"worker-{n}.json" for n in range(config.workers)]
    for o in outs:
        o.unlink(missing_ok=True)
    for sb in sandboxes:
        sb.cpu_start = sb.cpu_seconds()
    pg0 = postgres_cpu_seconds(pg_dir) if pg_dir else 0.0
    sessions0 = postgres_sessions(fields["database_url"]) if pg_dir else 0
    busy0 = machine_busy()
    wall0 = time.time()
    procs = [Proc(f"worker {n}", subprocess.Popen(
        [sys.executable, "-m", "benchmarks.scale_worker", "--settings", str(settings_path),
         "--seconds", str(duration + (t0 - time.time())), "--out", str(out), "--variant", config.variant], cwd=REPO))
             for n, out in enumerate(outs)]
    deadline = time.time() + duration + GRACE + 120
    cpu_last = {id(p): 0.0 for p in procs}
    pg_last = pg0
    while any(p.popen.poll() is None for p in procs):
        for p in procs:
            p.sample_rss()
            cpu_last[id(p)] = max(cpu_last[id(p)], p.cpu_seconds())
        if pg_dir:
            pg_last = max(pg_last, postgres_cpu_seconds(pg_dir))
        if time.time() > deadline:
            for p in procs:
                if p.popen.poll() is None:
                    p.popen.terminate()
        time.sleep(0.5)
    wall = time.time() - wall0
    busy1 = machine_busy()
    sessions = postgres_sessions(fields["database_url"]) - sessions0 if pg_dir else 0
    sandbox_cpu = {sb.name: (sb.cpu_seconds() - sb.cpu_start) / wall for sb in sandboxes}
    results = [json.loads(o.read_text()) for o in outs if o.exists()]
    if len(results) != config.workers:
        raise RuntimeError(f"only {len(results)} of {config.workers} workers wrote their records")
    stop = min(r["finished"] for r in results)
    return {
        "t0": t0, "stop": stop, "results": results, "overdue": overdue_at(fields, stop), "wall": wall,
        "rss_max_mb": [p.rss_max_kb / 1024 for p in procs],
        "worker_cpu": [cpu_last[id(p)] / wall for p in procs],
        "sandbox_cpu": sandbox_cpu, "postgres_cpu": (pg_last - pg0) / wall, "postgres_sessions": sessions,
        "machine_busy": (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * (os.cpu_count() or 1),
    }


def overdue_at(fields: dict, stop: float) -> list[float]:
    """next_sync_at of accounts that were due before `stop` and not synced since (as unix times)."""
    from sqlalchemy import select

    from b24app.storage.models import BankAccount

    ctx = _context(fields)
    try:
        with ctx.db.session() as s:
            limit = datetime.fromtimestamp(stop, timezone.utc)
            return [at.timestamp() for at in s.scalars(
                select(BankAccount.next_sync_at).where(BankAccount.watched.is_(True), BankAccount.next_sync_at < limit))]
    finally:
        ctx.close()


def analyse(run: dict, accounts: int, interval: int) -> dict:
    t0, stop = run["t0"], run["stop"]
    records = []
    for n, r in enumerate(run["results"]):
        records += [(acc, due, claimed, started, released, ok, n)
                    for acc, due, claimed, started, released, ok in r["records"]]
    ok = [r for r in records if r[5]]
    synced = [(r[1], max(0.0, r[4] - r[1])) for r in ok if r[1] >= t0 - 1]
    claim_lag = [max(0.0, r[2] - r[1]) for r in ok if r[1] >= t0 - 1]
    censored = [(due, max(0.0, stop - due)) for due in run["overdue"]]
    lags = [lag for _, lag in synced + censored]
    late_from = stop - (stop - t0) / 3
    late = [lag for due, lag in synced + censored if due >= late_from]
    window = stop - t0
    done_in_window = [r for r in ok if t0 <= r[4] <= stop]
    by_account: dict[int, list] = defaultdict(list)
    for r in ok:
        by_account[r[0]].append(r)
    too_soon = overlapping = 0
    for syncs in by_account.values():
        syncs.sort(key=lambda r: r[3])
        for a, b in zip(syncs, syncs[1:]):
            if b[3] < a[4]:
                overlapping += 1
            elif b[3] < a[4] + 0.9 * interval - 1.0:
                too_soon += 1
    shares = Counter(r[6] for r in ok)
    warnings: Counter[str] = Counter()
    for r in run["results"]:
        warnings.update(r.get("warnings") or {})
    portal_runs = [x for r in run["results"] for x in r["portal_runs"]]
    claims = [x for r in run["results"] for x in (r.get("timings") or {}).get("claim_accounts", [])]
    upkeeps = [x for r in run["results"] for x in (r.get("timings") or {}).get("upkeep", [])]
    own = sum(run["worker_cpu"]) + sum(run["sandbox_cpu"].values()) + run["postgres_cpu"]
    return {
        "accounts": accounts, "interval": interval, "window_s": window,
        "demand_per_s": accounts / interval, "sustained_per_s": len(done_in_window) / window if window > 0 else 0.0,
        "syncs_ok": len(ok), "errors": len(records) - len(ok),
        "lag_p50": percentile(lags, 50), "lag_p99": percentile(lags, 99), "lag_max": max(lags, default=float("nan")),
        "lag_p99_last_third": percentile(late, 99),
        "claim_p50": percentile(claim_lag, 50), "claim_p99": percentile(claim_lag, 99),
        "overdue_at_end": len(censored), "overdue_oldest_s": max((lag for _, lag in censored), default=0.0),
        "double_too_soon": too_soon, "double_overlapping": overlapping,
        "accounts_synced": len(by_account),
        "share_per_worker": [shares.get(n, 0) for n in range(len(run["results"]))],
        "sync_s_p50": percentile([r[4] - r[3] for r in ok], 50),
        "portal_runs": len(portal_runs), "portal_run_s_p50": percentile(portal_runs, 50),
        "claims": len(claims), "claim_s_p50": percentile(claims, 50), "claim_s_p99": percentile(claims, 99),
        "upkeeps": len(upkeeps), "upkeep_s_p50": percentile(upkeeps, 50),
        "rss_max_mb": run["rss_max_mb"], "worker_cpu": run["worker_cpu"], "sandbox_cpu": run["sandbox_cpu"],
        "postgres_cpu": run["postgres_cpu"], "machine_busy": run["machine_busy"],
        "postgres_sessions": run.get("postgres_sessions", 0),
        "other_cpu": max(0.0, run["machine_busy"] - own),
        "concurrency": run["results"][0]["concurrency"] if run["results"] else None,
        "variant": run["results"][0].get("variant", "app") if run["results"] else "app",
        "warnings": dict(warnings),
    }


def keeps_up(row: dict) -> bool:
    """The issue's goal: every account synced within its interval with p99 lag under 10 s, steadily."""
    return row["lag_p99"] < 10 and row["lag_p99_last_third"] < 10 and row["errors"] == 0


# -- the benchmark -----------------------------------------------------------------------------------------
QUICK_CONFIGS = (Config(1, "sqlite"), Config(4, "postgres"))
FULL_CONFIGS = (Config(1, "postgres"), Config(4, "postgres"), Config(1, "postgres", "default-pool"))


def run(full: bool = False, accounts: tuple[int, ...] | None = None, portals: int | None = None,
        interval: int | None = None, duration: float | None = None, latency_ms: float = 100.0,
        configs: tuple[Config, ...] | None = None, concurrency: int | None = None) -> Report:
    from cryptography.fernet import Fernet

    accounts = accounts or ((1000, 10000) if full else (200,))
    portals = portals or (1000 if full else 50)
    interval = interval or (60 if full else 20)
    duration = duration or (150.0 if full else 30.0)
    configs = configs or (FULL_CONFIGS if full else QUICK_CONFIGS)
    if concurrency:
        configs = tuple(Config(c.workers, c.db, c.variant, c.concurrency or concurrency) for c in configs)
    if not postgres_available():
        configs = tuple(c for c in configs if c.db != "postgres") or (Config(1, "sqlite"),)
    rng = random.Random(6)
    rows: list[dict] = []
    seeding: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="b24app-scale-") as tmp:
        workdir = Path(tmp)
        dbs = Databases(workdir)
        sandboxes: list[Proc] = []
        try:
            for n_accounts in accounts:
                for sb in sandboxes:
                    stop_proc(sb)
                portal_proc, portal_url = start_sandbox("portal")
                bank_proc, bank_url = start_sandbox("bank")
                sandboxes = [portal_proc, bank_proc]
                token_key = Fernet.generate_key().decode()
                by_db: dict[str, dict] = {}
                for config in configs:
                    if config.db not in by_db:
                        url = dbs.fresh(config.db, f"scale-{n_accounts}")
                        fields = settings_for(url, portal_url, bank_url, workdir / "data", token_key, interval, None)
                        if not by_db:
                            created = seed(fields, portal_url, bank_url, n_accounts, portals, rng)
                        else:  # the sandboxes already hold these portals: copy the rows
                            created = reseed_rows(fields, by_db) | {"copied_from": next(iter(by_db))}
                        seeding.append({"accounts": n_accounts, "db": config.db, **created})
                        by_db[config.db] = fields
                    fields = dict(by_db[config.db])
                    if config.concurrency:
                        fields["worker_concurrency"] = config.concurrency
                    for url in (portal_url, bank_url):
                        httpx.post(f"{url}/sandbox/config", json={"latency_ms": latency_ms}, timeout=30).raise_for_status()
                    result = run_workers(fields, workdir, config, duration, sandboxes, interval, rng,
                                         dbs.pg_dir if config.db == "postgres" else None)
                    for url in (portal_url, bank_url):
                        httpx.post(f"{url}/sandbox/config", json={"latency_ms": 0}, timeout=30).raise_for_status()
                    row = analyse(result, n_accounts, interval)
                    row.update(portals=portals, workers=config.workers, db=config.db, latency_ms=latency_ms,
                               duration=duration)
                    rows.append(row)
                    print(f"  scale: {n_accounts} accounts, {config.workers} × {row['concurrency']} ({row['variant']}) "
                          f"on {config.db}: {fmt(row['sustained_per_s'], 1)} polls/s of {fmt(row['demand_per_s'], 1)}, "
                          f"lag p99 {fmt(row['lag_p99'], 1)} s", file=sys.stderr, flush=True)
        finally:
            for sb in sandboxes:
                stop_proc(sb)
            dbs.close()
    return _report(rows, seeding, latency_ms)


def reseed_rows(fields: dict, by_db: dict) -> dict:
    """Copy the portals, links and accounts of an already seeded database into a fresh one."""
    from sqlalchemy import select, text

    from b24app.storage.models import BankAccount, BankLink, Portal

    started = time.monotonic()
    source = _context(next(iter(by_db.values())))
    target = _context(fields)
    try:
        with source.db.session() as s:
            tables = [[{c.key: getattr(row, c.key) for c in model.__table__.columns} for row in s.scalars(select(model))]
                      for model in (Portal, BankLink, BankAccount)]
        with target.db.session() as s:
            for model, rows in zip((Portal, BankLink, BankAccount), tables):
                s.execute(model.__table__.insert(), rows)
        if target.db.engine.dialect.name == "postgresql":
            with target.db.session() as s:
                for model in (Portal, BankLink, BankAccount):
                    table = model.__tablename__
                    s.execute(text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))
    finally:
        source.close()
        target.close()
    return {"sandbox_s": 0.0, "total_s": time.monotonic() - started}


def _report(rows: list[dict], seeding: list[dict], latency_ms: float) -> Report:
    table = Table(f"Statement polling at scale, sandboxes answering after {latency_ms:g} ms",
                  ["accounts / portals", "workers × threads, DB", "interval", "demanded polls/s", "sustained polls/s",
                   "lag due→synced p50 / p99 (max)", "p99 last third", "due→claimed p50 / p99",
                   "overdue at end (oldest)", "RSS max per worker", "errors", "double syncs"])
    for r in rows:
        variant = "" if r["variant"] == "app" else f" [{r['variant']}]"
        table.add(f"{r['accounts']:,} / {r['portals']:,}", f"{r['workers']} × {r['concurrency']}, {r['db']}{variant}",
                  f"{r['interval']} s", fmt(r["demand_per_s"], 1), fmt(r["sustained_per_s"], 1),
                  f"{fmt(r['lag_p50'], 2)} / {fmt(r['lag_p99'], 2)} ({fmt(r['lag_max'], 1)}) s",
                  f"{fmt(r['lag_p99_last_third'], 2)} s",
                  f"{fmt(r['claim_p50'], 2)} / {fmt(r['claim_p99'], 2)} s",
                  f"{r['overdue_at_end']} ({fmt(r['overdue_oldest_s'], 0)} s)",
                  " / ".join(f"{fmt(m, 0)} MB" for m in r["rss_max_mb"]),
                  r["errors"], f"{r['double_too_soon'] + r['double_overlapping']}")
    cpu = Table("Where the CPU went (cores, averaged over the run; the machine has "
                f"{os.cpu_count()}; 'others' is load from other processes on the machine)",
                ["accounts", "workers, DB", "workers", "bank sandbox", "portal sandbox", "PostgreSQL", "others",
                 "machine busy", "syncs done", "accounts synced", "syncs per worker", "one sync p50",
                 "portal runs (p50)", "account claims (p50 / p99)", "upkeeps (p50)", "DB connections opened"])
    for r in rows:
        variant = "" if r["variant"] == "app" else f" [{r['variant']}]"
        cpu.add(f"{r['accounts']:,}", f"{r['workers']} × {r['concurrency']}, {r['db']}{variant}",
                " + ".join(fmt(c, 2) for c in r["worker_cpu"]), fmt(r["sandbox_cpu"].get("bank sandbox", 0), 2),
                fmt(r["sandbox_cpu"].get("portal sandbox", 0), 2), fmt(r["postgres_cpu"], 2), fmt(r["other_cpu"], 2),
                fmt(r["machine_busy"], 2), r["syncs_ok"], f"{r['accounts_synced']:,}",
                " / ".join(str(x) for x in r["share_per_worker"]), f"{fmt(r['sync_s_p50'] * 1000, 0)} ms",
                f"{r['portal_runs']} ({fmt(r['portal_run_s_p50'] * 1000, 0)} ms)",
                f"{r['claims']} ({fmt(r['claim_s_p50'] * 1000, 1)} / {fmt(r['claim_s_p99'] * 1000, 1)} ms)",
                f"{r['upkeeps']} ({fmt(r['upkeep_s_p50'] * 1000, 1)} ms)",
                str(r["postgres_sessions"]) if r["db"] == "postgres" else "-")
    seed_table = Table("Seeding (not measured)", ["accounts", "DB", "how", "took"])
    for s in seeding:
        if s.get("copied_from"):
            seed_table.add(f"{s['accounts']:,}", s["db"], f"rows copied from the {s['copied_from']} database",
                           f"{fmt(s['total_s'], 1)} s")
        else:
            seed_table.add(f"{s['accounts']:,}", s["db"], "sandbox control API (portals, installs, companies, "
                           "tokens), then rows through the app's models", f"{fmt(s['total_s'], 1)} s "
                           f"(sandboxes {fmt(s['sandbox_s'], 1)} s)")
    report = Report("bench_scale", [table, cpu, seed_table], {"rows": rows, "seeding": seeding})
    for r in rows:
        if r["warnings"]:
            report.notes.append(f"warnings logged by the worker(s) in {r['accounts']:,} / {r['workers']} × "
                                f"{r['concurrency']} {r['db']} [{r['variant']}]: "
                                + "; ".join(f"{k} ×{v}" for k, v in sorted(r["warnings"].items(), key=lambda kv: -kv[1])))
    for r in rows:
        variant = "" if r["variant"] == "app" else f" [{r['variant']}]"
        report.notes.append(
            f"{r['accounts']:,} accounts, {r['workers']} × {r['concurrency']} on {r['db']}{variant}: "
            f"{'keeps up' if keeps_up(r) else 'does NOT keep up'} (p99 lag {fmt(r['lag_p99'], 1)} s, "
            f"last third {fmt(r['lag_p99_last_third'], 1)} s, goal < 10 s; max RSS {fmt(max(r['rss_max_mb']), 0)} MB, "
            f"goal < 300 MB; double syncs {r['double_too_soon']} too soon + {r['double_overlapping']} overlapping)")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1,000 and 10,000 accounts across 1,000 portals")
    parser.add_argument("--accounts", help="comma-separated account counts")
    parser.add_argument("--portals", type=int)
    parser.add_argument("--interval", type=int, help="sync interval in seconds")
    parser.add_argument("--duration", type=float, help="seconds each configuration runs")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--configs", help="workers:db[:variant[:threads]], comma-separated, variant app or "
                                          "default-pool or rounds, e.g. 1:postgres,4:postgres,1:sqlite,1:postgres:app:64")
    parser.add_argument("--concurrency", type=int, help="threads per worker where a config does not say")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args(argv)
    configs = tuple(Config.parse(c) for c in args.configs.split(",")) if args.configs else None
    report = run(args.full, tuple(int(a) for a in args.accounts.split(",")) if args.accounts else None,
                 args.portals, args.interval, args.duration, args.latency_ms, configs, args.concurrency)
    emit(report, args.json)


if __name__ == "__main__":
    main()
