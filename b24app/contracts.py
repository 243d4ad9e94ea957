"""The documented request/response examples of every Bitrix24 method, T-Bank endpoint and event the app
uses (`tests/contracts/*.json`), and the one comparison that checks an answer against them.

Used by the contract tests (documented example vs the sandboxes) and by `b24app probe` (documented example
vs a real portal or bank). See docs/contracts.md for where each example comes from.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

from .resources import ResourceMissing, resource_path


class ContractError(Exception):
    """A fixture is missing or malformed."""


@dataclass(frozen=True)
class Contract:
    """One fixture: what the docs say a call looks like, and which of its fields the app relies on."""

    name: str            # "crm.item.list", "tbank GET /api/v1/statement", "event ONCRMDEALUPDATE"
    system: str          # bitrix24 | bitrix24-oauth | tbank | tid
    kind: str            # method | event | endpoint
    source: str
    request: Any
    response: Any
    shape: Any           # what answers are compared with (the response, or the part of it that applies)
    relies_on: tuple[str, ...]
    unconfirmed: str | None = None
    sandbox_request: Any = None
    expected_differences: tuple[dict, ...] = ()
    open_paths: tuple[str, ...] = ()   # objects whose set of keys depends on the entity: extra keys allowed
    optional_paths: tuple[str, ...] = ()  # keys the docs say may be absent (nextCursor on the last page)
    path: Path | None = field(default=None, compare=False)

    def differences(self, actual: Any, *, ignore: Iterable[str] = ("time",)) -> list["Difference"]:
        """How `actual` (a whole answer) differs from this contract's documented shape."""
        return shape_differences(self.shape, actual, ignore=ignore, open_paths=self.open_paths,
                                 optional_paths=self.optional_paths)


def contracts_dir() -> Path:
    """B24APP_CONTRACTS_DIR, else tests/contracts of a checkout or the copy inside an installed wheel."""
    if os.environ.get("B24APP_CONTRACTS_DIR"):
        return Path(os.environ["B24APP_CONTRACTS_DIR"])
    try:
        return resource_path("contracts")
    except ResourceMissing as exc:
        raise ContractError(f"{exc} (or set B24APP_CONTRACTS_DIR)") from None


def load_contracts(directory: Path | None = None) -> dict[str, Contract]:
    """Every fixture of `directory` by contract name."""
    directory = directory or contracts_dir()
    if not directory.is_dir():
        raise ContractError(f"contract fixtures not found in {directory} (set B24APP_CONTRACTS_DIR)")
    out: dict[str, Contract] = {}
    for path in sorted(directory.glob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            contract = Contract(
                name=raw["contract"], system=raw["system"], kind=raw["kind"], source=raw["source"],
                request=raw.get("request"), response=raw.get("response"),
                shape=raw["shape"] if "shape" in raw else raw.get("response"),
                relies_on=tuple(raw.get("relies_on") or ()), unconfirmed=raw.get("unconfirmed"),
                sandbox_request=raw.get("sandbox_request"),
                expected_differences=tuple(raw.get("sandbox_expected_differences") or ()),
                open_paths=tuple(raw.get("open_paths") or ()),
                optional_paths=tuple(raw.get("optional_paths") or ()), path=path)
        except (ValueError, KeyError, TypeError) as exc:
            raise ContractError(f"{path.name}: {exc}") from exc
        if contract.name in out:
            raise ContractError(f"{path.name}: contract {contract.name!r} defined twice")
        out[contract.name] = contract
    return out


# -- the comparison -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Difference:
    path: str
    kind: str    # missing | extra | type
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind} ({self.detail})" if self.detail else f"{self.path}: {self.kind}"


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p + ".") or path.startswith(p + "[") for p in prefixes)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def shape_differences(documented: Any, actual: Any, path: str = "", *, ignore: Iterable[str] = (),
                      open_paths: Iterable[str] = (), optional_paths: Iterable[str] = ()) -> list[Difference]:
    """How `actual` differs in shape from the documented example: the same keys, the same JSON types.

    Objects are compared key by key (a key the docs have and the answer lacks is `missing`, one the answer
    has and the docs do not is `extra`), lists by their first element, and `null` on either side matches any
    type (the docs print nullable fields as null). An empty list matches an object: PHP serialises an empty
    array as `[]` whatever it would hold. Paths are dotted, `[]` for a list's elements (`result.items[].id`).
    At an `open_paths` object extra keys are allowed (its keys depend on the entity type or user fields);
    an `optional_paths` key may be absent.
    """
    ignore, open_paths, optional_paths = tuple(ignore), tuple(open_paths), tuple(optional_paths)
    if _under(path, ignore):
        return []
    if documented is None or actual is None:
        return []
    dt, at = json_type(documented), json_type(actual)
    if {dt, at} == {"array", "object"} and (documented == [] or actual == []):
        return []
    if dt != at:
        return [Difference(path or "$", "type", f"documented {dt}, got {at}")]
    if dt == "object":
        out: list[Difference] = []
        for key in documented:
            if key not in actual:
                if _join(path, key) not in optional_paths:
                    out.append(Difference(_join(path, key), "missing", ""))
            else:
                out.extend(shape_differences(documented[key], actual[key], _join(path, key), ignore=ignore,
                                             open_paths=open_paths, optional_paths=optional_paths))
        if path not in open_paths:
            out.extend(Difference(_join(path, key), "extra", "") for key in actual
                       if key not in documented and not _under(_join(path, key), ignore))
        return out
    if dt == "array" and documented and actual:
        return shape_differences(documented[0], actual[0], f"{path}[]", ignore=ignore, open_paths=open_paths,
                                 optional_paths=optional_paths)
    return []


def missing_relied(contract: Contract, body: Any) -> list[str]:
    """The paths the app relies on that the answer does not carry. A `?` suffix marks an optional path; a list
    step (`items[]`) requires the rest of the path in every element (an empty list has nothing to check)."""
    return [path for path in contract.relies_on if not path.endswith("?") and not _carries(body, path.split("."))]


def _carries(node: Any, parts: list[str]) -> bool:
    if not parts:
        return True
    part, rest = parts[0], parts[1:]
    many = part.endswith("[]")
    key = part[:-2] if many else part
    if key:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    if not many:
        return _carries(node, rest)
    elements = node if isinstance(node, list) else list(node.values()) if isinstance(node, dict) else None
    return elements is not None and all(_carries(e, rest) for e in elements)
