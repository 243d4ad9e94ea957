"""manifest.json: the single source of truth for what the app registers in a portal."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .resources import resource_path

MANIFEST_PATH = resource_path("manifest.json")


@dataclass(frozen=True)
class PlacementSpec:
    placement: str
    path: str
    title: dict


@dataclass(frozen=True)
class EventSpec:
    event: str
    path: str


@dataclass(frozen=True)
class Manifest:
    code: str
    version: str
    name: dict
    description: dict
    scopes: tuple[str, ...]
    install_path: str
    handler_path: str
    placements: tuple[PlacementSpec, ...]
    events: tuple[EventSpec, ...]
    automation_triggers: tuple[dict, ...] = ()

    @classmethod
    def load(cls, path: Path | str = MANIFEST_PATH) -> "Manifest":
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(
            code=raw["code"], version=raw["version"], name=raw["name"], description=raw["description"],
            scopes=tuple(raw["scopes"]), install_path=raw["install_path"], handler_path=raw["handler_path"],
            placements=tuple(PlacementSpec(p["placement"], p["path"], p["title"]) for p in raw["placements"]),
            events=tuple(EventSpec(e["event"], e["path"]) for e in raw["events"]),
            automation_triggers=tuple(raw.get("automation_triggers", ())),
        )
