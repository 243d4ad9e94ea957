"""The admin page's 30-day chart as inline SVG geometry: no JavaScript chart library needed."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ..queries.admin_page import ChartDay
from ..queries.review import ZERO


@dataclass(frozen=True)
class ChartGeometry:
    """Bars for an inline SVG: no JavaScript chart library needed."""

    width: int
    height: int
    max_value: Decimal
    bars: tuple[tuple[ChartDay, float, float, float, float, float], ...]  # day, x, w, h_received, h_matched, base


def chart_geometry(days: list[ChartDay], width: int = 600, height: int = 140) -> ChartGeometry:
    top = max([d.received for d in days] + [d.matched for d in days] + [ZERO])
    scale = float(top) if top > 0 else 1.0
    n = max(1, len(days))
    slot = width / n
    w = max(1.0, slot * 0.38)
    base = float(height)
    bars = tuple((d, round(i * slot + slot * 0.1, 2), round(w, 2),
                  round(float(d.received) / scale * (height - 4), 2),
                  round(float(d.matched) / scale * (height - 4), 2), base)
                 for i, d in enumerate(days))
    return ChartGeometry(width, height, top, bars)
