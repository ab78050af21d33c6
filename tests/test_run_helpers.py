"""The pieces of `make run` a newcomer reads: the change log lines, the CLI helpers' input, the stack file,
the port check, and what the runner shows of an HTTP call."""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from devhost.logs import ReadableFormatter, http_call_line
from devhost.person_cli import UsageError, find_target, parse_start
from devhost.ports import PortInUse, Ports
from sandbox.organisation import ROOMS, anny_seed, graph_seed
from sync import changes_log
from sync.decide import CreateBlocker, CreateEvent, DeleteBlocker, Skip
from sync.local_stack import RunningStack, SandboxRoomInfo, read_local_stack, remove_local_stack, write_local_stack
from sync.model import AnnyBooking, DesiredBlocker, DesiredEvent, OutlookEvent

BERLIN = ZoneInfo("Europe/Berlin")
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
END = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _stack(pid: int | None = None) -> RunningStack:
    rooms = [SandboxRoomInfo("room-berlin@contoso.com", "Room Berlin", "1000", {"Desk Berlin 1": "1001"}),
             SandboxRoomInfo("room-munich@contoso.com", "Room Munich", "1003")]
    return RunningStack(pid=pid or os.getpid(), mode="sandbox", app_url="http://127.0.0.1:7071",
                        admin_api="http://127.0.0.1:7071/api/manage", admin_key="k" * 32, rooms=rooms)


def test_an_effective_outbound_change_is_one_readable_line(caplog: pytest.LogCaptureFixture) -> None:
    booking = AnnyBooking("50012", START, END, "1000", resource_name="Room Berlin")
    desired = DesiredEvent("50012", "Meeting · anny #B1", START, END)
    with caplog.at_level(logging.DEBUG, logger="sync.changes"):
        changes_log.booking_synced("50012", booking, "room@x", [CreateEvent("room@x", desired, 0)], BERLIN)
        changes_log.booking_synced("50013", booking, "room@x", [Skip("echo of our own write")], BERLIN)
    created, echo = caplog.records
    assert created.levelno == logging.INFO
    assert created.getMessage() == "anny booking 50012 (Room Berlin, Tue 1 Dec 10:00–11:00) → Outlook: created"
    assert echo.levelno == logging.DEBUG and "no change (echo of our own write)" in echo.getMessage()


def test_an_effective_inbound_change_names_the_meeting_and_the_blocker(caplog: pytest.LogCaptureFixture) -> None:
    event = OutlookEvent("AAMk=", subject="Salary review", start=START, end=END, sensitivity="private")
    blocker = DesiredBlocker("AAMk=", "Busy in Outlook", START, END)
    with caplog.at_level(logging.DEBUG, logger="sync.changes"):
        changes_log.event_synced("room@x", event, "50013", [CreateBlocker(blocker)], BERLIN)
        changes_log.event_synced("room@x", OutlookEvent("AAMk=", removed=True), "", [DeleteBlocker("50013")], BERLIN)
    created, deleted = (r.getMessage() for r in caplog.records)
    assert created == 'Outlook meeting "Busy in Outlook" (room@x, Tue 1 Dec 10:00–11:00) → anny blocker 50013: created'
    assert "Salary review" not in created, "a private meeting's subject stays out of the log"
    assert deleted == "Outlook meeting (removed) (room@x) → anny blocker 50013: deleted"


def test_the_runner_never_shows_the_key_of_a_call() -> None:
    line = http_call_line("anny_webhook", "POST", "/api/anny/webhook", 202, b'{"status": "queued"}',
                          "application/json")
    assert line == 'anny_webhook: POST /api/anny/webhook → 202 {"status": "queued"}'


def test_log_fields_follow_the_message_for_a_person() -> None:
    record = logging.LogRecord("sync.subscriptions", logging.INFO, "", 0, "subscription created", None, None)
    record.room = "room@x"
    assert ReadableFormatter(verbose=False).format(record).endswith("subscription created (room room@x)")
    record.levelno, record.levelname = logging.WARNING, "WARNING"
    assert 'WARNING: subscription created  {"room": "room@x"}' in ReadableFormatter(verbose=False).format(record)


@pytest.mark.parametrize(("text", "expected"), [
    ("10:00", datetime(2026, 11, 30, 10, 0)), ("tomorrow 7:30", datetime(2026, 12, 1, 7, 30)),
    ("+3d 08:00", datetime(2026, 12, 3, 8, 0)), ("2026-12-24 18:00", datetime(2026, 12, 24, 18, 0)),
    ("2026-12-24T18:00", datetime(2026, 12, 24, 18, 0)),
])
def test_start_times_a_person_would_type(text: str, expected: datetime) -> None:
    assert parse_start(text, BERLIN, date(2026, 11, 30)) == expected.replace(tzinfo=BERLIN)


@pytest.mark.parametrize("text", ["25:00", "noon", "2026-02-30 10:00", "tomorrow", ""])
def test_a_start_time_that_makes_no_sense_says_what_to_write(text: str) -> None:
    with pytest.raises(UsageError, match="--at"):
        parse_start(text, BERLIN, date(2026, 11, 30))


def test_rooms_are_found_by_name_mailbox_id_or_child() -> None:
    stack = _stack()
    assert find_target(stack, "berlin", children=False).resource_id == "1000"
    assert find_target(stack, "ROOM-MUNICH@contoso.com", children=False).resource_id == "1003"
    desk = find_target(stack, "desk berlin 1", children=True)
    assert (desk.resource_id, desk.room.room) == ("1001", "room-berlin@contoso.com")
    with pytest.raises(UsageError, match="berlin, munich"):
        find_target(stack, "desk berlin 1", children=False)


def test_the_stack_file_is_private_and_only_a_live_run_counts(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    write_local_stack(_stack(), path)
    assert path.stat().st_mode & 0o777 == 0o600, "it holds the admin key"
    assert read_local_stack(path) == _stack()
    remove_local_stack(os.getpid() + 1, path)
    assert path.exists(), "another run's file is left alone"
    dead = 2**22 + 12345  # above the default pid_max: no such process
    write_local_stack(_stack(pid=dead), path)
    assert read_local_stack(path) is None
    assert read_local_stack(tmp_path / "missing.json") is None


def test_a_taken_port_is_named_with_the_flag_that_changes_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match=f"port {port} \\(the anny emulator\\).*--anny-port"):
            Ports(app=0, graph=0, anny=port, azurite=0).check_free(with_emulators=True, with_azurite=True)
        Ports(app=0, graph=0, anny=port, azurite=0).check_free(with_emulators=False, with_azurite=True)


def test_the_seeded_organisation_has_what_a_newcomer_needs_to_see() -> None:
    today = date(2026, 11, 30)
    anny, graph = anny_seed(today), graph_seed(today)
    assert all(r["capacity"] and r["building"] for r in graph["rooms"])
    assert any(r["children"] for r in anny["resources"]) and anny["series"]
    children = {c["slug"] for r in anny["resources"] for c in r["children"]}
    assert any(b["resource"] in children for b in anny["bookings"]), "a booking on a child"
    days = {b["start"][:10] for b in anny["bookings"]}
    assert min(days) == "2026-11-30" and max(days) <= "2026-12-13", "two weeks from today"
    events = graph["events"]
    assert any(e.get("recurrence") for e in events) and any(e.get("is_all_day") for e in events)
    assert any(e.get("sensitivity") == "private" for e in events)
    mapped = {r.email for r in ROOMS if r.mapped}
    assert {e["mailbox"] for e in events} - mapped, "a meeting in an unmapped room, which the sync leaves alone"
