"""Logs as Azure keeps them: what an admin needs to act on a line is in the line itself.

The Functions host's Python worker sends a record's formatted message alone to Application
Insights (its `on_logging` keeps level, message and category; `extra=` fields are dropped
unless the app runs OpenTelemetry). So the app's own records get their fields (room, booking,
event, error) written into the message too, by a filter on the handlers of the root logger, the
worker's among them. The SDKs' per-request INFO lines (azure-core's HTTP logging policy logs
every Table and queue call with its headers) are turned down to warnings: at two lines per
Table operation they would drown the app's own lines and count against the host's sampling.
"""

from __future__ import annotations

import logging
from typing import Any

STANDARD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
SELF_EXPLAINING = ("sync.changes",)  # their message already says what their fields say
QUIET_LOGGERS = ("azure", "httpx", "httpcore", "kiota_http", "msal", "aiohttp.access")
IN_MESSAGE = "context_in_message"  # set on a record once its fields are in its message
MAX_VALUE_CHARS = 300


def context_of(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of a record."""
    return {k: v for k, v in vars(record).items() if k not in STANDARD_FIELDS and k != IN_MESSAGE}


class ContextInMessage(logging.Filter):
    """Appends an app record's fields to its message: `… (room=…, booking_id=…)`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, IN_MESSAGE, False) or not record.name.startswith("sync"):
            return True
        setattr(record, IN_MESSAGE, True)
        fields = {k: v for k, v in context_of(record).items() if v not in (None, "", [], {})}
        if fields and record.name not in SELF_EXPLAINING:
            try:
                message = record.getMessage()
            except (TypeError, ValueError):
                return True  # left as it is: the handler reports the bad format, not the app's caller
            shown = ", ".join(f"{k}={_short(v)}" for k, v in fields.items())
            record.msg, record.args = f"{message} ({shown})", None
        return True


def _short(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_VALUE_CHARS else text[:MAX_VALUE_CHARS] + "…"


def quiet_sdk_loggers() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def put_context_in_messages() -> None:
    """On every handler of the root logger (the worker attaches its own before it runs a function,
    so this is called on each invocation; a handler that has the filter keeps its one)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, ContextInMessage) for f in handler.filters):
            handler.addFilter(ContextInMessage())
