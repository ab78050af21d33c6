"""The pure sync decisions, without any I/O: every branch. Convergence over the real flows is
proved by the model-based test (tests/e2e/test_model.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from sync.decide import (
    CREATED_WHILE_OFF,
    CheckRemoved,
    CreateBlocker,
    CreateEvent,
    DeleteBlocker,
    DeleteEvent,
    DeleteUnrecordedEvent,
    ForgetLink,
    InboundContext,
    RestoreMirror,
    Skip,
    SuppressBlocker,
    UpdateBlocker,
    UpdateEvent,
    decide_booking,
    decide_event,
    decide_removed_event,
    desired_blocker,
    desired_event,
)
from sync.model import BLOCKER_MARKER, AnnyBooking, OutlookEvent, SyncWindow
from sync.state import Link
from tests.fixtures import BERLIN, OUT, ROOM, T0, WINDOW, booking, event

IN = InboundContext(WINDOW, frozenset({"busy", "tentative", "oof", "workingElsewhere", "unknown", "free"}),
                    False, "Busy in Outlook", BERLIN)


def mirror_link(**changes: object) -> Link:
    desired = desired_event(booking(), OUT)
    base = Link(room=ROOM, origin="anny", anny_id="b1", event_id="E1", fingerprint=desired.fingerprint)
    return replace(base, **changes)


def blocker_link(**changes: object) -> Link:
    desired = desired_blocker(event(), IN)
    base = Link(room=ROOM, origin="outlook", anny_id="blk1", event_id="AAMk/+=", event_change_key="ck1",
                fingerprint=desired.fingerprint)
    return replace(base, **changes)


# --- anny → Outlook ---------------------------------------------------------------------------------


def test_new_booking_in_a_mapped_room_creates_a_mirror_event() -> None:
    [action] = decide_booking(booking(), ROOM, None, OUT)
    assert isinstance(action, CreateEvent) and action.room == ROOM and action.generation == 0
    assert action.desired.subject == "Meeting room · anny #1001"
    assert action.desired.start == T0


def test_title_template_never_needs_customer_data() -> None:
    ctx = replace(OUT, title_template="{resource}: {service} ({status})")
    desired = desired_event(booking(resource_name="Room A", status="accepted"), ctx)
    assert desired.subject == "Room A: Meeting room (accepted)"


def test_unchanged_booking_costs_nothing() -> None:
    assert isinstance(decide_booking(booking(), ROOM, mirror_link(), OUT)[0], Skip)


@pytest.mark.parametrize("change", [{"start": T0 + timedelta(hours=2), "end": T0 + timedelta(hours=3)},
                                    {"service_name": "Board room"}, {"number": "1002"}])
def test_moved_or_retitled_booking_updates_the_event(change: dict) -> None:
    [action] = decide_booking(booking(**change), ROOM, mirror_link(), OUT)
    assert isinstance(action, UpdateEvent) and action.event_id == "E1"


@pytest.mark.parametrize("gone", [None, booking(status="canceled"), booking(canceled=True),
                                  booking(is_series_master=True)])
def test_cancelled_deleted_or_master_booking_removes_the_event(gone: AnnyBooking | None) -> None:
    assert decide_booking(gone, ROOM, mirror_link(), OUT) == [DeleteEvent(ROOM, "E1"), ForgetLink()]


def test_series_master_is_never_mirrored() -> None:
    assert isinstance(decide_booking(booking(is_series_master=True), ROOM, None, OUT)[0], Skip)


def test_booking_moved_to_an_unmapped_resource_removes_the_event() -> None:
    assert decide_booking(booking(), None, mirror_link(), OUT) == [DeleteEvent(ROOM, "E1"), ForgetLink()]


def test_booking_of_an_unmapped_resource_is_a_no_op() -> None:
    assert isinstance(decide_booking(booking(), None, None, OUT)[0], Skip)


def test_booking_moved_to_another_room_moves_the_event() -> None:
    actions = decide_booking(booking(), "other@contoso.example", mirror_link(generation=2), OUT)
    assert actions[0] == DeleteEvent(ROOM, "E1")
    assert isinstance(actions[1], CreateEvent) and actions[1].generation == 3


def test_outside_the_window_is_ignored_unless_linked() -> None:
    later = booking(start=T0 + timedelta(days=400), end=T0 + timedelta(days=400, hours=1))
    assert isinstance(decide_booking(later, ROOM, None, OUT)[0], Skip)
    assert isinstance(decide_booking(later, ROOM, mirror_link(), OUT)[0], UpdateEvent)


def test_person_made_blocker_is_mirrored_with_the_blocker_title() -> None:
    [action] = decide_booking(booking(is_blocker=True, service_name=""), ROOM, None, OUT)
    assert isinstance(action, CreateEvent) and action.desired.subject == "Blocked in anny"


def test_our_own_blocker_is_never_mirrored_back_even_before_its_link_exists() -> None:
    ours = booking(is_blocker=True, note=f"{BLOCKER_MARKER}abc]")
    assert isinstance(decide_booking(ours, ROOM, None, OUT)[0], Skip)
    assert isinstance(decide_booking(ours, ROOM, blocker_link(), OUT)[0], Skip)


def test_anny_deletion_of_our_blocker_is_remembered_once() -> None:
    assert decide_booking(None, ROOM, blocker_link(), OUT) == [SuppressBlocker()]
    assert isinstance(decide_booking(None, ROOM, blocker_link(suppressed=True), OUT)[0], Skip)


def test_pending_link_of_a_cancelled_booking_looks_for_the_unrecorded_event() -> None:
    pending = Link(room=ROOM, origin="anny", anny_id="b1", state="pending")
    assert decide_booking(None, ROOM, pending, OUT) == [DeleteUnrecordedEvent(ROOM, "b1"), ForgetLink()]
    actions = decide_booking(booking(), "other@contoso.example", pending, OUT)
    assert actions[0] == DeleteUnrecordedEvent(ROOM, "b1") and isinstance(actions[1], CreateEvent)


def test_pending_link_retries_the_create_with_the_same_generation() -> None:
    pending = Link(room=ROOM, origin="anny", anny_id="b1", state="pending", generation=4)
    [action] = decide_booking(booking(), ROOM, pending, OUT)
    assert isinstance(action, CreateEvent) and action.generation == 4


def test_outlook_edit_is_undone_but_our_echo_is_free() -> None:
    desired = desired_event(booking(), OUT)
    assert isinstance(decide_booking(booking(), ROOM, mirror_link(), OUT, observed="edited")[0], UpdateEvent)
    assert isinstance(decide_booking(booking(), ROOM, mirror_link(), OUT, observed="")[0], UpdateEvent)
    stale = mirror_link(fingerprint="older write")
    assert isinstance(decide_booking(booking(), ROOM, stale, OUT, observed=desired.fingerprint)[0], Skip)


# --- Outlook → anny ---------------------------------------------------------------------------------


def test_new_meeting_becomes_a_blocker_with_its_subject() -> None:
    [action] = decide_event(event(), None, IN)
    assert isinstance(action, CreateBlocker) and action.desired.title == "Team sync"


@pytest.mark.parametrize("sensitivity", ["private", "confidential"])
def test_private_meetings_get_a_neutral_title(sensitivity: str) -> None:
    [action] = decide_event(event(sensitivity=sensitivity), None, IN)
    assert action.desired.title == "Busy in Outlook"


def test_neutral_title_setting_applies_to_all() -> None:
    [action] = decide_event(event(), None, replace(IN, neutral_titles=True))
    assert action.desired.title == "Busy in Outlook"


def test_all_day_event_blocks_whole_days_in_the_resource_zone() -> None:
    day = datetime(2026, 12, 3, tzinfo=UTC)
    [action] = decide_event(event(is_all_day=True, start=day, end=day + timedelta(days=2)), None, IN)
    assert action.desired.start == datetime(2026, 12, 3, tzinfo=BERLIN)
    assert action.desired.end == datetime(2026, 12, 5, tzinfo=BERLIN)


def test_free_events_block_only_when_configured() -> None:
    assert isinstance(decide_event(event(show_as="free"), None, IN)[0], CreateBlocker)
    busy_only = replace(IN, blocking_show_as=frozenset({"busy"}))
    assert isinstance(decide_event(event(show_as="free"), None, busy_only)[0], Skip)
    assert decide_event(event(show_as="free"), blocker_link(), busy_only) == [DeleteBlocker("blk1"), ForgetLink()]


def test_cancelled_meeting_removes_its_blocker() -> None:
    assert decide_event(event(is_cancelled=True), blocker_link(), IN) == [DeleteBlocker("blk1"), ForgetLink()]
    assert isinstance(decide_event(event(is_cancelled=True), None, IN)[0], Skip)


def test_removed_linked_event_is_looked_up_before_anything_is_deleted() -> None:
    assert decide_event(OutlookEvent(id="AAMk/+=", removed=True), blocker_link(), IN) == [CheckRemoved("AAMk/+=")]
    assert decide_removed_event(None, blocker_link(), IN) == [DeleteBlocker("blk1"), ForgetLink()]
    moved = event(start=T0 + timedelta(days=300), end=T0 + timedelta(days=300, hours=1), change_key="ck2")
    assert isinstance(decide_removed_event(moved, blocker_link(), IN)[0], UpdateBlocker)


def test_series_master_never_blocks_and_a_single_made_recurring_gives_its_blocker_up() -> None:
    master = event(type="seriesMaster", change_key="ck2")
    assert isinstance(decide_event(master, None, IN)[0], Skip)
    assert decide_event(master, blocker_link(), IN) == [DeleteBlocker("blk1"), ForgetLink()]
    assert decide_removed_event(master, blocker_link(), IN) == [DeleteBlocker("blk1"), ForgetLink()]


def test_removed_unlinked_event_is_nothing() -> None:
    assert isinstance(decide_event(OutlookEvent(id="x", removed=True), None, IN)[0], Skip)


def test_moved_meeting_moves_its_blocker_and_duplicates_cost_nothing() -> None:
    moved = event(start=T0 + timedelta(hours=4), end=T0 + timedelta(hours=5), change_key="ck2")
    [action] = decide_event(moved, blocker_link(), IN)
    assert isinstance(action, UpdateBlocker) and action.anny_id == "blk1"
    assert isinstance(decide_event(event(change_key="ck9"), blocker_link(), IN)[0], Skip)


def test_meeting_outside_the_window_is_ignored_when_new() -> None:
    far = event(start=T0 + timedelta(days=400), end=T0 + timedelta(days=400, hours=1))
    assert isinstance(decide_event(far, None, IN)[0], Skip)


def test_anny_side_deletion_is_respected_until_the_event_changes() -> None:
    suppressed = blocker_link(suppressed=True)
    assert isinstance(decide_event(event(), suppressed, IN)[0], Skip)
    assert isinstance(decide_event(event(change_key="ck2"), suppressed, IN)[0], CreateBlocker)
    assert decide_removed_event(None, suppressed, IN) == [ForgetLink()]


def test_mirror_event_never_becomes_a_blocker() -> None:
    desired = desired_event(booking(), OUT)
    echo = event(id="E1", subject=desired.subject, categories=("anny",), change_key="new")
    assert isinstance(decide_event(echo, mirror_link(), IN)[0], Skip)
    assert isinstance(decide_event(echo, None, IN, is_ours=True)[0], Skip)


def test_outlook_edit_or_delete_of_a_mirror_event_restores_it_from_anny() -> None:
    edited = event(id="E1", subject="hijacked")
    assert decide_event(edited, mirror_link(), IN) == [RestoreMirror("b1", edited.mirror_fingerprint())]
    assert decide_event(OutlookEvent(id="E1", removed=True), mirror_link(), IN) == [CheckRemoved("E1")]
    assert decide_removed_event(None, mirror_link(), IN) == [RestoreMirror("b1", "")]
    untouched = event(id="E1", subject=desired_event(booking(), OUT).subject, change_key="ck7", categories=("anny",))
    assert isinstance(decide_removed_event(untouched, mirror_link(), IN)[0], Skip)


@pytest.mark.parametrize("edit", [{"categories": ()}, {"show_as": "free"}, {"show_as": "tentative"},
                                  {"has_attendees": True}, {"is_reminder_on": True}])
def test_any_outlook_edit_of_what_a_mirror_event_is_restores_it(edit: dict) -> None:
    untouched = event(id="E1", subject=desired_event(booking(), OUT).subject, categories=("anny",))
    assert isinstance(decide_event(untouched, mirror_link(), IN)[0], Skip)
    edited = replace(untouched, **edit)
    assert decide_event(edited, mirror_link(), IN) == [RestoreMirror("b1", edited.mirror_fingerprint())]


# --- reactivation: items created while the integration was off stay unsynced (issue 13) -------------

OFF = ((T0 - timedelta(days=3), T0 - timedelta(days=1)),)


@pytest.mark.parametrize(("created", "synced"), [
    (T0 - timedelta(days=5), True),  # before the deactivation
    (T0 - timedelta(days=2), False),  # while off
    (T0 - timedelta(days=1), True),  # the moment of reactivation and after
    (None, True),  # unknown: never dropped silently
])
def test_new_items_created_while_off_stay_unsynced(created: datetime | None, synced: bool) -> None:
    out = decide_booking(booking(created_at=created), ROOM, None, replace(OUT, off_periods=OFF))
    inbound = decide_event(event(created=created), None, replace(IN, off_periods=OFF))
    assert isinstance(out[0], CreateEvent) is synced and isinstance(inbound[0], CreateBlocker) is synced
    if not synced:
        assert out == [Skip(CREATED_WHILE_OFF)] and inbound == [Skip(CREATED_WHILE_OFF)]


def test_linked_items_created_while_off_keep_syncing_their_changes() -> None:
    created = T0 - timedelta(days=2)
    moved = booking(created_at=created, start=T0 + timedelta(hours=2), end=T0 + timedelta(hours=3))
    assert isinstance(decide_booking(moved, ROOM, mirror_link(), replace(OUT, off_periods=OFF))[0], UpdateEvent)
    renamed = event(created=created, subject="Renamed", change_key="ck2")
    assert isinstance(decide_event(renamed, blocker_link(), replace(IN, off_periods=OFF))[0], UpdateBlocker)


# --- the delta query window ---------------------------------------------------------------------------


def test_the_delta_window_holds_the_sync_window_and_changes_only_with_the_month() -> None:
    from sync.model import delta_query_window

    zone = ZoneInfo("Europe/Berlin")
    previous = None
    changes = 0
    for offset in range(366):
        day = date(2027, 1, 1) + timedelta(days=offset)
        window = SyncWindow.starting(day, 6, zone)
        query = delta_query_window(window, 6)
        assert query.start <= window.start and window.end <= query.end
        assert (query.end - query.start).days <= 1825  # Graph refuses longer calendarView ranges
        if previous is not None and query != previous:
            assert day.day == 1  # a new baseline once a month, never on another day
            changes += 1
        previous = query
    assert changes == 12  # 2027-02-01 … 2028-01-01
