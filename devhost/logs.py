"""Live logs of `make run`: one readable line per event, the structured fields where they help.

The app's own lines carry their `extra=` fields in the message (`sync.logs`, as in Azure, whose
Python worker keeps the message only); with -v they follow it as JSON too.
No-op syncs are logged at DEBUG by the app, so they show with -v only.
"""

from __future__ import annotations

import json
import logging

from sync.logs import IN_MESSAGE, SELF_EXPLAINING, context_of, quiet_sdk_loggers


class ReadableFormatter(logging.Formatter):
    def __init__(self, verbose: bool) -> None:
        super().__init__("%(asctime)s %(message)s", datefmt="%H:%M:%S")
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if record.levelno >= logging.WARNING:
            text = text.replace(" ", f" {record.levelname}: ", 1)
        extras = context_of(record)
        if not extras:
            return text
        if self.verbose:
            return f"{text}  {json.dumps(extras, default=str, ensure_ascii=False)}"
        if record.name in SELF_EXPLAINING or getattr(record, IN_MESSAGE, False):
            return text  # the app's own lines carry their fields in the message (sync.logs)
        if record.levelno >= logging.WARNING:
            return f"{text}  {json.dumps(extras, default=str, ensure_ascii=False)}"
        return f"{text} ({', '.join(f'{k} {v}' for k, v in extras.items() if v not in (None, '', [], {}))})"


def configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(ReadableFormatter(verbose))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)
    quiet_sdk_loggers()  # the SDKs' request logging is noise here
    logging.getLogger("asyncio").setLevel(logging.WARNING)


def http_call_line(function_name: str, method: str, path: str, status: int, body: bytes, content_type: str) -> str:
    """`anny_webhook: POST /api/anny/webhook → 202 {"status": "queued", "booking_id": "50012"}`.

    The query string (which carries the function key) is never shown.
    """
    summary = ""
    if content_type.startswith("application/json") and len(body) <= 300:
        summary = " " + body.decode(errors="replace")
    elif status == 200 and content_type.startswith("text/plain"):
        summary = " (validation handshake)"
    return f"{function_name}: {method} {path} → {status}{summary}"
