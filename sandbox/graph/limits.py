"""Per-mailbox throttling, injected faults and latency, and per-route call counters."""

from __future__ import annotations

import fnmatch
import math
import random
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

from .errors import GraphError, throttled

FAULT_CODES = {
    429: ("ApplicationThrottled", "Application is over its MailboxConcurrency limit."),
    503: ("ServiceNotAvailable", "The service is temporarily unavailable. Please retry later."),
    504: ("GatewayTimeout", "The gateway did not receive a response in time."),
    500: ("InternalServerError", "An internal server error occurred."),
}


@dataclass
class ThrottleConfig:
    """Graph's per-app, per-mailbox limits: 4 concurrent requests, 10,000 per 10 minutes."""

    concurrency: int = 4
    budget: int = 10_000
    window_seconds: float = 600.0
    concurrency_retry_after: int = 1


class Throttler:
    def __init__(self, config: ThrottleConfig) -> None:
        self.config = config
        self.in_flight: Counter[str] = Counter()
        self.stamps: defaultdict[str, deque[float]] = defaultdict(deque)
        self.refused: Counter[str] = Counter()  # 429s sent: "budget", "concurrency"

    def enter(self, mailbox: str, now: float) -> None:
        """Take a slot for a request on `mailbox` or raise 429 (budget first, then concurrency)."""
        stamps = self.stamps[mailbox]
        while stamps and stamps[0] <= now - self.config.window_seconds:
            stamps.popleft()
        if len(stamps) >= self.config.budget:
            self.refused["budget"] += 1
            wait = math.ceil(stamps[0] + self.config.window_seconds - now)
            raise throttled("ApplicationThrottled", "Application is over its request budget for this mailbox.", wait)
        if self.in_flight[mailbox] >= self.config.concurrency:
            self.refused["concurrency"] += 1
            raise throttled(
                "MailboxConcurrency",
                "Application is over its MailboxConcurrency limit.",
                self.config.concurrency_retry_after,
            )
        stamps.append(now)
        self.in_flight[mailbox] += 1

    def leave(self, mailbox: str) -> None:
        self.in_flight[mailbox] -= 1

    def reset(self) -> None:
        self.in_flight.clear()
        self.stamps.clear()
        self.refused.clear()


@dataclass
class Fault:
    """Answer `status` instead of serving matching requests: the next `count` of them, or a
    `rate` share (seeded, so runs repeat). `after_write`: serve the request first (the write
    happens), then answer the fault, like a gateway timeout after a committed write."""

    status: int
    route: str = "*"  # fnmatch pattern over "METHOD /template", e.g. "POST /users/{mailbox}/events"
    mailbox: str | None = None
    count: int | None = None
    rate: float | None = None
    seed: int = 0
    retry_after: int | None = 1
    after_write: bool = False
    code: str | None = None
    hits: int = 0
    rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.status not in FAULT_CODES:
            raise ValueError(f"unsupported fault status {self.status}; use one of {sorted(FAULT_CODES)}")
        if (self.count is None) == (self.rate is None):
            raise ValueError("give exactly one of count or rate")
        self.rng = random.Random(self.seed)
        self.mailbox = self.mailbox.lower() if self.mailbox else None

    def applies(self, route_key: str, mailbox: str | None) -> bool:
        if self.mailbox is not None and self.mailbox != mailbox:
            return False
        if not fnmatch.fnmatchcase(route_key, self.route):
            return False
        if self.count is not None:
            return self.hits < self.count
        return self.rng.random() < (self.rate or 0.0)

    def error(self) -> GraphError:
        code, message = FAULT_CODES[self.status]
        headers = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        return GraphError(self.status, self.code or code, message, headers)

    def to_json(self) -> dict:
        fields = ("status", "route", "mailbox", "count", "rate", "seed", "retry_after", "after_write", "code", "hits")
        return {name: getattr(self, name) for name in fields}


class Faults:
    def __init__(self) -> None:
        self.rules: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        self.rules.append(fault)
        return fault

    def take(self, route_key: str, mailbox: str | None) -> Fault | None:
        """The first rule that fires for this request (and count it)."""
        for rule in self.rules:
            if rule.applies(route_key, mailbox):
                rule.hits += 1
                return rule
        return None

    def clear(self) -> None:
        self.rules.clear()


@dataclass
class Latency:
    """Added delay in milliseconds: one default plus overrides by route pattern."""

    default_ms: float = 0.0
    by_route: dict[str, float] = field(default_factory=dict)

    def for_route(self, route_key: str) -> float:
        for pattern, ms in self.by_route.items():
            if fnmatch.fnmatchcase(route_key, pattern):
                return ms
        return self.default_ms


class Counters:
    """Calls per "METHOD /route/template" (every request received, answered or not)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def add(self, route_key: str) -> None:
        self.calls[route_key] += 1

    def snapshot(self) -> dict[str, int]:
        return {**dict(sorted(self.calls.items())), "total": sum(self.calls.values())}

    def reset(self) -> None:
        self.calls.clear()

