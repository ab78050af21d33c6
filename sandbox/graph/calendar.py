"""Calendar operations on one mailbox; each write returns the changes it made (for notifications)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from .errors import bad_request, item_not_found
from .eventbody import new_event, patch_event, props_from, timing_from, touch
from .ids import new_change_key, new_event_id, occurrence_id, parse_occurrence_id
from .model import ExceptionOccurrence, Instance, Mailbox, StoredEvent
from .timefmt import parse_datetime, zone

MAX_VIEW_DAYS = 1825


@dataclass(frozen=True)
class Change:
    """One event change as a subscription sees it."""

    mailbox: Mailbox
    event_id: str
    change_type: str  # created | updated | deleted
    change_key: str


def create(mailbox: Mailbox, body: dict, now: datetime) -> tuple[StoredEvent, list[Change]]:
    """Create an event; a known transactionId returns the event it created before."""
    transaction = body.get("transactionId")
    known = mailbox.events.get(mailbox.transactions.get(transaction, "")) if transaction else None
    if known is not None:
        return known, []
    event = new_event(new_event_id(), body, mailbox, now)
    mailbox.events[event.id] = event
    if transaction:
        mailbox.transactions[transaction] = event.id
    return event, [Change(mailbox, event.id, "created", event.change_key)]


def resolve(mailbox: Mailbox, item_id: str) -> tuple[StoredEvent, datetime | None]:
    """The stored event behind an id, plus the original start when the id names an occurrence."""
    if item_id in mailbox.events:
        return mailbox.events[item_id], None
    parsed = parse_occurrence_id(item_id)
    series = mailbox.events.get(parsed[0]) if parsed else None
    if series is None or not series.is_series or parsed is None:
        raise item_not_found()
    original = parsed[1]
    known = original in series.exceptions or series.has_occurrence(original)
    if not known or original in series.deleted_occurrences:
        raise item_not_found()
    return series, original


def instance(mailbox: Mailbox, item_id: str) -> Instance:
    event, original = resolve(mailbox, item_id)
    found = event.as_instance() if original is None else event.instance_at(original)
    if found is None:
        raise item_not_found()
    return found


def update(mailbox: Mailbox, item_id: str, body: dict, now: datetime) -> tuple[Instance, list[Change]]:
    """PATCH an event, a series (all occurrences) or one occurrence (which becomes an exception)."""
    event, original = resolve(mailbox, item_id)
    if original is None:
        patch_event(event, body, now)
        return event.as_instance(), [Change(mailbox, event.id, "updated", event.change_key)]
    if "recurrence" in body:
        raise bad_request("An occurrence of a series cannot have a recurrence.", "ErrorInvalidRequest")
    edit_occurrence(event, original, body, now)
    return instance(mailbox, item_id), [Change(mailbox, event.id, "updated", event.change_key)]


def edit_occurrence(series: StoredEvent, original: datetime, body: dict, now: datetime) -> None:
    exception = series.exceptions.get(original)
    timing = timing_from(body, exception.timing if exception else series.occurrence_timing(original))
    if exception is None:
        exception = ExceptionOccurrence(original, timing, {}, new_change_key(), now, now)
        series.exceptions[original] = exception
    exception.timing = timing
    exception.props.update(props_from(body))
    touch(exception, now)


def delete(mailbox: Mailbox, item_id: str) -> list[Change]:
    """Delete an event or series; deleting an occurrence id removes just that occurrence."""
    event, original = resolve(mailbox, item_id)
    if original is None:
        del mailbox.events[event.id]
        return [Change(mailbox, event.id, "deleted", event.change_key)]
    event.exceptions.pop(original, None)
    event.deleted_occurrences.add(original)
    return [Change(mailbox, event.id, "updated", event.change_key)]


def masters_and_singles(mailbox: Mailbox) -> list[Instance]:
    """What `/events` lists: single instances and series masters, never occurrences."""
    events = sorted(mailbox.events.values(), key=lambda e: (e.timing.start, e.created))
    return [event.as_instance() for event in events]


def view(mailbox: Mailbox, start: datetime, end: datetime) -> list[Instance]:
    """What `calendarView` shows in [start, end): singles, occurrences and exceptions, no masters."""
    found: list[Instance] = []
    for event in mailbox.events.values():
        if event.is_series:
            found.extend(event.instances(start, end))
        elif event.timing.overlaps(start, end):
            found.append(event.as_instance())
    return sorted(found, key=lambda inst: (inst.timing.start, inst.id))


def check_window(start: datetime, end: datetime) -> None:
    if end < start:
        raise bad_request("The end of the time window must not be before its start.", "ErrorInvalidParameter")
    if end - start > timedelta(days=MAX_VIEW_DAYS):
        raise bad_request(
            f"The time window between StartDateTime and EndDateTime must not exceed {MAX_VIEW_DAYS} days.",
            "ErrorInvalidParameter",
        )


def cancel(mailbox: Mailbox, item_id: str, now: datetime) -> list[Change]:
    """Mark an event, a series or one occurrence as cancelled; it stays on the calendar."""
    event, original = resolve(mailbox, item_id)
    if original is None:
        event.props["isCancelled"] = True
        touch(event, now)
    else:
        edit_occurrence(event, original, {}, now)
        event.exceptions[original].props["isCancelled"] = True
    return [Change(mailbox, event.id, "updated", event.change_key)]


def occurrence_of(series: StoredEvent, when: object) -> str:
    """The id of a series' occurrence named by an occurrence id, a date (its local day), or a
    start time (aware, or naive wall time in the series' zone)."""
    if isinstance(when, str) and parse_occurrence_id(when):
        return when
    if not series.is_series:
        raise bad_request("The event is not a recurring series.")
    series_zone = zone(series.recurrence_zone)
    day = _as_day(when)
    if day is not None:
        later = datetime.combine(day + timedelta(days=2), datetime.min.time(), tzinfo=series_zone)
        starts = [m for m in series.original_starts(later) if m.astimezone(series_zone).date() == day]
        if not starts:
            raise item_not_found(f"The series has no occurrence on {day}.")
        return occurrence_id(series.id, starts[0])
    moment = when if isinstance(when, datetime) else parse_datetime(str(when))
    moment = moment if moment.tzinfo else moment.replace(tzinfo=series_zone)
    return occurrence_id(series.id, moment.astimezone(UTC))


def _as_day(when: object) -> date | None:
    if isinstance(when, date) and not isinstance(when, datetime):
        return when
    if isinstance(when, str) and len(when.strip()) == 10:
        return date.fromisoformat(when.strip())
    return None
