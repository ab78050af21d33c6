"""The app's domain records as they are stored in Table Storage (one dataclass per kind of row)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

MAX_RUN_ITEMS = 100
KEPT_RUNS = 20


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- domain records -------------------------------------------------------------------------


@dataclass
class Rule:
    anny_resource_id: str
    room: str
    time_zone: str = ""  # the anny resource's zone (all-day blockers); empty: SYNC_TIME_ZONE
    removing: bool = False  # being deleted: the worker treats resource and room as unmapped
    created_at: datetime = field(default_factory=utcnow)
    activated_at: datetime | None = None  # when its first (initial) sync ran
    # [start, end) ISO pairs: the integration was deactivated; items created then stay unsynced
    off_periods: list[list[str]] = field(default_factory=list)
    held: str = ""  # the brake on mass deletion stopped it: why, with the numbers
    held_at: datetime | None = None

    def off_spans(self) -> tuple[tuple[datetime, datetime], ...]:
        return tuple((datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in self.off_periods)


@dataclass
class Link:
    """A pair of items kept in step: an anny booking/blocker and an Outlook event."""

    room: str
    origin: str  # "anny" (mirror event) or "outlook" (mirror blocker)
    anny_id: str = ""
    event_id: str = ""
    state: str = "synced"  # "pending" while a create is in flight
    generation: int = 0
    transaction_id: str = ""
    event_change_key: str = ""
    fingerprint: str = ""
    suppressed: bool = False  # anny admin deleted our blocker: do not recreate until the event changes
    start: str = ""
    end: str = ""
    anny_version: str = ""  # the anny booking's updated_at as last seen (sync.model.booking_version)
    updated_at: datetime = field(default_factory=utcnow)
    etag: str | None = field(default=None, compare=False)

    def ended_before(self, moment: datetime) -> bool:
        """What was last written ended before `moment` (unknown span: False)."""
        return bool(self.end) and datetime.fromisoformat(self.end) <= moment

    def starts_after(self, moment: datetime) -> bool:
        """What was last written starts at or after `moment` (unknown span: False)."""
        return bool(self.start) and datetime.fromisoformat(self.start) >= moment


def time_key(moment: datetime | str) -> str:
    """A moment as a sortable, comparable Table property: UTC, fixed width (`start_key`, `end_key`
    of link rows; `start`/`end` keep the offset they were written with, which does not compare)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Subscription:
    subscription_id: str
    room: str
    expires_at: datetime
    client_state: str
    etag: str | None = field(default=None, compare=False)


@dataclass
class RoomState:
    room: str
    delta_link: str = ""
    window_start: str = ""  # the delta query window the delta link was made for
    window_end: str = ""
    covered_end: str = ""  # the end of the sync window whose events the room's runs have read
    running_since: datetime | None = None
    run_id: str = ""
    rerun_requested: bool = False
    category_ensured: bool = False
    time_keys: bool = False  # its link rows all carry sortable time keys (LinksTable.add_time_keys)
    last_run_at: datetime | None = None  # last successful Outlook → anny run
    # when the last successful round began to read: it covers every signal given before then
    read_from: datetime | None = None
    last_outbound_at: datetime | None = None  # last successful anny → Outlook reconciliation
    last_error: str = ""
    last_error_at: datetime | None = None
    etag: str | None = field(default=None, compare=False)


@dataclass
class IntegrationStatus:
    state: str = "inactive"  # active | inactive | deleting
    activated_at: datetime | None = None
    deactivated_at: datetime | None = None
    window_start: str = ""
    window_end: str = ""
    last_error: str = ""
    last_error_at: datetime | None = None
    last_sweep_at: datetime | None = None
    sweep_high_water: str = ""  # anny `updated_at` of the newest booking the last sweep saw
    nightly_day: str = ""  # the local date (SYNC_TIME_ZONE) whose nightly run finished
    nightly_claimed_at: datetime | None = None
    etag: str | None = field(default=None, compare=False)


@dataclass
class RunRecord:
    """One nightly run, sweep or resync, and what it repaired (the drift report)."""

    kind: str  # nightly | sweep | resync | activate
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    repaired: dict[str, int] = field(default_factory=dict)  # drift kind → count
    items: list[dict[str, str]] = field(default_factory=list)  # the first MAX_RUN_ITEMS repairs
    checked: dict[str, int] = field(default_factory=dict)
    held: list[str] = field(default_factory=list)  # rules the brake held during this run
    error: str = ""
    etag: str | None = field(default=None, compare=False)


@dataclass
class Progress:
    """How far the latest initial sync or reconciliation of one room has come, per direction."""

    room: str
    started_at: datetime = field(default_factory=utcnow)
    to_outlook_total: int = 0
    to_outlook_done: int = 0
    to_anny_total: int = 0
    to_anny_done: int = 0
    updated_at: datetime = field(default_factory=utcnow)
    continues_at: datetime | None = None  # throttled: the rest runs from the backfill queue then
    continues_reason: str = ""
    etag: str | None = field(default=None, compare=False)


@dataclass
class BudgetRecord:
    """One kind of anny request (reads or writes): the slices granted lately, shared by every instance.

    `grants` is JSON: a list of `[granted_at_epoch_s, count]` (see `sync.budget`).
    """

    kind: str
    grants: str = "[]"
    paused_until: float = 0.0  # epoch seconds: an anny 429 asked everyone to wait until then
    etag: str | None = field(default=None, compare=False)


@dataclass
class FallbackRecord:
    """One instance's spell on the local fallback rate (the budget table was unreachable for it), in epoch s."""

    instance: str
    since: float
    last_seen: float  # when it last said it was still in fallback
    ended: float = 0.0  # 0: still in fallback as far as anyone knows
    error: str = ""
    etag: str | None = field(default=None, compare=False)
