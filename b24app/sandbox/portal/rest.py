"""REST plumbing of the Bitrix24 sandbox: errors, call context, method registry, `time` block, batch."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import InvalidOperation
from typing import Any, Callable
from urllib.parse import unquote

from . import phpquery
from .state import IssuedToken, Portal, SandboxState

PAGE_SIZE = 50
BATCH_MAX = 50


class PortalSandboxError(Exception):
    """Root of the errors the Bitrix24 sandbox answers with."""


class RestError(PortalSandboxError):
    """A Bitrix24 REST error: `{"error": code, "error_description": description}` with an HTTP status."""

    def __init__(self, code: str | int, description: str, status: int = 400, **extra: Any) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.status = status
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "error_description": self.description, **self.extra}


def not_found_method() -> RestError:
    return RestError("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)


def argument_error(name: str, description: str | None = None) -> RestError:
    return RestError("ERROR_ARGUMENT", description or f"Argument '{name}' is null or empty", 400,
                     argument=name)


@dataclass
class ListResult:
    """A list method's answer: the page plus Bitrix24's `total`/`next`."""

    result: Any
    total: int | None = None
    next: int | None = None


@dataclass
class CallContext:
    """Who is calling which portal: the acting user, the app (None for the inbound webhook), scopes."""

    state: SandboxState
    portal: Portal
    host: str
    user_id: int
    client_id: str | None
    scopes: set[str] | None
    token: IssuedToken | None = None
    pending_events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    operating: tuple[float, int] | None = None  # (operating, operating_reset_at) of the last method run

    @property
    def operating_owner(self) -> str:
        """Whose budget a call spends: the app, or the inbound webhook (limits.md: "для приложения или вебхука")."""
        return self.client_id or f"webhook:{self.user_id}"

    @property
    def is_webhook(self) -> bool:
        return self.client_id is None

    @property
    def now(self) -> float:
        return self.state.clock()

    def user_is_admin(self) -> bool:
        user = self.portal.users.get(self.user_id)
        return bool(user and user.admin)

    def emit(self, event: str, data: dict[str, Any]) -> None:
        """Queue an event; it is delivered after the state lock is released."""
        self.pending_events.append((event, data))


Handler = Callable[[CallContext, dict[str, Any]], Any]


@dataclass
class MethodSpec:
    name: str
    fn: Handler
    scopes: tuple[str, ...] = ()
    app_only: bool = False
    admin_only: bool = False


METHODS: dict[str, MethodSpec] = {}


def method(name: str, *, scope: str | tuple[str, ...] = (), app_only: bool = False,
           admin_only: bool = False) -> Callable[[Handler], Handler]:
    """Register a REST method; `scope` lists the scopes of which any one grants access."""
    scopes = (scope,) if isinstance(scope, str) else tuple(scope)

    def register(fn: Handler) -> Handler:
        METHODS[name] = MethodSpec(name, fn, scopes, app_only, admin_only)
        return fn

    return register


def arg(params: dict[str, Any], name: str, default: Any = None) -> Any:
    """Case-insensitive parameter lookup (Bitrix24 accepts `id`, `ID`, `Id`...)."""
    if name in params:
        return params[name]
    lowered = name.lower()
    for key, value in params.items():
        if key.lower() == lowered:
            return value
    return default


def as_int(value: Any, name: str) -> int:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise argument_error(name, f"Argument '{name}' must be a positive integer") from None
    return number


def time_block(start: float, finish: float, operating: tuple[float, int] | None = None) -> dict[str, Any]:
    """The `time` object every successful Bitrix24 answer carries (limits.md: with `operating` — the method's
    accumulated operating time for this app or webhook — and `operating_reset_at`, when its oldest bucket
    leaves the sum). The outer `batch` is not counted (limits.md): it reports 0."""
    def when(ts: float) -> str:
        return datetime.fromtimestamp(int(ts), tz=timezone.utc).isoformat()

    duration = max(0.0, finish - start)
    used, reset_at = operating if operating is not None else (0.0, int(start) + 600)
    return {"start": start, "finish": finish, "duration": duration, "processing": duration,
            "date_start": when(start), "date_finish": when(finish),
            "operating_reset_at": reset_at, "operating": used}


def _live_buckets(ctx: CallContext, method_name: str) -> dict[int, list[float]]:
    """The method's buckets still inside the window (expired ones dropped)."""
    key = (ctx.operating_owner, method_name)
    buckets = ctx.portal.operating.setdefault(key, {})
    window = ctx.state.operating_window
    for index in [i for i, (first, _) in buckets.items() if first + window <= ctx.now]:
        del buckets[index]
    return buckets


def operating_of(ctx: CallContext, method_name: str) -> tuple[float, int]:
    """(operating, operating_reset_at) of a method for the caller, as the answer's `time` block shows them."""
    buckets = _live_buckets(ctx, method_name)
    if not buckets:
        return 0.0, int(ctx.now + ctx.state.operating_window)
    oldest = min(first for first, _ in buckets.values())
    return sum(seconds for _, seconds in buckets.values()), int(oldest + ctx.state.operating_window + 0.999)


def spend_operating(ctx: CallContext, method_name: str, seconds: float, *, oldest: bool = False) -> None:
    """Add execution time to the bucket of the current tenth of the window (or to the oldest live one)."""
    buckets = _live_buckets(ctx, method_name)
    if oldest and buckets:
        index = min(buckets, key=lambda i: buckets[i][0])
    else:
        index = int(ctx.now // (ctx.state.operating_window / 10))
    bucket = buckets.setdefault(index, [ctx.now, 0.0])
    bucket[1] += seconds


def normalize_method(name: str) -> str:
    name = name.strip().strip("/")
    if name.endswith(".json"):
        name = name[:-5]
    return name.lower()


def invoke(ctx: CallContext, name: str, params: dict[str, Any]) -> Any:
    """Run one method (no batch) with scope and permission checks; returns result or ListResult."""
    spec = METHODS.get(normalize_method(name))
    if spec is None:
        raise not_found_method()
    if spec.scopes and ctx.scopes is not None and not (set(spec.scopes) & ctx.scopes):
        raise RestError("insufficient_scope",
                        "The request requires higher privileges than provided by the access token", 403)
    if spec.app_only and ctx.is_webhook:
        raise RestError("WRONG_AUTH_TYPE", "Current authorization type is denied for this method", 403)
    if spec.admin_only and not ctx.user_is_admin():
        raise RestError("ACCESS_DENIED", "Access denied!", 403)
    counted = spec.name != "batch"  # limits.md: "Внешний вызов batch не учитывается в operating"
    if counted:
        ctx.portal.method_calls[spec.name] += 1
        # limits.md: the sum is checked before each call; once it is over the limit the method is blocked
        # for this app or webhook (429 OPERATION_TIME_LIMIT, text from _includes/system-errors.md) until
        # enough buckets have left the window. Other methods and other apps keep working.
        if operating_of(ctx, spec.name)[0] > ctx.state.operating_limit:
            ctx.portal.method_blocked[spec.name] += 1
            raise RestError("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit", 429)
    started = ctx.now
    try:
        return spec.fn(ctx, params)
    except (InvalidOperation, ValueError) as exc:  # unparsable numbers and amounts in the arguments
        raise RestError("ERROR_ARGUMENT", f"Invalid argument value: {exc}", 400) from exc
    finally:
        if counted:
            spend_operating(ctx, spec.name, max(0.0, ctx.now - started))
            ctx.operating = operating_of(ctx, spec.name)


def envelope(result: Any, start: float, finish: float, operating: tuple[float, int] | None = None) -> dict[str, Any]:
    if isinstance(result, ListResult):
        body: dict[str, Any] = {"result": result.result}
        if result.next is not None:
            body["next"] = result.next
        if result.total is not None:
            body["total"] = result.total
    else:
        body = {"result": result}
    body["time"] = time_block(start, finish, operating)
    return body


_REF = re.compile(r"\$result\[([^\]]*)\]((?:\[[^\]]*\])*)")


def _lookup(results: dict[str, Any], key: str, path: str) -> tuple[bool, Any]:
    if key not in results:
        return False, None
    node = results[key]
    for part in re.findall(r"\[([^\]]*)\]", path):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _substitute(value: Any, results: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute(v, results) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, results) for v in value]
    if not isinstance(value, str) or "$result[" not in value:
        return value
    whole = _REF.fullmatch(value)
    if whole:
        found, ref = _lookup(results, whole.group(1), whole.group(2))
        return ref if found else value

    def repl(m: re.Match[str]) -> str:
        found, ref = _lookup(results, m.group(1), m.group(2))
        return str(ref) if found and not isinstance(ref, (dict, list)) else m.group(0)

    return _REF.sub(repl, value)


def run_batch(ctx: CallContext, params: dict[str, Any]) -> dict[str, Any]:
    """Bitrix24 `batch`: up to 50 sub-calls in order, `$result[...]` references, per-command errors."""
    cmd = arg(params, "cmd")
    halt = str(arg(params, "halt", "0")).lower() in ("1", "true", "y")
    if isinstance(cmd, list):
        commands = [(str(i), c) for i, c in enumerate(cmd)]
    elif isinstance(cmd, dict):
        commands = [(str(k), c) for k, c in cmd.items()]
    else:
        raise argument_error("cmd", "Argument 'cmd' must be an array")
    results: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    totals: dict[str, Any] = {}
    nexts: dict[str, Any] = {}
    times: dict[str, Any] = {}
    for index, (key, command) in enumerate(commands):
        if index >= BATCH_MAX:
            errors[key] = {"error": "ERROR_BATCH_LENGTH_EXCEEDED", "error_description": "Max batch length exceeded"}
            continue
        start = ctx.now
        try:
            name, sub_params = parse_command(command)
            if normalize_method(name) == "batch":
                raise RestError("ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage", 405)
            sub_params = _substitute(sub_params, results)
            sub_params.pop("auth", None)
            ctx.operating = None
            outcome = invoke(ctx, name, sub_params)
        except RestError as exc:
            errors[key] = {"error": exc.code, "error_description": exc.description}
            if halt:
                break
            continue
        if isinstance(outcome, ListResult):
            results[key] = outcome.result
            if outcome.total is not None:
                totals[key] = outcome.total
            if outcome.next is not None:
                nexts[key] = outcome.next
        else:
            results[key] = outcome
        times[key] = time_block(start, ctx.now, ctx.operating)
    return {"result": phpquery.php_array(results), "result_error": phpquery.php_array(errors),
            "result_total": phpquery.php_array(totals), "result_next": phpquery.php_array(nexts),
            "result_time": phpquery.php_array(times)}


def parse_command(command: Any) -> tuple[str, dict[str, Any]]:
    """`"crm.deal.list?filter[>ID]=5"` → ("crm.deal.list", {"filter": {">ID": "5"}}).

    settings/how-to-call-rest-api/batch.md: each `cmd` value is a string `метод?параметр=значение`; the
    object form `{method, params}` exists only in the SDKs, which turn it into that string before sending.
    What the portal answers to a non-string value the page does not say; the sandbox fails that command
    with ERROR_ARGUMENT (per command, like every other sub-call error), so an app sending objects is caught."""
    if not isinstance(command, str):
        raise argument_error("cmd", "Batch command must be a string 'method?params', not "
                             + type(command).__name__)
    text = command
    name, _, query = text.partition("?")
    return unquote(name), phpquery.parse(query)
