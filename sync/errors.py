"""Typed errors. Each carries the context an admin needs to find the item (never a secret)."""

from __future__ import annotations

from typing import Any


class SyncError(Exception):
    """Base of the app's errors; `context` holds ids such as room, booking_id, event_id."""

    def __init__(self, message: str, **context: Any) -> None:
        self.context = {k: v for k, v in context.items() if v is not None}
        details = ", ".join(f"{k}={v}" for k, v in self.context.items())
        super().__init__(f"{message} ({details})" if details else message)
        self.message = message


class SettingsError(SyncError):
    """A setting is missing or malformed; the message names it and what it expects."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"setting {name} {problem}")
        self.name = name


class StateError(SyncError):
    """Table Storage refused or failed an operation."""


class ConcurrencyError(StateError):
    """Someone else wrote the entity first (ETag mismatch or already exists); re-read and retry."""


class NotFoundError(StateError):
    """The entity does not exist."""


class RoomNotMapped(StateError):
    """A link write of a room that no rule maps (any more): the rule was removed meanwhile."""


class EntityTooLargeError(StateError):
    """An entity or a string property exceeds Azure Table Storage's limits."""


class InputError(SyncError):
    """Input from outside (a request body, header, id or admin argument) is malformed.

    `field` names where (e.g. `value[3].subscriptionId`), `problem` says what to fix; neither
    ever holds the offending value, so both are safe to log and to answer with.
    """

    status = 400  # the HTTP answer

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class RuleError(SyncError):
    """A mapping rule was refused (unknown, duplicate, child resource, …)."""


class RemoteError(SyncError):
    """A call to anny or Graph failed."""

    @property
    def retry_after_s(self) -> float:
        """What the remote's `Retry-After` asked for, as the client read it (0: nothing asked)."""
        return float(self.context.get("retry_after_s") or 0)


class RemoteGone(RemoteError):
    """The item no longer exists on the remote side (404 / 410)."""


class RemoteConflict(RemoteError):
    """The remote refused the write as a conflict (409/412)."""


class RemoteThrottled(RemoteError):
    """Throttled (429) after the client's own retries; retry later."""


class RemoteUnavailable(RemoteError):
    """5xx, timeout or connection failure; retry later."""


class RemoteAuthError(RemoteError):
    """401/403: credentials or permissions are wrong; retrying will not help."""


class RemoteBadRequest(RemoteError):
    """The remote refused the request as invalid (400/422)."""


class SyncStateExpired(RemoteError):
    """A Graph delta token expired (410 syncStateNotFound): start a new baseline."""


def error_for_status(status: int) -> type[RemoteError]:
    """The typed error for an HTTP status from anny or Graph (0: no answer at all)."""
    if status in (401, 403):
        return RemoteAuthError
    if status in (404, 410):
        return RemoteGone
    if status in (409, 412):
        return RemoteConflict
    if status == 429:
        return RemoteThrottled
    if status >= 500 or status == 0:
        return RemoteUnavailable
    return RemoteBadRequest


class ConfirmationNeeded(RuleError):
    """A destructive command was sent without its confirmation; the message says what it would do."""


class RuleNotAdded(SyncError):
    """A valid rule's initial sync failed; the rule was removed again."""
