#!/usr/bin/env python3
"""Start and stop a throwaway PostgreSQL cluster so tests can run against a real server.

Usage:
    python scripts/pg_throwaway.py start [--dir DIR] [--port N] [--bindir PATH]
        Creates DIR (default: a fresh /tmp/b24app-pg.XXXXXXXX), runs initdb there, starts the
        server on 127.0.0.1 (a free port unless --port), creates database b24app_test and prints
        exactly one line on stdout: postgresql+psycopg://postgres@127.0.0.1:PORT/b24app_test
        (when DIR was chosen by the script, it is reported on stderr).
    python scripts/pg_throwaway.py url --dir DIR
        Prints the URL of a running throwaway cluster again.
    python scripts/pg_throwaway.py stop --dir DIR
        Stops the server (-m fast) and removes DIR.

Binaries come from Debian's postgresql package: /usr/lib/postgresql/<newest>/bin (or --bindir,
or the B24APP_PG_BINDIR environment variable). When run as root, initdb/pg_ctl run as the
``postgres`` user through ``runuser`` (initdb refuses root) and DIR is chowned to it.
Standard library only.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "b24app_test"
MARKER = ".b24app-pg-throwaway"
PG_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "postgres"
START_TIMEOUT_S = 60
CMD_TIMEOUT_S = 120


class PgThrowawayError(Exception):
    """Raised for every failure the operator should read as one clear message."""


@dataclass(frozen=True)
class Cluster:
    """A running throwaway cluster: where it lives and how to reach it."""

    dir: Path
    port: int
    bindir: Path

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{DB_NAME}"


def _version_key(bindir: Path) -> tuple[int, ...]:
    """Sort key for /usr/lib/postgresql/<version>/bin: 9.6 < 15 < 16."""
    return tuple(int(p) for p in re.findall(r"\d+", bindir.parent.name)) or (0,)


def find_bindir(explicit: str | None = None) -> Path:
    """Return the bin dir of the newest installed PostgreSQL server, or explain how to get one."""
    explicit = explicit or os.environ.get("B24APP_PG_BINDIR") or None
    if explicit:
        bindir = Path(explicit)
        if not (bindir / "initdb").is_file() or not (bindir / "pg_ctl").is_file():
            raise PgThrowawayError(f"no initdb/pg_ctl in {bindir}")
        return bindir
    candidates = [p.parent for p in PG_ROOT.glob("*/bin/initdb") if (p.parent / "pg_ctl").is_file()]
    if not candidates:
        raise PgThrowawayError(
            f"PostgreSQL server binaries not found (looked for {PG_ROOT}/*/bin/initdb and pg_ctl). "
            "Install them with: bash scripts/ensure_system_deps.sh postgresql "
            "(or pass --bindir / set B24APP_PG_BINDIR)"
        )
    return max(candidates, key=_version_key)


def free_port() -> int:
    """Ask the kernel for a currently free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_root() -> bool:
    return os.geteuid() == 0


def _run_pg(args: list[str], *, cwd: Path, timeout: float = CMD_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL server binary, as the postgres user when we are root."""
    if _as_root():
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        args = [runuser, "-u", SUPERUSER, "--", *args]
    try:
        return subprocess.run(
            args, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise PgThrowawayError(f"timed out after {timeout:.0f}s: {shlex.join(args)}") from exc


def _check(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout or "").strip()
        raise PgThrowawayError(f"{what} failed (exit {proc.returncode}): {detail}")


def _chown_to_postgres(path: Path) -> None:
    try:
        shutil.chown(path, user=SUPERUSER, group=SUPERUSER)
    except LookupError as exc:
        raise PgThrowawayError(
            f"running as root but there is no '{SUPERUSER}' user; install Debian's postgresql package "
            "(bash scripts/ensure_system_deps.sh postgresql) or run as an ordinary user"
        ) from exc


def _log_tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def _prepare_dir(dir_arg: str | None) -> tuple[Path, bool]:
    """Create (or accept an empty) cluster directory; return it and whether we created it."""
    if dir_arg is None:
        return Path(tempfile.mkdtemp(prefix="b24app-pg.", dir="/tmp")), True
    path = Path(dir_arg).absolute()
    if path.exists():
        if not path.is_dir():
            raise PgThrowawayError(f"{path} exists and is not a directory")
        if any(path.iterdir()):
            raise PgThrowawayError(f"{path} is not empty; give a new or empty directory")
        return path, False
    path.mkdir(mode=0o700, parents=True)
    return path, True


def _pg_ctl_start(bindir: Path, base: Path, port: int) -> subprocess.CompletedProcess[str]:
    options = [
        "-p", str(port),
        "-k", str(base),
        "-c", "listen_addresses=127.0.0.1",
        "-c", "fsync=off",
        "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off",
        "-c", "max_connections=200",
    ]
    return _run_pg(
        [
            str(bindir / "pg_ctl"), "-D", str(base / "data"), "-l", str(base / "server.log"),
            "-w", "-t", str(START_TIMEOUT_S), "-o", shlex.join(options), "start",
        ],
        cwd=base,
        timeout=START_TIMEOUT_S + 30,
    )


def start(dir_arg: str | None, port: int | None = None, bindir_arg: str | None = None) -> Cluster:
    """Create, start and seed a throwaway cluster; on failure leave nothing behind."""
    bindir = find_bindir(bindir_arg)
    base, created = _prepare_dir(dir_arg)
    (base / MARKER).write_text("created by scripts/pg_throwaway.py\n")
    try:
        if _as_root():
            _chown_to_postgres(base)
            probe = _run_pg(["test", "-w", str(base)], cwd=Path("/"))
            if probe.returncode != 0:
                raise PgThrowawayError(
                    f"the '{SUPERUSER}' user cannot write to {base} (a parent directory is not "
                    "traversable); use a directory under /tmp"
                )
        _check(
            _run_pg(
                [str(bindir / "initdb"), "-D", str(base / "data"), "-U", SUPERUSER,
                 "-A", "trust", "-E", "UTF8", "--no-sync"],
                cwd=base,
            ),
            "initdb",
        )
        attempts = 1 if port is not None else 3
        for attempt in range(attempts):
            chosen = port if port is not None else free_port()
            proc = _pg_ctl_start(bindir, base, chosen)
            if proc.returncode == 0:
                break
            in_use = "could not bind" in _log_tail(base / "server.log", 50)
            if not (in_use and port is None and attempt + 1 < attempts):
                raise PgThrowawayError(
                    f"pg_ctl start on port {chosen} failed: {(proc.stderr or proc.stdout).strip()}\n"
                    f"server log:\n{_log_tail(base / 'server.log')}"
                )
        cluster = Cluster(dir=base, port=chosen, bindir=bindir)
        (base / "port").write_text(f"{chosen}\n")
        _check(
            _run_pg(
                [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(chosen), "-U", SUPERUSER, DB_NAME],
                cwd=base,
            ),
            "createdb",
        )
        return cluster
    except BaseException:
        _teardown(base, bindir, remove=created or (base / MARKER).exists())
        raise


def _teardown(base: Path, bindir: Path, *, remove: bool) -> None:
    data = base / "data"
    if (data / "postmaster.pid").exists():
        try:
            _run_pg([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop"], cwd=base)
        except PgThrowawayError as exc:
            print(f"pg_throwaway: warning: {exc}", file=sys.stderr)
    if remove:
        shutil.rmtree(base, ignore_errors=True)


def _require_ours(dir_arg: str) -> Path:
    base = Path(dir_arg).absolute()
    if not base.is_dir():
        raise PgThrowawayError(f"{base} does not exist")
    if not (base / MARKER).exists():
        raise PgThrowawayError(f"{base} was not created by pg_throwaway.py (no {MARKER}); refusing to touch it")
    return base


def url(dir_arg: str) -> str:
    """Return the URL of the throwaway cluster in DIR."""
    base = _require_ours(dir_arg)
    try:
        port = int((base / "port").read_text().strip())
    except (OSError, ValueError) as exc:
        raise PgThrowawayError(f"no running cluster recorded in {base}") from exc
    return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{port}/{DB_NAME}"


def stop(dir_arg: str, bindir_arg: str | None = None) -> None:
    """Stop the cluster in DIR (fast shutdown) and delete DIR."""
    base = _require_ours(dir_arg)
    data = base / "data"
    if (data / "postmaster.pid").exists():
        bindir = find_bindir(bindir_arg)
        proc = _run_pg(
            [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "60", "stop"], cwd=base
        )
        if proc.returncode != 0 and (data / "postmaster.pid").exists():
            raise PgThrowawayError(f"pg_ctl stop failed: {(proc.stderr or proc.stdout).strip()}")
    shutil.rmtree(base)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pg_throwaway.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_start = sub.add_parser("start", help="create and start a cluster, print its URL")
    p_start.add_argument("--dir", help="cluster directory (new or empty; default: mktemp -d /tmp/b24app-pg.*)")
    p_start.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (default: a free one)")
    p_start.add_argument("--bindir", help="PostgreSQL bin directory (default: newest /usr/lib/postgresql/*/bin)")
    p_url = sub.add_parser("url", help="print the URL of a running cluster")
    p_url.add_argument("--dir", required=True)
    p_stop = sub.add_parser("stop", help="stop a cluster and remove its directory")
    p_stop.add_argument("--dir", required=True)
    p_stop.add_argument("--bindir")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            cluster = start(args.dir, args.port, args.bindir)
            if args.dir is None:
                print(f"pg_throwaway: cluster dir {cluster.dir}", file=sys.stderr)
            print(cluster.url, flush=True)
        elif args.command == "url":
            print(url(args.dir), flush=True)
        else:
            stop(args.dir, args.bindir)
    except PgThrowawayError as exc:
        print(f"pg_throwaway: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
