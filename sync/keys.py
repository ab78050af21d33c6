"""Table keys and deterministic ids: the one place their formats are defined.

Azure Table keys may not contain `/ \\ # ?` or control characters (and Azurite mishandles
`/` and `#`), while Graph event ids contain `/ + =`. Keys are therefore escaped
reversibly: letters, digits and `- _ . @` stay as they are, every other UTF-8 byte becomes
`~XX` (upper-case hex), so any string round-trips and keys stay readable.
"""

from __future__ import annotations

import hashlib
import secrets
import string

from sync.errors import StateError

_SAFE = frozenset(string.ascii_letters + string.digits + "-_.@")
MAX_KEY_CHARS = 1024


def encode_key(value: str) -> str:
    """Escape any string into a valid Table PartitionKey/RowKey."""
    out: list[str] = []
    for char in value:
        if char in _SAFE:
            out.append(char)
        else:
            out.extend(f"~{byte:02X}" for byte in char.encode("utf-8"))
    key = "".join(out)
    if len(key) > MAX_KEY_CHARS:
        raise StateError("key too long for Table Storage", length=len(key))
    return key


def decode_key(key: str) -> str:
    """Invert `encode_key`."""
    raw = bytearray()
    i = 0
    while i < len(key):
        if key[i] == "~":
            raw.append(int(key[i + 1 : i + 3], 16))
            i += 3
        else:
            raw.extend(key[i].encode("ascii"))
            i += 1
    return raw.decode("utf-8")


def normalise_mailbox(address: str) -> str:
    """Mailbox addresses are case-insensitive; the app stores and compares them lower-cased."""
    return address.strip().lower()


def new_create_token() -> str:
    """A fresh random part for a transactionId: one per intended create, kept on the pending link."""
    return secrets.token_hex(8)


def transaction_id(anny_booking_id: str, generation: int, token: str = "") -> str:
    """Graph `transactionId` of a mirror event: the same booking, generation and create token give
    the same id (a retried create dedupes); a new token gives a new one. Graph does not document
    how long it remembers a transactionId, so a mirror made again later (its link forgotten and
    re-made) must never reuse an old one: every new pending create draws a new token."""
    digest = hashlib.sha256(f"anny-booking:{anny_booking_id}:{generation}:{token}".encode()).hexdigest()
    return f"anny-{digest[:32]}"


def fingerprint(*parts: object) -> str:
    """Short stable digest of what was written, to recognise no-op updates."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:32]
