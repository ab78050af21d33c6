"""Identifiers shaped like Exchange's.

Event ids are standard base64 (so they contain `/`, `+` and `=`, as Graph's do and as
the product must survive in URLs and storage keys). Occurrence ids are derived from the
series id and the occurrence's original start, so they are deterministic, distinct and
can be decoded back to (series, original start).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
import uuid
from datetime import UTC, date, datetime

_HEADER = b"\x00\x03\x24"  # encodes to "AAMk", the prefix of real mailbox item ids
_MARK = b"\xfb\xff\xbf"  # encodes to "+/+/": every id carries both characters
_SERIES = b"E"
_OCCURRENCE = b"O"
_FILLER = 63  # keeps both id lengths off multiples of 3, so both end in "="
_ICAL_PREFIX = "040000008200E00074C5B7101A82E008"


def _encode(kind: bytes, key: bytes, suffix: bytes = b"") -> str:
    """Header, marker, kind, 16-byte key, filler (ids are about as long as Graph's), suffix."""
    filler = hashlib.sha512(key).digest()[:_FILLER]
    return base64.b64encode(_HEADER + _MARK + kind + key + filler + suffix).decode("ascii")


def _decode(item_id: str) -> tuple[bytes, bytes, bytes] | None:
    """(kind, key, suffix) of an id this module made, else None."""
    try:
        raw = base64.b64decode(item_id, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not raw.startswith(_HEADER + _MARK) or len(raw) < 7 + 16 + _FILLER:
        return None
    return raw[6:7], raw[7:23], raw[23 + _FILLER :]


def new_event_id() -> str:
    """A fresh id for a single event or a series master (ends in "=")."""
    return _encode(_SERIES, uuid.uuid4().bytes)


def occurrence_id(series_id: str, original_start: datetime) -> str:
    """The id of one occurrence (or exception) of a series (ends in "==")."""
    decoded = _decode(series_id)
    key = decoded[1] if decoded else uuid.uuid5(uuid.NAMESPACE_URL, series_id).bytes
    return _encode(_OCCURRENCE, key, struct.pack(">q", int(original_start.timestamp())))


def parse_occurrence_id(item_id: str) -> tuple[str, datetime] | None:
    """(series id, original start) for an occurrence id; None for any other id."""
    decoded = _decode(item_id)
    if decoded is None or decoded[0] != _OCCURRENCE or len(decoded[2]) != 8:
        return None
    stamp = struct.unpack(">q", decoded[2])[0]
    return _encode(_SERIES, decoded[1]), datetime.fromtimestamp(stamp, UTC)


def new_change_key() -> str:
    return base64.b64encode(b"\x0f\x00\x00\x00\x16\x00\x00\x00" + os.urandom(16)).decode("ascii")


def new_guid() -> str:
    return str(uuid.uuid4())


def ical_uid(key: str, day: date | None = None) -> str:
    """Like Exchange's global object id: per series, with the occurrence date for instances."""
    stamp = f"{day.year:04X}{day.month:02X}{day.day:02X}" if day else "00000000"
    return f"{_ICAL_PREFIX}{stamp}0000000000000000100000{uuid.uuid5(uuid.NAMESPACE_URL, key).hex.upper()}"
