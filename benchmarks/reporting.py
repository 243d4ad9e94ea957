"""Shared pieces of every benchmark: percentiles, the machine it ran on, and plain-text tables."""
from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence; NaN when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine() -> dict[str, Any]:
    """What the numbers depend on: cores, Python, OS, date (UTC)."""
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


@dataclass
class Table:
    """A titled table of already formatted cells."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) if self.rows else len(c)
                  for i, c in enumerate(self.columns)]
        line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
        out = [f"### {self.title}", "", line(self.columns),
               "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(r) for r in self.rows]
        return "\n".join(out)


@dataclass
class Report:
    """One benchmark's result: tables for people, `data` for machines, notes for the reading."""

    name: str
    tables: list[Table] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=machine)

    def render(self) -> str:
        m = self.machine
        head = f"## {self.name}\n\nmachine: {m['nproc']} cores, Python {m['python']}, {m['platform']}, {m['date']}"
        body = "\n\n".join(t.render() for t in self.tables)
        notes = "\n".join(f"- {n}" for n in self.notes)
        return "\n\n".join(part for part in (head, body, notes) if part)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=2, default=str)


def fmt(value: float, digits: int = 1) -> str:
    """A number with comma thousands separators, or '-' for NaN."""
    if value != value:  # NaN
        return "-"
    return f"{value:,.{digits}f}"


def emit(report: Report, json_path: str | None = None) -> None:
    print(report.render(), flush=True)
    if json_path:
        Path(json_path).write_text(report.to_json(), encoding="utf-8")
