"""Event JSON in and out: validate request bodies, build stored events, render instances."""

from __future__ import annotations

import copy
import re
import urllib.parse
from datetime import datetime, timedelta

from . import recurrence
from .errors import GraphError, bad_request
from .ids import new_change_key
from .model import ExceptionOccurrence, Instance, Mailbox, StoredEvent, Timing
from .timefmt import graph_floating, graph_local, graph_utc, local_to_instant, zone

# Every property of microsoft.graph.event (msgraph-sdk 1.65 model).
EVENT_PROPERTIES = frozenset(
    "allowNewTimeProposals attachments attendees body bodyPreview calendar cancelledOccurrences categories "
    "changeKey createdDateTime end exceptionOccurrences extensions hasAttachments hideAttendees iCalUId id "
    "importance instances isAllDay isCancelled isDraft isOnlineMeeting isOrganizer isReminderOn "
    "lastModifiedDateTime location locations multiValueExtendedProperties onlineMeeting onlineMeetingProvider "
    "onlineMeetingUrl organizer originalEndTimeZone originalStart originalStartTimeZone recurrence "
    "reminderMinutesBeforeStart responseRequested responseStatus sensitivity seriesMasterId showAs "
    "singleValueExtendedProperties start subject transactionId type webLink".split()
)
# Set by the server; ignored when a client sends them.
COMPUTED = frozenset(
    "attachments bodyPreview calendar cancelledOccurrences changeKey createdDateTime exceptionOccurrences "
    "extensions hasAttachments iCalUId id instances isCancelled isOrganizer lastModifiedDateTime "
    "multiValueExtendedProperties onlineMeeting onlineMeetingUrl originalEndTimeZone originalStart "
    "originalStartTimeZone responseStatus seriesMasterId type webLink".split()
)
TIMING = frozenset({"start", "end", "isAllDay"})
PASSTHROUGH = EVENT_PROPERTIES - COMPUTED - TIMING - {"singleValueExtendedProperties"}
ENUMS = {
    "showAs": ("free", "tentative", "busy", "oof", "workingElsewhere", "unknown"),
    "sensitivity": ("normal", "personal", "private", "confidential"),
    "importance": ("low", "normal", "high"),
}
DEFAULTS = {
    "subject": "",
    "body": {"contentType": "html", "content": ""},
    "importance": "normal",
    "sensitivity": "normal",
    "showAs": "busy",
    "isCancelled": False,
    "isReminderOn": True,
    "reminderMinutesBeforeStart": 15,
    "responseRequested": True,
    "allowNewTimeProposals": True,
    "hideAttendees": False,
    "isOnlineMeeting": False,
    "onlineMeetingProvider": "unknown",
    "isDraft": False,
    "categories": [],
    "attendees": [],
    "location": {"displayName": "", "locationType": "default", "uniqueIdType": "unknown"},
    "locations": [],
    "recurrence": None,
    "transactionId": None,
}
_TAGS = re.compile(r"<[^>]+>")


def check_body(body: object, *, creating: bool) -> dict:
    """400 for what Graph's OData reader refuses: non-objects, unknown properties, bad enums."""
    if not isinstance(body, dict):
        raise bad_request("Empty Payload. JSON content expected.", "RequestBodyRead")
    for name, value in body.items():
        if name.startswith("@odata."):
            continue
        if name not in EVENT_PROPERTIES:
            raise bad_request(
                f"The property '{name}' does not exist on type 'microsoft.graph.event'. Make sure to only use "
                "property names that are defined by the type or mark the type as open type.",
                "RequestBodyRead",
            )
        if name in ENUMS and value not in ENUMS[name]:
            raise bad_request(f"Requested value '{value}' was not found.", "RequestBodyRead")
    if "categories" in body and not all(isinstance(c, str) for c in body["categories"] or []):
        raise bad_request("categories must be a collection of strings.", "RequestBodyRead")
    if body.get("recurrence") is not None:
        recurrence.validate(body["recurrence"])
    if creating and not ("start" in body and "end" in body):
        raise GraphError(400, "ErrorPropertyValidationFailure", "At least one property failed validation.")
    return body


def _moment(value: object, name: str) -> tuple[datetime, str]:
    if not isinstance(value, dict) or not value.get("dateTime") or not value.get("timeZone"):
        raise bad_request(f"'{name}' needs both dateTime and timeZone.", "ErrorInvalidRequest")
    zone(value["timeZone"])
    return local_to_instant(value["dateTime"], value["timeZone"]), value["timeZone"]


def timing_from(body: dict, current: Timing | None) -> Timing:
    """The timing a create or a patch asks for; all-day events must run midnight to midnight."""
    start, start_tz = _moment(body["start"], "start") if "start" in body else (current.start, current.start_tz)
    end, end_tz = _moment(body["end"], "end") if "end" in body else (current.end, current.end_tz)
    all_day = bool(body.get("isAllDay", current.all_day if current else False))
    if end < start:
        raise bad_request("The end time of the event must be after its start time.", "ErrorInvalidRequest")
    if all_day and not _whole_days(start, start_tz, end, end_tz):
        raise GraphError(400, "ErrorPropertyValidationFailure", "At least one property failed validation.")
    return Timing(start=start, end=end, start_tz=start_tz, end_tz=end_tz, all_day=all_day)


def _whole_days(start: datetime, start_tz: str, end: datetime, end_tz: str) -> bool:
    local_start, local_end = start.astimezone(zone(start_tz)), end.astimezone(zone(end_tz))
    midnight = all(moment.time() == datetime.min.time() for moment in (local_start, local_end))
    return midnight and local_end.date() - local_start.date() >= timedelta(days=1)


def extended_from(body: dict) -> dict[str, tuple[str, str]]:
    """singleValueExtendedProperties of a body, keyed by lower-cased id."""
    found = {}
    for prop in body.get("singleValueExtendedProperties") or []:
        if not isinstance(prop, dict) or not prop.get("id") or "value" not in prop:
            raise bad_request("Each singleValueExtendedProperty needs an id and a value.", "ErrorInvalidRequest")
        found[str(prop["id"]).lower()] = (str(prop["id"]), str(prop["value"]))
    return found


def props_from(body: dict) -> dict:
    return {name: copy.deepcopy(value) for name, value in body.items() if name in PASSTHROUGH}


def new_event(event_id: str, body: dict, mailbox: Mailbox, now: datetime) -> StoredEvent:
    props = {**copy.deepcopy(DEFAULTS), "organizer": mailbox.organizer(), **props_from(body)}
    return StoredEvent(
        id=event_id,
        timing=timing_from(body, None),
        props=props,
        change_key=new_change_key(),
        created=now,
        last_modified=now,
        extended=extended_from(body),
    )


def patch_event(event: StoredEvent, body: dict, now: datetime) -> None:
    """Apply a PATCH; a changed pattern or series time drops the series' exceptions, as Outlook does."""
    timing = timing_from(body, event.timing)
    reshaped = timing != event.timing or ("recurrence" in body and body["recurrence"] != event.recurrence)
    if event.is_series and reshaped:
        event.exceptions.clear()
        event.deleted_occurrences.clear()
    event.timing = timing
    event.props.update({name: value for name, value in props_from(body).items() if name != "transactionId"})
    event.extended.update(extended_from(body))
    touch(event, now)


def touch(item: StoredEvent | ExceptionOccurrence, now: datetime) -> None:
    item.change_key = new_change_key()
    item.last_modified = now


def render(inst: Instance, mailbox: Mailbox, tz: str | None, expand: list[str] | None = None) -> dict:
    """An instance as Graph returns it: times in `tz` (or the event's own zones)."""
    props = inst.props
    body = props.get("body") or {}
    start_tz, end_tz = (tz, tz) if tz else (inst.timing.start_tz, inst.timing.end_tz)
    data = {
        "@odata.etag": f'W/"{inst.change_key}"',
        "id": inst.id,
        "createdDateTime": graph_utc(inst.created),
        "lastModifiedDateTime": graph_utc(inst.last_modified),
        "changeKey": inst.change_key,
        "categories": props.get("categories") or [],
        "transactionId": props.get("transactionId"),
        "originalStartTimeZone": inst.original_tz[0],
        "originalEndTimeZone": inst.original_tz[1],
        "iCalUId": inst.ical_uid,
        "reminderMinutesBeforeStart": props.get("reminderMinutesBeforeStart"),
        "isReminderOn": props.get("isReminderOn"),
        "hasAttachments": False,
        "subject": props.get("subject"),
        "bodyPreview": _TAGS.sub("", body.get("content") or "").strip()[:255],
        "importance": props.get("importance"),
        "sensitivity": props.get("sensitivity"),
        "isAllDay": inst.timing.all_day,
        "isCancelled": bool(props.get("isCancelled")),
        "isOrganizer": _is_organizer(props, mailbox),
        "responseRequested": props.get("responseRequested"),
        "seriesMasterId": inst.series_master_id,
        "showAs": props.get("showAs"),
        "type": inst.type,
        "webLink": _web_link(inst.id),
        "onlineMeetingUrl": None,
        "isOnlineMeeting": props.get("isOnlineMeeting"),
        "onlineMeetingProvider": props.get("onlineMeetingProvider"),
        "allowNewTimeProposals": props.get("allowNewTimeProposals"),
        "isDraft": props.get("isDraft"),
        "hideAttendees": props.get("hideAttendees"),
        "responseStatus": _response_status(props, mailbox),
        "body": body,
        "start": _shown(inst.timing, inst.timing.start, start_tz),
        "end": _shown(inst.timing, inst.timing.end, end_tz),
        "location": props.get("location"),
        "locations": props.get("locations") or [],
        "recurrence": props.get("recurrence") if inst.type == "seriesMaster" else None,
        "attendees": props.get("attendees") or [],
        "organizer": props.get("organizer"),
        "onlineMeeting": None,
    }
    if inst.original_start is not None:
        data["originalStart"] = graph_utc(inst.original_start)
    if expand is not None:
        data["singleValueExtendedProperties"] = _expanded(inst, expand)
    return data


def _shown(timing: Timing, moment: datetime, tz: str) -> dict:
    if timing.all_day:
        return graph_floating(moment.astimezone(zone(timing.start_tz)).date(), tz)
    return graph_local(moment, tz)


def _expanded(inst: Instance, wanted: list[str]) -> list[dict]:
    """The extended properties asked for by id ([] means all of them)."""
    keys = [key.lower() for key in wanted] or list(inst.extended)
    chosen = [inst.extended[key] for key in keys if key in inst.extended]
    return [{"id": prop_id, "value": value} for prop_id, value in chosen]


def _is_organizer(props: dict, mailbox: Mailbox) -> bool:
    address = ((props.get("organizer") or {}).get("emailAddress") or {}).get("address") or ""
    return address.lower() == mailbox.key


def _response_status(props: dict, mailbox: Mailbox) -> dict:
    response = "organizer" if _is_organizer(props, mailbox) else "accepted"
    return {"response": response, "time": "0001-01-01T00:00:00Z"}


def _web_link(item_id: str) -> str:
    quoted = urllib.parse.quote(item_id, safe="")
    return f"https://outlook.office365.com/owa/?itemid={quoted}&exvsurl=1&path=/calendar/item"


def stored_view(event: StoredEvent, mailbox: Mailbox) -> dict:
    """Raw stored form for the control API: UTC times, every extended property, exceptions."""
    data = render(event.as_instance(), mailbox, "UTC", expand=[])
    exceptions = (event.instance_at(moment) for moment in sorted(event.exceptions))
    data["exceptions"] = [render(inst, mailbox, "UTC") for inst in exceptions if inst is not None]
    data["deletedOccurrences"] = [graph_utc(moment) for moment in sorted(event.deleted_occurrences)]
    return data
