"""Backfill work items: what a baseline queues, and what the worker makes of an item's span."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sync.model import OutlookEvent
from sync.work import (
    EVENTS_PER_BACKFILL_ITEM,
    BookingWork,
    EventsBackfill,
    backfill_items,
    decode,
    encode,
    outages_of,
    span_of,
)

ROOM = "room.alpha@contoso.example"
DAY = datetime(2026, 12, 7, tzinfo=UTC)


def event(n: int, hours: int) -> OutlookEvent:
    return OutlookEvent(id=f"e{n}", start=DAY + timedelta(hours=hours), end=DAY + timedelta(hours=hours, minutes=30))


def test_a_baselines_events_are_queued_in_order_of_start_each_item_with_the_span_its_events_lie_in() -> None:
    events = [event(n, hours=(7 * n) % 25) for n in range(25)]  # as delta hands them out: in no order
    items = backfill_items(ROOM, events)
    assert [len(item.event_ids) for item in items] == [10, 10, 5] and EVENTS_PER_BACKFILL_ITEM == 10
    by_id = {e.id: e for e in events}
    for item in items:
        starts = [by_id[i].start for i in item.event_ids]
        assert starts == sorted(starts)
        span = span_of(decode(encode(item)))  # as the worker reads it from the queue
        assert span is not None
        assert span.start == min(starts) and span.end == max(by_id[i].end for i in item.event_ids)
    assert max(by_id[i].start for i in items[0].event_ids) <= min(by_id[i].start for i in items[1].event_ids)


def test_an_item_without_a_usable_span_has_its_events_read_one_by_one() -> None:
    assert span_of(decode(encode(EventsBackfill(ROOM, ("e1",))))) is None  # queued before spans existed
    assert span_of(EventsBackfill(ROOM, ("e1",), "not a time", DAY.isoformat())) is None
    assert span_of(EventsBackfill(ROOM, ("e1",), "2026-12-07T08:00:00", "2026-12-07T09:00:00")) is None  # no zone
    assert span_of(EventsBackfill(ROOM, ("e1",), DAY.isoformat(), DAY.isoformat())) is None  # empty
    assert span_of(EventsBackfill(ROOM, ("e1",), DAY.isoformat(), (DAY - timedelta(hours=1)).isoformat())) is None
    undated = OutlookEvent(id="e9")
    [item] = backfill_items(ROOM, [event(1, 8), undated])
    assert set(item.event_ids) == {"e1", "e9"} and span_of(item) is None


def test_an_item_put_back_after_an_outage_keeps_its_count_and_stays_the_same_item():
    work = BookingWork("50012", "evt-1")
    assert decode(encode(work, outages=3)) == work and outages_of(encode(work, outages=3)) == 3
    assert outages_of(encode(work)) == 0 and "outages" not in encode(work)  # as items were written before
    assert outages_of(b"not json") == 0
