"""Which anny webhook deliveries were processed already (`event_id` is anny's idempotency key).

A delivery whose payload carries a complete booking snapshot needs no record: a redelivery
is decided on that payload against the link's fingerprint and costs neither a write nor an
anny read (`decide.payload_suffices`). Only a delivery without a snapshot, whose redelivery
would read the booking from anny again, is recorded in the `events` table. Besides, each
process remembers the event ids it processed, so a redelivery reaching the same instance is
answered as a duplicate without a Table read.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import timedelta

from sync.state import ProcessedEvents

MAX_REMEMBERED = 20_000
_remembered: OrderedDict[str, float] = OrderedDict()  # event id → monotonic expiry


def remember(event_id: str, keep: timedelta) -> None:
    _remembered[event_id] = time.monotonic() + keep.total_seconds()
    _remembered.move_to_end(event_id)
    while len(_remembered) > MAX_REMEMBERED:
        _remembered.popitem(last=False)


def seen_here(event_id: str) -> bool:
    expiry = _remembered.get(event_id)
    return expiry is not None and expiry > time.monotonic()


async def is_processed(events: ProcessedEvents, event_id: str, has_snapshot: bool) -> bool:
    """At the door: processed here, or (without a snapshot) recorded as processed."""
    return seen_here(event_id) or (not has_snapshot and await events.is_processed(event_id))


async def mark_processed(events: ProcessedEvents, event_id: str, has_snapshot: bool, keep: timedelta) -> None:
    """After the work: remembered here; recorded in the table only where a redelivery is not free."""
    remember(event_id, keep)
    if not has_snapshot:
        await events.mark_processed(event_id, keep)
