"""Settings of the anny emulator (token, organisation, paging, webhook behaviour)."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from .limits import RateLimits

BOOKING_EVENTS = ("bookings.created", "bookings.updated", "bookings.deleted")
PAGE_METADATA = ("links and meta", "links", "meta")


@dataclass
class AnnyConfig:
    token: str = "anny-test-token"
    organization_id: str = "org-test"
    default_timezone: str = "Europe/Berlin"
    currency: str = "EUR"
    default_page_size: int = 30
    max_page_size: int = 100
    # What a list page says of its neighbours (anny documents it inconsistently): "links and meta"
    # (default), "links" (links.next and no page counters) or "meta" (counters and no links).
    page_metadata: str = "links and meta"
    # What a cancellation sends: "bookings.deleted" (default) or "bookings.updated" (status canceled).
    cancel_event: str = "bookings.deleted"
    # Header carrying hex HMAC-SHA256(signing_key, raw body); None sends no signature.
    signature_header: str | None = "x-anny-signature"
    webhook_retries: int = 3
    retry_backoff_s: float = 0.02
    webhook_timeout_s: float = 5.0
    # A subscription is paused (is_active false) after this many failed deliveries in a row.
    deactivate_after_failures: int | None = 5
    # anny's documented Admin API rate limits, per organisation (off unless switched on).
    rate_limits: bool = False
    reads_per_window: int = 400
    writes_per_window: int = 100
    rate_window_s: float = 60.0
    rate_window: str = "rolling"  # or "fixed" (anny does not say which)
    identical_per_second: int = 4

    def __post_init__(self) -> None:
        if self.rate_window not in ("rolling", "fixed"):
            raise ValueError("rate_window must be 'rolling' or 'fixed'")
        if self.page_metadata not in PAGE_METADATA:
            raise ValueError(f"page_metadata must be one of {', '.join(map(repr, PAGE_METADATA))}")
        if min(self.reads_per_window, self.writes_per_window, self.identical_per_second) < 1 or self.rate_window_s <= 0:
            raise ValueError("rate limits must be positive")

    @property
    def limits(self) -> RateLimits:
        return RateLimits(self.reads_per_window, self.writes_per_window, self.rate_window_s, self.rate_window,
                          self.identical_per_second)

    def updated(self, **changes: Any) -> AnnyConfig:
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}
