"""Webhook payloads instead of reads: what a payload tells, and when it may be acted on unread."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sync.anny import seen_booking, webhook_snapshot
from sync.decide import (
    CreateEvent,
    DeleteEvent,
    ForgetLink,
    Skip,
    UpdateEvent,
    decide_booking,
    desired_event,
    is_own_blocker_echo,
    payload_suffices,
)
from sync.model import BLOCKER_MARKER, AnnyBooking, booking_version, is_newer
from sync.state import Link
from tests import fixtures
from tests.fixtures import OUT, ROOM, T0

U1, U2, U3 = (datetime(2026, 11, day, 10, 0, 0, 1, tzinfo=UTC) for day in (24, 25, 26))
V1, V2, V3 = (booking_version(u) for u in (U1, U2, U3))


def booking(**changes: object) -> AnnyBooking:
    """The shared booking, as anny last updated it at U2."""
    return fixtures.booking(**{"updated_at": U2, **changes})


def link(version: str, **changes: object) -> Link:
    synced = Link(room=ROOM, origin="anny", anny_id="b1", event_id="E1", anny_version=version,
                  fingerprint=desired_event(booking(), OUT).fingerprint, etag="W/1")
    return replace(synced, **changes)


MOVED = booking(start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=3))


@pytest.mark.parametrize(("seen", "known", "expected", "suffices"), [
    # a later state than the link saw: acted on without a read, whatever it asks for
    (MOVED, link(V1), UpdateEvent, True),
    (booking(canceled=True), link(V1), DeleteEvent, True),
    (None, link(V1), DeleteEvent, True),
    # an older or equal state, or one that cannot be ordered: a write needs the truth first
    (replace(MOVED, updated_at=U1), link(V2), UpdateEvent, False),
    (MOVED, link(V2), UpdateEvent, False),
    (replace(MOVED, updated_at=None), link(V1), UpdateEvent, False),
    (MOVED, link(""), UpdateEvent, False),
    # no link: a create might resurrect a booking deleted meanwhile (deliveries reversed)
    (booking(), None, CreateEvent, False),
    # nothing to do is safe whatever the age: later changes send webhooks of their own
    (booking(), link(V3), Skip, True),
    (booking(canceled=True), None, Skip, True),
    (None, None, Skip, True),
    (booking(is_series_master=True), None, Skip, True),
])
def test_when_the_payload_suffices(seen, known, expected, suffices):
    actions = decide_booking(seen, ROOM, known, OUT)
    assert isinstance(actions[0], expected)
    assert payload_suffices(actions, known, seen.version if seen else V2) is suffices


def test_an_unmapped_booking_without_a_link_needs_no_read():
    actions = decide_booking(booking(), None, None, OUT)
    assert actions == [Skip("not a booking to mirror")] and payload_suffices(actions, None, V2)


def test_a_cancelled_payload_removes_and_forgets_without_a_read():
    actions = decide_booking(booking(canceled=True), ROOM, link(V1), OUT)
    assert [type(a) for a in actions] == [DeleteEvent, ForgetLink]
    assert payload_suffices(actions, link(V1), V2)


def test_versions_order_by_time_across_offsets():
    assert booking_version("2026-11-24T11:00:00+01:00") == booking_version("2026-11-24T10:00:00Z")
    assert is_newer(booking_version("2026-11-24T10:00:01Z"), booking_version("2026-11-24T11:00:00+01:00"))
    assert booking_version("yesterday") == "" and booking_version("2026-11-24T10:00:00") == ""
    assert not is_newer("", V1) and not is_newer(V1, "")


def flat_payload(**data: object) -> dict:
    body = {"id": "b1", "start_date": "2026-12-01T10:00:00+01:00", "end_date": "2026-12-01T11:00:00+01:00",
            "status": "accepted", "number": "1001", "updated_at": "2026-11-25T10:00:00.000001Z",
            "resource": {"id": "desk-1", "name": "Desk 1", "parent": {"id": "room-1"}, "meta": {"parent_id": "room-1"}},
            "service": {"id": "s1", "name": "Meeting"}}
    body.update(data)
    return {"event": "bookings.updated", "event_id": "e1", "triggered_at": "2026-11-25T10:00:01Z",
            "data": {k: v for k, v in body.items() if v is not None}}


def test_a_complete_payload_becomes_the_booking():
    seen = seen_booking(webhook_snapshot(flat_payload()))
    assert seen.version == V2
    assert seen.booking is not None and set(seen.booking.resource_ids) == {"desk-1", "room-1"}
    assert seen.booking.service_name == "Meeting" and seen.booking.start == T0
    deleted = webhook_snapshot({**flat_payload(), "event": "bookings.deleted"})
    assert seen_booking(deleted).booking is None and seen_booking(deleted).version == V2


@pytest.mark.parametrize("broken", [
    {"updated_at": None},  # cannot be ordered
    {"updated_at": "last tuesday"},
    {"start_date": None},
    {"resource": None},
    {"note": "x" * 5000},  # too long for a queue message: read instead
    # what the title shows: without them the mirror's title would lose its service or number
    {"service": None},
    {"number": None},
    # fields of a type or format anny does not send (the delivery is still taken: the booking is read)
    {"start_date": "soon"},
    {"start_date": 1},
    {"end_date": "2026-12-01T11:00:00"},  # no offset: cannot be compared with anything else
    {"attributes": [1]},
    {"resource": {"id": "desk-1", "meta": [1]}},
    {"resource": {"id": "desk-1", "relationships": "x", "meta": {"parent_id": "room-1"}}},
    {"resource": {"id": {"nested": 1}, "meta": {"parent_id": "room-1"}}},
    {"service": {"id": "s1", "attributes": [1]}},
])
def test_an_incomplete_payload_means_a_read(broken):
    assert webhook_snapshot(flat_payload(**broken)) is None


def test_a_resource_that_does_not_say_whether_it_has_a_parent_is_marked():
    """resource.json makes `parent` optional: the worker uses such a payload only where a rule maps
    that resource itself (OutboundFlow._mapping_known)."""
    unsaid = seen_booking(webhook_snapshot(flat_payload(resource={"id": "room-1", "name": "Room 1"})))
    assert not unsaid.parent_known and unsaid.booking is not None and unsaid.booking.resource_ids == ("room-1",)
    assert seen_booking(webhook_snapshot(flat_payload())).parent_known


def test_a_blocker_needs_neither_number_nor_service():
    blocker = webhook_snapshot(flat_payload(is_blocker=True, number=None, service=None))
    assert blocker is not None and seen_booking(blocker).booking is not None


def test_a_jsonapi_wrapped_payload_means_a_read():
    wrapped = {"event": "bookings.updated", "data": {"data": {"id": "b1", "type": "bookings", "attributes": {}}}}
    assert webhook_snapshot(wrapped) is None


def test_the_echo_of_a_blocker_this_app_made_needs_no_work_item():
    ours = booking(is_blocker=True, note=f"Synced from Outlook. {BLOCKER_MARKER}abc]")
    assert is_own_blocker_echo(ours)
    assert all(isinstance(a, Skip) for known in (None, link(V1, origin="outlook"))
               for a in decide_booking(ours, ROOM, known, OUT))
    assert not is_own_blocker_echo(replace(ours, canceled=True))  # an admin's deletion is remembered
    assert not is_own_blocker_echo(None) and not is_own_blocker_echo(booking(is_blocker=True))
