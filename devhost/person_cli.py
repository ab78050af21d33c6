"""`python -m sync sandbox book|meet|cancel`: act as a person on the sandbox `make run` serves,
then show what the sync did about it (and how long it took).

    python -m sync sandbox book --room berlin --at "tomorrow 10:00"
    python -m sync sandbox meet --room berlin --at "tomorrow 16:00" --subject Board
    python -m sync sandbox cancel --booking 50040
    python -m sync sandbox cancel --meeting Board

It talks to the emulators' control APIs (a person in anny, a person in Outlook) and watches the
other side. The stack is found through the local stack file that `make run` writes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo

import httpx

from sandbox.organisation import MEETING_SERVICE, ORGANISERS
from sync.changes_log import when
from sync.graph import ANNY_PROPERTY_ID
from sync.inbound import blocker_note
from sync.local_stack import RunningStack, SandboxRoomInfo, read_local_stack, stack_file

T = TypeVar("T")
NEWCOMER = {"email": "newcomer@example.org", "name": "New Comer"}
_TIME = re.compile(r"^(?:(?P<day>today|tomorrow|\+\d+d?|\d{4}-\d{2}-\d{2})[ t])?(?P<hour>\d{1,2}):(?P<minute>\d{2})$")


class UsageError(Exception):
    """Bad input: the message says what to write instead."""


@dataclass
class Target:
    """Where to book: a room and the anny resource (the room itself or one of its children)."""

    room: SandboxRoomInfo
    resource_id: str
    resource_name: str


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sync sandbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--timeout", type=float, default=30, help="seconds to wait for the sync (default 30)")
    commands = parser.add_subparsers(dest="command", required=True)
    book = commands.add_parser("book", help="book in anny, as a customer would; waits for the Outlook event")
    meet = commands.add_parser("meet", help="book the room in Outlook, as a colleague would; waits for the "
                                            "anny blocker")
    for sub in (book, meet):
        sub.add_argument("--room", required=True, help="room name (berlin), mailbox, anny resource id, or a "
                                                       "child resource (\"desk berlin 1\", book only)")
        sub.add_argument("--at", required=True, help="start: HH:MM, 'tomorrow HH:MM', '+3d HH:MM' or "
                                                     "'YYYY-MM-DD HH:MM', in the sandbox's time zone")
        sub.add_argument("--minutes", type=int, default=60, help="length (default 60)")
        sub.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    book.add_argument("--note", default="", help="the customer's description")
    meet.add_argument("--subject", default="Meeting", help="the meeting's subject")
    meet.add_argument("--private", action="store_true", help="a private meeting")
    meet.add_argument("--all-day", action="store_true", help="an all-day meeting on the day of --at")
    cancel = commands.add_parser("cancel", help="cancel an anny booking or delete an Outlook meeting; waits for "
                                                "the sync to remove its mirror")
    which = cancel.add_mutually_exclusive_group(required=True)
    which.add_argument("--booking", help="anny booking id (as `book` printed it)")
    which.add_argument("--meeting", help="Outlook meeting: its subject (the latest one) or its id")
    cancel.add_argument("--room", default="", help="the meeting's room, if its subject is not unique")
    cancel.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        stack = _sandbox()
        with httpx.Client(timeout=30) as client:
            person = Person(stack, client, args.timeout)
            result = {"book": person.book, "meet": person.meet, "cancel": person.cancel}[args.command](args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:
        print(f"error: the sandbox did not answer ({type(exc).__name__}); is `make run` still running?",
              file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print("\n".join(result["lines"]))
    return 0 if result["synced"] else 1


def _sandbox() -> RunningStack:
    stack = read_local_stack()
    if stack is None:
        raise UsageError(f"no sandbox is running (no live {stack_file()}): start one with `make run`")
    if not stack.is_sandbox:
        raise UsageError("`make run` is running against the real Graph and anny; the sandbox helpers only act "
                         "on the emulators")
    return stack


def parse_start(text: str, zone: ZoneInfo, today: date) -> datetime:
    """`10:00`, `today 10:00`, `tomorrow 10:00`, `+3d 10:00`, `2026-12-01 10:00` → an aware datetime."""
    match = _TIME.match(text.strip().lower())
    if not match:
        raise UsageError(f"--at {text!r}: expected HH:MM, 'tomorrow HH:MM', '+3d HH:MM' or 'YYYY-MM-DD HH:MM'")
    day_text, hour, minute = match["day"] or "today", int(match["hour"]), int(match["minute"])
    if hour > 23 or minute > 59:
        raise UsageError(f"--at {text!r}: no such time of day")
    if day_text == "today":
        day = today
    elif day_text == "tomorrow":
        day = today + timedelta(days=1)
    elif day_text.startswith("+"):
        day = today + timedelta(days=int(day_text.strip("+d")))
    else:
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            raise UsageError(f"--at {text!r}: no such date") from None
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)


def find_target(stack: RunningStack, text: str, children: bool) -> Target:
    wanted = text.strip().lower()
    for room in stack.rooms:
        names = {room.room.lower(), room.name.lower(), room.name.lower().split()[-1], room.anny_resource}
        if wanted in names:
            return Target(room, room.anny_resource, room.name)
        for child, resource_id in room.children.items():
            if children and wanted in {child.lower(), resource_id}:
                return Target(room, resource_id, child)
    known = ", ".join(room.name.split()[-1].lower() for room in stack.rooms)
    raise UsageError(f"--room {text!r}: no such mapped room; the sandbox has {known}"
                     + (" (and their children, e.g. 'desk berlin 1')" if children else ""))


@dataclass
class Person:
    stack: RunningStack
    client: httpx.Client
    timeout: float

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.stack.time_zone)

    def _today(self) -> date:
        return datetime.now(self.zone).date()

    def _json(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        answer = self.client.request(method, url, json=body)
        if answer.status_code >= 400:
            raise UsageError(f"the emulator refused: {answer.status_code} {answer.text[:300]}")
        return answer.json() if answer.content else None

    # -- anny → Outlook ------------------------------------------------------------------------------

    def book(self, args: argparse.Namespace) -> dict[str, Any]:
        target = find_target(self.stack, args.room, children=True)
        start = parse_start(args.at, self.zone, self._today())
        end = start + timedelta(minutes=_positive(args.minutes))
        booking = self._json("POST", f"{self.stack.anny_url}/_control/person/bookings", {
            "resource": target.resource_id, "start": start.isoformat(), "end": end.isoformat(),
            "service": MEETING_SERVICE, "customer": NEWCOMER, "description": args.note or "Booked from the CLI"})
        booking_id = str(booking["id"])
        lines = [f"anny: booking {booking_id} made on {target.resource_name}, {when(start, end, self.zone)}"]
        started = time.monotonic()
        event = self._wait(lambda: self._mirror_of(target.room.room, booking_id))
        return self._report(lines, started, event, booking_id=booking_id, room=target.room.room,
                            seen=lambda e: f"the sync created Outlook event \"{e['subject']}\" in {target.room.room}")

    def _mirror_of(self, room: str, booking_id: str) -> dict[str, Any] | None:
        url = f"{self.stack.graph_url}/_control/mailboxes/{quote(room)}/events"
        events: list[dict[str, Any]] = self._json("GET", url)
        for event in events:
            for prop in event.get("singleValueExtendedProperties") or []:
                if prop.get("id", "").lower() == ANNY_PROPERTY_ID.lower() and prop.get("value") == booking_id:
                    return event
        return None

    # -- Outlook → anny ------------------------------------------------------------------------------

    def meet(self, args: argparse.Namespace) -> dict[str, Any]:
        target = find_target(self.stack, args.room, children=False)
        room = target.room.room
        start = parse_start(args.at, self.zone, self._today())
        body: dict[str, Any] = {"subject": args.subject, "organizer": ORGANISERS[0][1], "show_as": "busy",
                                "time_zone": self.stack.time_zone,
                                "sensitivity": "private" if args.private else "normal"}
        if args.all_day:
            body |= {"is_all_day": True, "start": start.date().isoformat(),
                     "end": (start.date() + timedelta(days=1)).isoformat()}
            end = start + timedelta(days=1)
        else:
            end = start + timedelta(minutes=_positive(args.minutes))
            body |= {"start": start.replace(tzinfo=None).isoformat(), "end": end.replace(tzinfo=None).isoformat()}
        event = self._json("POST", f"{self.stack.graph_url}/_control/mailboxes/{quote(room)}/events", body)
        lines = [f"Outlook: meeting \"{args.subject}\" made in {room}, {when(start, end, self.zone, args.all_day)}"]
        started = time.monotonic()
        note = blocker_note(room, event["id"])
        blocker = self._wait(lambda: self._blocker_with(note))
        return self._report(lines, started, blocker, event_id=event["id"], room=room,
                            seen=lambda b: f"the sync created anny blocker {b['id']} \"{b.get('title')}\" on "
                                           f"{target.resource_name}")

    def _blocker_with(self, note: str) -> dict[str, Any] | None:
        bookings: list[dict[str, Any]] = self._json("GET", f"{self.stack.anny_url}/_control/bookings")
        for booking in bookings:
            if booking.get("is_blocker") and booking.get("note") == note and booking.get("status") != "canceled":
                return booking
        return None

    # -- cancelling ------------------------------------------------------------------------------------

    def cancel(self, args: argparse.Namespace) -> dict[str, Any]:
        if args.booking:
            return self._cancel_booking(args.booking.strip())
        return self._delete_meeting(args.meeting, args.room)

    def _cancel_booking(self, booking_id: str) -> dict[str, Any]:
        booking = self._json("GET", f"{self.stack.anny_url}/_control/bookings/{quote(booking_id, safe='')}")
        room = next((r for r in self.stack.rooms
                     if booking["resource"]["id"] in {r.anny_resource, *r.children.values()}), None)
        if room is None:
            raise UsageError(f"booking {booking_id} is not on a mapped room: the sync leaves it alone")
        self._json("POST", f"{self.stack.anny_url}/_control/person/bookings/{quote(booking_id, safe='')}/cancel")
        lines = [f"anny: booking {booking_id} on {booking['resource']['name']} cancelled"]
        started = time.monotonic()
        gone = self._wait(lambda: None if self._mirror_of(room.room, booking_id) else {"room": room.room})
        return self._report(lines, started, gone, booking_id=booking_id, room=room.room,
                            seen=lambda _: f"the sync deleted its Outlook event in {room.room}")

    def _delete_meeting(self, which: str, room_text: str) -> dict[str, Any]:
        rooms = [find_target(self.stack, room_text, children=False).room] if room_text else self.stack.rooms
        found = [(room.room, e) for room in rooms
                 for e in self._json("GET", f"{self.stack.graph_url}/_control/mailboxes/{quote(room.room)}/events")
                 if which in (e["id"], e.get("subject")) or e.get("subject", "").lower() == which.lower()]
        if not found:
            raise UsageError(f"--meeting {which!r}: no meeting with this subject or id in the mapped rooms")
        room, event = max(found, key=lambda item: item[1].get("createdDateTime", ""))
        note = blocker_note(room, event["id"])
        had_blocker = self._blocker_with(note)
        self._json("DELETE", f"{self.stack.graph_url}/_control/mailboxes/{quote(room)}/events/"
                             f"{quote(event['id'], safe='')}")
        lines = [f"Outlook: meeting \"{event.get('subject')}\" in {room} deleted"]
        if had_blocker is None:
            lines.append("(it had no blocker in anny, so the sync has nothing to remove)")
            return {"lines": lines, "synced": True, "room": room, "event_id": event["id"], "seconds": 0}
        started = time.monotonic()
        gone = self._wait(lambda: None if self._blocker_with(note) else {"id": had_blocker["id"]})
        return self._report(lines, started, gone, event_id=event["id"], room=room,
                            seen=lambda b: f"the sync deleted anny blocker {b['id']}")

    # -- waiting and reporting ----------------------------------------------------------------------------

    def _wait(self, probe: Callable[[], T | None]) -> T | None:
        deadline = time.monotonic() + self.timeout
        while True:
            found = probe()
            if found is not None or time.monotonic() > deadline:
                return found
            time.sleep(0.1)

    def _report(self, lines: list[str], started: float, found: Any, seen: Callable[[Any], str],
                **fields: Any) -> dict[str, Any]:
        seconds = round(time.monotonic() - started, 2)
        if found is None:
            lines.append(f"→ the sync did nothing within {self.timeout:g} s: see the `make run` terminal "
                         "(and `python -m sync status`)")
        else:
            lines.append(f"→ {seen(found)} after {seconds:.1f} s")
        return {"lines": lines, "synced": found is not None, "seconds": seconds, "result": found, **fields}


def _positive(minutes: int) -> int:
    if minutes <= 0 or minutes > 24 * 60:
        raise UsageError("--minutes must be between 1 and 1440")
    return minutes
