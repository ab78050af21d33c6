"""anny's documented rate limits (anny developer guide, "Rate limits"), per organisation.

Reads (GET) and writes (POST, PATCH, PUT, DELETE) each have a budget per window, rolling or
fixed; over it, `429 Too Many Requests` with `Retry-After` = whole seconds until the window
frees a slot, and a JSON:API `errors` body. Independently, at most N identical requests
(method, path, query and body) per second. Refused requests do not count against the window.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import AnnyError

WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})
WINDOW_KINDS = ("rolling", "fixed")


@dataclass(frozen=True)
class RateLimits:
    """The limits as configured on `AnnyConfig` (`rate_limits` switches them on)."""

    reads: int
    writes: int
    window_s: float
    window: str
    identical_per_second: int


@dataclass
class RateLimiter:
    clock: Callable[[], float] = time.monotonic
    stamps: dict[str, deque[float]] = field(default_factory=lambda: {"reads": deque(), "writes": deque()})
    fixed: dict[str, tuple[int, int]] = field(default_factory=dict)  # kind → (window index, count)
    identical: dict[tuple[str, ...], deque[float]] = field(default_factory=dict)
    counters: Counter[str] = field(default_factory=Counter)  # "429 reads", "429 writes", "429 identical", …
    started: float = field(default_factory=time.monotonic)

    def reset(self) -> None:
        for stamps in self.stamps.values():
            stamps.clear()
        self.fixed.clear()
        self.identical.clear()
        self.counters.clear()
        self.started = self.clock()

    def check(self, limits: RateLimits, method: str, path: str, query: str, body: bytes) -> None:
        """Count the request or raise the 429 anny would answer."""
        now = self.clock()
        kind = "writes" if method.upper() in WRITE_METHODS else "reads"
        wait = self._identical_wait(limits, (method.upper(), path, query, body.decode(errors="replace")), now)
        if wait is not None:
            raise self._refuse("identical", wait, "more than "
                               f"{limits.identical_per_second} identical requests per second")
        limit = limits.reads if kind == "reads" else limits.writes
        wait = self._window_wait(limits, kind, limit, now)
        if wait is not None:
            raise self._refuse(kind, wait, f"more than {limit} {kind} per {limits.window_s:g} s for this organization")
        self._count(limits, kind, now)
        self.counters[f"{kind} accepted"] += 1

    def _identical_wait(self, limits: RateLimits, key: tuple[str, ...], now: float) -> float | None:
        stamps = self.identical.setdefault(key, deque())
        while stamps and stamps[0] <= now - 1.0:
            stamps.popleft()
        if len(stamps) >= limits.identical_per_second:
            return stamps[0] + 1.0 - now
        stamps.append(now)
        if len(self.identical) > 10_000:  # forget keys nobody repeats
            self.identical = {k: v for k, v in self.identical.items() if v and v[-1] > now - 1.0}
        return None

    def _window_wait(self, limits: RateLimits, kind: str, limit: int, now: float) -> float | None:
        if limits.window == "fixed":
            index = int((now - self.started) // limits.window_s)
            current, count = self.fixed.get(kind, (index, 0))
            if current == index and count >= limit:
                return self.started + (index + 1) * limits.window_s - now
            return None
        stamps = self.stamps[kind]
        while stamps and stamps[0] <= now - limits.window_s:
            stamps.popleft()
        if len(stamps) >= limit:
            return stamps[0] + limits.window_s - now
        return None

    def _count(self, limits: RateLimits, kind: str, now: float) -> None:
        if limits.window == "fixed":
            index = int((now - self.started) // limits.window_s)
            current, count = self.fixed.get(kind, (index, 0))
            self.fixed[kind] = (index, count + 1 if current == index else 1)
        else:
            self.stamps[kind].append(now)

    def _refuse(self, reason: str, wait: float, detail: str) -> AnnyError:
        self.counters[f"429 {reason}"] += 1
        self.counters["429"] += 1
        retry_after = max(1, math.ceil(wait))
        return AnnyError(429, "Too Many Requests", detail, headers={"Retry-After": str(retry_after)})

    def describe(self, limits: RateLimits, enabled: bool) -> dict[str, Any]:
        now = self.clock()
        in_window = {kind: sum(1 for s in stamps if s > now - limits.window_s) for kind, stamps in self.stamps.items()}
        if limits.window == "fixed":
            index = int((now - self.started) // limits.window_s)
            in_window = {kind: count for kind, (i, count) in self.fixed.items() if i == index}
        return {"enabled": enabled, "reads": limits.reads, "writes": limits.writes, "window_s": limits.window_s,
                "window": limits.window, "identical_per_second": limits.identical_per_second,
                "in_window": in_window, "counters": dict(self.counters)}
