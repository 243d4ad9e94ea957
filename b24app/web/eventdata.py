"""Parse PHP-style nested form keys (`auth[member_id]`, `data[FIELDS][ID]`) safely: bounded depth and size."""
from __future__ import annotations

import re
from typing import Iterable

MAX_DEPTH = 6
MAX_KEYS = 500
_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")


def parse_nested_form(items: Iterable[tuple[str, str]]) -> dict:
    """Turn flat pairs into nested dicts; raise ValueError on deep nesting, too many keys or odd keys."""
    out: dict = {}
    for count, (key, value) in enumerate(items, 1):
        if count > MAX_KEYS:
            raise ValueError("too many fields")
        m = _KEY.match(key)
        if not m:
            raise ValueError("malformed field name")
        parts = [m.group(1)] + re.findall(r"\[([^\[\]]*)\]", m.group(2))
        if len(parts) > MAX_DEPTH:
            raise ValueError("fields nested too deeply")
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[parts[-1]] = value
    return out
