"""PHP-style nested query strings (`filter[>ID]=5`, `cmd[a]=...`), because Bitrix24 speaks PHP's format.

`parse` mirrors PHP's `parse_str` (brackets build nested arrays, `[]` appends) and returns dicts whose
keys are 0..n-1 as lists, the way PHP arrays turn into JSON; `encode` mirrors `http_build_query`.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl, quote

__all__ = ["parse", "parse_pairs", "flatten", "encode", "split_key", "php_array"]


def split_key(key: str) -> list[str]:
    """Split `a[b][][c]` into `["a", "b", "", "c"]` like PHP (a stray `[` ends the nesting)."""
    start = key.find("[")
    if start <= 0 or "]" not in key[start:]:
        return [key]
    parts = [key[:start]]
    pos = start
    while pos < len(key) and key[pos] == "[":
        end = key.find("]", pos)
        if end < 0:
            break
        parts.append(key[pos + 1:end])
        pos = end + 1
    return parts


def _next_index(node: dict[str, Any]) -> str:
    ints = [int(k) for k in node if k.lstrip("-").isdigit()]
    return str(max(ints) + 1 if ints else 0)


def parse_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Build the nested structure PHP would give for these (key, value) pairs, in order."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = split_key(key)
        if not parts[0]:
            continue
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if part == "":
                part = _next_index(node)
            if last:
                node[part] = value
            else:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = {}
                    node[part] = child
                node = child
    return _listify(root)


def parse(query: str | bytes) -> dict[str, Any]:
    """Parse a URL-encoded query string or form body into nested dicts/lists."""
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    return parse_pairs(parse_qsl(query, keep_blank_values=True))


def _listify(value: Any) -> Any:
    if isinstance(value, dict):
        converted = {k: _listify(v) for k, v in value.items()}
        if converted and list(converted) == [str(i) for i in range(len(converted))]:
            return list(converted.values())
        return converted
    return value


def _scalar(value: Any) -> str:
    if value is True:
        return "1"
    if value is False:
        return "0"
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def flatten(data: Mapping[str, Any] | list[Any], prefix: str = "") -> list[tuple[str, str]]:
    """Turn nested data into (`a[b][0]`, value) pairs; `None` is skipped as PHP does."""
    items = data.items() if isinstance(data, Mapping) else enumerate(data)
    pairs: list[tuple[str, str]] = []
    for key, value in items:
        name = f"{prefix}[{key}]" if prefix else str(key)
        if value is None:
            continue
        if isinstance(value, (Mapping, list, tuple)):
            pairs.extend(flatten(list(value) if isinstance(value, tuple) else value, name))
        else:
            pairs.append((name, _scalar(value)))
    return pairs


def encode(data: Mapping[str, Any]) -> str:
    """`http_build_query`: nested data to a URL-encoded string (brackets kept readable)."""
    return "&".join(
        f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in flatten(data)
    )


def php_array(mapping: Mapping[str, Any]) -> Any:
    """JSON shape PHP gives an array: `[]` when empty, a list when keys are 0..n-1, else an object."""
    if not mapping:
        return []
    if list(mapping) == [str(i) for i in range(len(mapping))]:
        return list(mapping.values())
    return dict(mapping)
