"""Log lines as Azure keeps them (sync.logs): the Python worker's handler formats a record with a
plain formatter and sends the message alone, so the fields an admin acts on must be in it."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from sync.logs import ContextInMessage, put_context_in_messages, quiet_sdk_loggers


@pytest.fixture
def worker_handler() -> Iterator[io.StringIO]:
    """A handler like the worker's: on the root logger, `logging.Formatter()`, message only."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield out
    root.removeHandler(handler)
    root.setLevel(level)


def test_the_fields_of_an_app_line_are_in_the_message_the_worker_sends(worker_handler: io.StringIO) -> None:
    put_context_in_messages()
    put_context_in_messages()  # once per invocation: the fields are written once
    logging.getLogger("sync.worker").warning(
        "throttled; %d work item put back", 1, extra={"room": "room.alpha@contoso.example", "booking_id": "50012",
                                                       "error": "Graph answered 429 (100% of the budget)"})
    line = worker_handler.getvalue().strip()
    assert line == ("throttled; 1 work item put back (room=room.alpha@contoso.example, booking_id=50012, "
                    "error=Graph answered 429 (100% of the budget))")


def test_a_change_line_already_says_it_all_and_long_fields_are_cut(worker_handler: io.StringIO) -> None:
    put_context_in_messages()
    logging.getLogger("sync.changes").info("anny booking 50012 → Outlook: created", extra={"booking_id": "50012"})
    logging.getLogger("sync.worker").error("work item failed", extra={"work": "x" * 5000})
    change, failed = worker_handler.getvalue().splitlines()
    assert change == "anny booking 50012 → Outlook: created"
    assert failed.startswith("work item failed (work=xxx") and len(failed) < 400


def test_the_sdks_request_lines_stay_out(worker_handler: io.StringIO) -> None:
    quiet_sdk_loggers()
    put_context_in_messages()
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").info("Request URL: 'https://…'")
    logging.getLogger("httpx").info("HTTP Request: POST https://graph.microsoft.com/v1.0/…")
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").warning("kept: a warning")
    assert worker_handler.getvalue().splitlines() == ["kept: a warning"]


def test_a_line_whose_format_does_not_fit_its_arguments_is_left_to_logging_not_raised_at_the_caller() -> None:
    record = logging.LogRecord("sync.worker", logging.WARNING, __file__, 1, "%d items", ("not a number",), None)
    record.room = "r1"
    assert ContextInMessage().filter(record)  # the filter runs inside the caller's log call: it must not raise
    assert (record.msg, record.args) == ("%d items", ("not a number",))  # logging's handler reports the format
