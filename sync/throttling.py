"""429 answers from anny and Graph: how long to wait, read defensively from `Retry-After`.

A `Retry-After` may be missing, not a number, negative, an HTTP date, or absurd (a day): each
gets a bounded value and a log line, so a bad header can neither hammer the remote nor park
a work item for a day.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

log = logging.getLogger(__name__)


def retry_after_s(headers: Mapping[str, str] | None, *, source: str, default_s: float, max_s: float) -> float:
    """Seconds to wait after a 429 from `source` ("anny" or "Graph"), within [0, max_s]."""
    raw = _header(headers, "Retry-After")
    if raw is None or not raw.strip():
        log.warning("429 without Retry-After; waiting a default time", extra={"source": source, "wait_s": default_s})
        return default_s
    value = _seconds(raw.strip())
    if value is None:
        log.warning("429 with an unreadable Retry-After; waiting a default time",
                    extra={"source": source, "retry_after": raw[:64], "wait_s": default_s})
        return default_s
    if value < 0:
        log.warning("429 with a negative Retry-After; waiting a default time",
                    extra={"source": source, "retry_after": raw[:64], "wait_s": default_s})
        return default_s
    if value > max_s:
        log.warning("429 with an absurd Retry-After; waiting the longest plausible time instead",
                    extra={"source": source, "retry_after": raw[:64], "wait_s": max_s})
        return max_s
    return value


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if key.lower() == name.lower():
            return str(value)
    return None


def _seconds(raw: str) -> float | None:
    """Delta-seconds (whole or decimal), or an HTTP date (RFC 9110 allows both)."""
    try:
        value = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return (when - datetime.now(UTC)).total_seconds()
    return value if value == value and value not in (float("inf"), float("-inf")) else None
