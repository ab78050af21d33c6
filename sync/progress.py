"""Progress of initial syncs and reconciliations, per room and direction, for `status` and the CLI.

Counted per work item, not per booking or event: one Table operation per backfill item (25
events) or per rule's bookings, so the progress costs nothing on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sync.budget import BACKFILL, Limits
from sync.state import Progress, StatusTable, utcnow

DIRECTIONS = ("to_outlook", "to_anny")


def _finished(progress: Progress, direction: str) -> bool:
    done: int = getattr(progress, f"{direction}_done")
    total: int = getattr(progress, f"{direction}_total")
    return done >= total


async def start(status: StatusTable, room: str, direction: str, total: int) -> None:
    """A new initial sync or reconciliation of `direction` with `total` items to do."""
    def change(progress: Progress) -> None:
        others_finished = all(_finished(progress, d) for d in DIRECTIONS if d != direction)
        if others_finished:
            progress.started_at = utcnow()
        setattr(progress, f"{direction}_total", total)
        setattr(progress, f"{direction}_done", 0)

    await status.update_progress(room, change)


async def advance(status: StatusTable, room: str, direction: str, done: int) -> None:
    def change(progress: Progress) -> bool:
        total = getattr(progress, f"{direction}_total")
        now_done = min(total, getattr(progress, f"{direction}_done") + done)
        if now_done == getattr(progress, f"{direction}_done"):
            return False
        setattr(progress, f"{direction}_done", now_done)
        return True

    await status.update_progress(room, change)


async def continues(status: StatusTable, room: str, at: datetime, reason: str) -> None:
    """The room's sync was throttled; the rest runs from the backfill queue at `at`."""
    def change(progress: Progress) -> None:
        progress.continues_at, progress.continues_reason = at, reason[:500]

    await status.update_progress(room, change)


async def resumed(status: StatusTable, room: str) -> None:
    """The throttled rest of the room's sync is running (or done): nothing is waiting any more."""
    def change(progress: Progress) -> bool:
        if progress.continues_at is None:
            return False
        progress.continues_at, progress.continues_reason = None, ""
        return True

    await status.update_progress(room, change)


@dataclass(frozen=True)
class DirectionView:
    done: int
    total: int
    eta_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {"done": self.done, "to_do": self.total - self.done, "total": self.total,
                "eta_s": None if self.eta_s is None else round(self.eta_s)}


def _direction(progress: Progress, direction: str, now: datetime, limits: Limits) -> DirectionView:
    done, total = getattr(progress, f"{direction}_done"), getattr(progress, f"{direction}_total")
    remaining = total - done
    elapsed = max((now - progress.started_at).total_seconds(), 1e-3)
    if remaining <= 0:
        eta: float | None = 0.0
    elif done > 0:
        eta = remaining / (done / elapsed)
    elif direction == "to_anny":  # one blocker write each, at the backfill share of the write budget
        eta = remaining * limits.window_s / limits.cap("writes", BACKFILL)
    else:
        eta = None
    return DirectionView(done, total, eta)


def progress_view(progresses: list[Progress], limits: Limits, now: datetime | None = None) -> dict[str, Any]:
    """Rooms with work left, totals per direction, and when all of it should be done."""
    now = now or datetime.now(UTC)
    rooms, totals = [], {d: [0, 0] for d in DIRECTIONS}
    etas: list[float] = []
    for progress in sorted(progresses, key=lambda p: p.room):
        views = {d: _direction(progress, d, now, limits) for d in DIRECTIONS}
        for d, view in views.items():
            totals[d][0] += view.done
            totals[d][1] += view.total
            if view.eta_s:
                etas.append(view.eta_s)
        waiting = progress.continues_at
        if waiting is not None or any(v.done < v.total for v in views.values()):
            rooms.append({"room": progress.room, "started_at": progress.started_at.isoformat(),
                          **{d: v.as_dict() for d, v in views.items()},
                          "continues_at": waiting.isoformat() if waiting is not None else None,
                          "continues_reason": progress.continues_reason or None})
    in_progress = bool(rooms)
    return {
        "in_progress": in_progress,
        **{d: {"done": done, "to_do": total - done, "total": total} for d, (done, total) in totals.items()},
        "eta_s": round(max(etas)) if in_progress and etas else (0 if not in_progress else None),
        "rooms": rooms,
    }
