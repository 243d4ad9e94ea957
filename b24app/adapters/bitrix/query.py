"""PHP-style query strings (`filter[>ID]=5`), the encoding Bitrix24 expects inside `batch` commands."""
from __future__ import annotations

from decimal import Decimal
from urllib.parse import quote


def _scalar(value) -> str:
    if value is True:
        return "Y"  # Bitrix24 booleans in query strings
    if value is False:
        return "N"
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _pairs(prefix: str, value):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _pairs(f"{prefix}[{k}]" if prefix else str(k), v)
    elif isinstance(value, (list, tuple)):
        if not value:
            yield prefix, ""
        for i, v in enumerate(value):
            yield from _pairs(f"{prefix}[{i}]", v)
    else:
        yield prefix, _scalar(value)


def build_query(params: dict) -> str:
    """Encode nested params like PHP's http_build_query."""
    return "&".join(f"{quote(k, safe='[]')}={quote(v, safe='')}" for k, v in _pairs("", params))
