"""Run the benchmarks and print their tables: the quick set by default (`make bench`), `--full` for the big one.

    .venv/bin/python -m benchmarks.run [--full] [--only matching,rest_calls,latency,scale] [--json-dir DIR]

Each benchmark runs in its own Python process (no state, threads or log handlers carried from one to
the next), is bounded in time and uses only loopback. The quick set takes about four and a half
minutes on two cores (each benchmark under two), `--full` about half an hour (see BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from .reporting import REPO, machine

BENCHMARKS = ("matching", "rest_calls", "latency", "scale")
TIMEOUT_S = {"quick": 240, "full": 3600}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the big versions (10k/100k, 50 payments, 10,000 accounts)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--json-dir", help="also write each benchmark's raw results as DIR/<name>.json")
    args = parser.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(chosen) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    m = machine()
    print(f"# b24app benchmarks ({'full' if args.full else 'quick'})\n\n"
          f"{m['date']}; {m['nproc']} cores; Python {m['python']}; {m['platform']}\n", flush=True)
    failed = []
    for name in chosen:
        command = [sys.executable, "-m", f"benchmarks.bench_{name}"] + (["--full"] if args.full else [])
        if args.json_dir:
            Path(args.json_dir).mkdir(parents=True, exist_ok=True)
            command += ["--json", str(Path(args.json_dir).resolve() / f"{name}.json")]
        started = time.monotonic()
        try:
            code = subprocess.run(command, cwd=REPO, timeout=TIMEOUT_S["full" if args.full else "quick"]).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        if code != 0:
            print(f"\nbench_{name} FAILED ({code})", flush=True)
            failed.append(name)
        print(f"\n(bench_{name} took {time.monotonic() - started:.0f} s)\n", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
