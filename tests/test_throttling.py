"""Retry-After from anny and Graph: bad values get a bounded default and a log line."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from sync.throttling import retry_after_s


@pytest.mark.parametrize(("headers", "expected", "logged"), [
    ({"Retry-After": "42"}, 42.0, None),
    ({"retry-after": "1.5"}, 1.5, None),
    ({}, 30.0, "without Retry-After"),
    ({"Retry-After": ""}, 30.0, "without Retry-After"),
    ({"Retry-After": "soon"}, 30.0, "unreadable"),
    ({"Retry-After": "nan"}, 30.0, "unreadable"),
    ({"Retry-After": "-5"}, 30.0, "negative"),
    ({"Retry-After": "86400"}, 120.0, "absurd"),
])
def test_retry_after_is_read_defensively(caplog, headers, expected, logged):
    with caplog.at_level(logging.WARNING, logger="sync.throttling"):
        assert retry_after_s(headers, source="anny", default_s=30, max_s=120) == expected
    messages = " ".join(r.getMessage() for r in caplog.records)
    if logged:
        assert logged in messages
    else:
        assert messages == ""


def test_retry_after_as_an_http_date():
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    assert 15 <= retry_after_s({"Retry-After": when}, source="Graph", default_s=10, max_s=300) <= 20
