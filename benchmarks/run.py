"""Run the benchmarks and print their tables: the quick set by default (`make bench`), `--full` for the big one.

    .venv/bin/python -m benchmarks.run [--full] [--only matching,rest_calls,latency,scale] [--json-dir DIR]

Each benchmark is bounded in time and uses only loopback; the quick set takes about five minutes on
two cores (each benchmark under two), `--full` about half an hour (see BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .reporting import emit, machine

BENCHMARKS = ("matching", "rest_calls", "latency", "scale")


def _run_one(name: str, full: bool):
    if name == "matching":
        from .bench_matching import run
    elif name == "rest_calls":
        from .bench_rest_calls import run
    elif name == "latency":
        from .bench_latency import run
    else:
        from .bench_scale import run
    return run(full)


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
        started = time.monotonic()
        try:
            report = _run_one(name, args.full)
        except Exception as exc:  # noqa: BLE001  (one broken benchmark must not hide the others)
            print(f"## bench_{name}\n\nFAILED: {type(exc).__name__}: {exc}\n", flush=True)
            failed.append(name)
            continue
        json_path = None
        if args.json_dir:
            Path(args.json_dir).mkdir(parents=True, exist_ok=True)
            json_path = str(Path(args.json_dir) / f"{name}.json")
        emit(report, json_path)
        print(f"\n(bench_{name} took {time.monotonic() - started:.0f} s)\n", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
