"""Time zones and Graph's date-time formats.

Events store UTC instants plus the zone names they were written in; they are rendered
as `{"dateTime": "2026-11-24T09:00:00.0000000", "timeZone": <name>}` in the event's own
zone or in the zone asked for with `Prefer: outlook.timezone="…"`. Zone names may be IANA
names or the Windows names Exchange uses.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import GraphError, bad_request

WINDOWS_ZONES: dict[str, str] = {
    "UTC": "UTC",
    "Coordinated Universal Time": "UTC",
    "GMT Standard Time": "Europe/London",
    "Greenwich Standard Time": "Atlantic/Reykjavik",
    "W. Europe Standard Time": "Europe/Berlin",
    "Romance Standard Time": "Europe/Paris",
    "Central Europe Standard Time": "Europe/Budapest",
    "Central European Standard Time": "Europe/Warsaw",
    "E. Europe Standard Time": "Europe/Chisinau",
    "FLE Standard Time": "Europe/Kyiv",
    "GTB Standard Time": "Europe/Bucharest",
    "Russian Standard Time": "Europe/Moscow",
    "Eastern Standard Time": "America/New_York",
    "Central Standard Time": "America/Chicago",
    "Mountain Standard Time": "America/Denver",
    "Pacific Standard Time": "America/Los_Angeles",
    "India Standard Time": "Asia/Kolkata",
    "China Standard Time": "Asia/Shanghai",
    "Tokyo Standard Time": "Asia/Tokyo",
    "AUS Eastern Standard Time": "Australia/Sydney",
}
_WINDOWS_BY_LOWER = {name.lower(): iana for name, iana in WINDOWS_ZONES.items()}


def zone(name: str) -> ZoneInfo:
    """The zone for an IANA or (known) Windows name; 400 TimeZoneNotSupportedException else."""
    iana = _WINDOWS_BY_LOWER.get(name.strip().lower(), name.strip())
    try:
        return ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError):
        raise GraphError(
            400,
            "TimeZoneNotSupportedException",
            f"A valid TimeZone value must be specified. The following TimeZone value is not supported: '{name}'.",
        ) from None


def is_known_zone(name: str) -> bool:
    try:
        zone(name)
    except GraphError:
        return False
    return True


def parse_datetime(text: str) -> datetime:
    """Parse Graph/ISO date-times (7 fraction digits, optional `Z` or offset)."""
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        raise bad_request(f"Cannot convert the literal '{text}' to the expected type 'Edm.DateTimeOffset'.") from None


def local_to_instant(text: str, zone_name: str) -> datetime:
    """A `{dateTime, timeZone}` pair as a UTC instant (an explicit offset in the text wins)."""
    parsed = parse_datetime(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone(zone_name))
    return parsed.astimezone(UTC)


def instant(text: str) -> datetime:
    """A query-string instant (startDateTime/endDateTime): naive values are UTC."""
    parsed = parse_datetime(text)
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def graph_local(moment: datetime, zone_name: str) -> dict[str, str]:
    """`{dateTime, timeZone}` for an instant shown in a zone."""
    local = moment.astimezone(zone(zone_name))
    return {"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.") + f"{local.microsecond:06d}0", "timeZone": zone_name}


def graph_floating(day: date, zone_name: str) -> dict[str, str]:
    """Midnight of a calendar day, shown in any zone (all-day events float)."""
    return {"dateTime": datetime.combine(day, time()).strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": zone_name}


def graph_utc(moment: datetime) -> str:
    """`2026-11-24T09:00:00.1234567Z`: how Graph writes createdDateTime and friends."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond:06d}0Z"


def graph_offset(moment: datetime) -> str:
    """`2026-11-24T09:00:00.1234567+00:00`: subscriptionExpirationDateTime in notifications."""
    return graph_utc(moment)[:-1] + "+00:00"


def day_start(day: date, zone_name: str) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone(zone_name)).astimezone(UTC)
