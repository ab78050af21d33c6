"""Injectable API faults (latency, next-N error answers, forced 401/403) and per-route call counters."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class FailRule:
    status: int
    remaining: int
    route: str | None = None  # "GET /api/v1/bookings/{id}"; None matches every API route
    retry_after: int | None = None

    def matches(self, route: str) -> bool:
        return self.remaining > 0 and self.route in (None, route)


@dataclass
class ApiFaults:
    latency_ms: int = 0
    forced_status: int | None = None  # answer every API request with this (401 or 403) until cleared
    rules: list[FailRule] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)

    def fail_next(self, status: int, count: int = 1, route: str | None = None, retry_after: int | None = None) -> None:
        """The next `count` requests (to `route`, or to any API route) answer `status`.

        A 429 carries `Retry-After` (1 second unless given); other statuses only when given.
        """
        if retry_after is None and status == 429:
            retry_after = 1
        self.rules.append(FailRule(status, count, route, retry_after))

    def take(self, route: str) -> FailRule | None:
        """The fault this request gets, if any (used up one step of its rule)."""
        rule = next((r for r in self.rules if r.matches(route)), None)
        if rule is not None:
            rule.remaining -= 1
            self.rules = [r for r in self.rules if r.remaining > 0]
        return rule

    def clear(self) -> None:
        self.latency_ms, self.forced_status, self.rules = 0, None, []

    def describe(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "forced_status": self.forced_status,
            "fail_next": [asdict(rule) for rule in self.rules],
        }
