"""What input from outside may look like: ids, JSON bodies, timestamps, URL path segments.

Every id that arrives from anny, Graph or an admin is checked here against the format its
sender documents or emits, before it reaches a queue, a Table key or a URL. A refusal is an
`InputError` that names the field and the problem and never carries the offending value, so
it is safe to log and to answer with.
"""

from __future__ import annotations

import email.utils
import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import azure.functions as func

from sync.errors import InputError

# anny's schemas say "string"; anny emits numeric ids (UUIDs fit the same pattern).
ANNY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
# The webhook envelope's `event_id` (a UUID from anny).
ANNY_EVENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
# Graph subscription ids are GUIDs.
GRAPH_SUBSCRIPTION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
# Exchange item ids are base64 (standard or URL-safe alphabet), a few hundred characters.
GRAPH_ITEM_ID = re.compile(r"[A-Za-z0-9+/=_-]{1,1024}")
LIFECYCLE_EVENT = re.compile(r"[A-Za-z]{1,64}")
MAILBOX = re.compile(r"[A-Za-z0-9!#$%&'*+=^_`{|}~.-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")
MAX_CLIENT_STATE = 255  # Graph allows 128 characters; anything longer cannot be ours
MAX_TEXT = 1024  # admin free text such as a time zone name; also the Table key limit
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ISO_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}.{0,40}")
_HTTP_DATE = re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT")


MAX_JSON_DEPTH = 64  # anny's and Graph's bodies nest a handful of levels
_TOO_DEEP = "JSON nested too deeply; send a flat JSON document"


class LengthRequired(InputError):
    """A body sent in chunks: the Functions host hands an out-of-process worker (Python's) no body
    then (azure-functions-host#7930), so what was sent cannot be read; the sender must say its length."""

    status = 411


def request_body(req: func.HttpRequest) -> bytes:
    """The body of a request to any endpoint; one that was sent in chunks arrives empty, which is a
    LengthRequired (411) rather than a misleading "not JSON" or a command without its parameters."""
    body = req.get_body() or b""
    if not body and "chunked" in (req.headers.get("transfer-encoding") or "").lower():
        raise LengthRequired("body", "sent with Transfer-Encoding: chunked, which Azure Functions does not hand "
                                     "to a Python function; send it with a Content-Length header")
    return body


def json_body(raw: bytes) -> Any:
    """Parse a request body; deeply nested or malformed JSON is an InputError, never a crash."""
    try:
        document = json.loads(raw)
    except RecursionError:  # Python 3.11/3.12 give up deep in the parser ...
        raise InputError("body", _TOO_DEEP) from None
    except (ValueError, UnicodeDecodeError):
        raise InputError("body", "malformed JSON; send one JSON document encoded as UTF-8") from None
    if _deeper_than(document, MAX_JSON_DEPTH):  # ... 3.13's parser goes deeper, so the limit is ours
        raise InputError("body", _TOO_DEEP)
    return document


def _deeper_than(document: Any, limit: int) -> bool:
    """Whether containers nest more than `limit` levels (iterative: no recursion on hostile input)."""
    stack = [(document, 1)] if isinstance(document, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def json_object(raw: bytes) -> dict[str, Any]:
    document = json_body(raw)
    if not isinstance(document, dict):
        raise InputError("body", "expected a JSON object")
    return document


def text(value: Any, field: str, max_chars: int = MAX_TEXT) -> str:
    """A string of at most `max_chars` characters, valid UTF-8 (no lone surrogates), no control characters."""
    if not isinstance(value, str):
        raise InputError(field, "expected a string")
    if len(value) > max_chars:
        raise InputError(field, f"too long; at most {max_chars} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(field, "not valid Unicode (a lone surrogate escape such as \\ud800)") from None
    if _CONTROL.search(value):
        raise InputError(field, "contains control characters")
    return value


def _matching(value: Any, pattern: re.Pattern[str], field: str, expected: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InputError(field, f"expected {expected}")
    return value


def anny_id(value: Any, field: str) -> str:
    """An anny booking or resource id: a string or a whole number (never a boolean)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return _matching(value, ANNY_ID, field, "an anny id: letters, digits, '-' or '_', at most 64 characters")


def anny_event_id(value: Any, field: str) -> str:
    return _matching(value, ANNY_EVENT_ID, field,
                     "an anny event id: letters, digits, '-', '_', '.', ':', at most 128 characters")


def graph_subscription_id(value: Any, field: str) -> str:
    return _matching(value, GRAPH_SUBSCRIPTION_ID, field, "a Graph subscription id (a GUID)")


def graph_item_id(value: Any, field: str) -> str:
    return _matching(value, GRAPH_ITEM_ID, field, "a Graph item id (base64 characters, at most 1024)")


def lifecycle_event(value: Any, field: str) -> str:
    return _matching(value, LIFECYCLE_EVENT, field, "a lifecycle event name such as reauthorizationRequired")


def mailbox(value: Any, field: str) -> str:
    """A room mailbox address (format only; whether it is a room is the admin commands' check)."""
    return _matching(text(value, field, 254).strip(), MAILBOX, field,
                     "a mailbox address like room@contoso.com, at most 254 characters")


def client_state(value: Any, field: str) -> str:
    if value is None:
        return ""
    return text(value, field, MAX_CLIENT_STATE)


def instant(value: Any, field: str) -> datetime:
    """A point in time: Unix seconds (or milliseconds), ISO 8601 (without a zone it is UTC), or an
    HTTP date (RFC 9110, `Tue, 01 Dec 2026 08:00:00 GMT`)."""
    if isinstance(value, str) and re.fullmatch(r"\d{1,16}(\.\d{1,9})?", value):
        value = float(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise InputError(field, "timestamp out of range") from None
    if isinstance(value, str) and _ISO_INSTANT.fullmatch(value):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if isinstance(value, str) and _HTTP_DATE.fullmatch(value):
        try:
            return email.utils.parsedate_to_datetime(value).astimezone(UTC)
        except (TypeError, ValueError):
            pass
    raise InputError(field, "expected a timestamp: Unix seconds or ISO 8601 such as 2026-11-30T08:00:00Z")


def path_segment(value: str, field: str = "id") -> str:
    """Check one URL path segment: '', '.' and '..' would change the path whatever the escaping."""
    if value in ("", ".", ".."):
        raise InputError(field, "an empty, '.' or '..' id cannot be part of a URL")
    text(value, field, 2048)
    return value


def url_path(*segments: str) -> str:
    """`/a/b/c` from segments, each percent-escaped, so an id can never reach another path."""
    return "".join("/" + quote(path_segment(segment), safe="") for segment in segments)
