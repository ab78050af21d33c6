"""The admin surface (DESIGN §3.4) behind the CLI: rules, activation, status."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sync.errors import ConcurrencyError, NotFoundError, RuleError
from sync.keys import normalise_mailbox
from sync.nightly import run_nightly
from sync.state import Rule, StateStore
from sync.work import RoomWork
from sync.worker import Worker


async def add_rule(store: StateStore, anny_resource_id: str, room: str, time_zone: str = "") -> Rule:
    anny_resource_id, room = anny_resource_id.strip(), normalise_mailbox(room)
    if not anny_resource_id:
        raise RuleError("the anny resource id is empty")
    if "@" not in room or room.startswith("@") or room.endswith("@"):
        raise RuleError("the room must be a mailbox address like room@contoso.com", room=room)
    if time_zone:
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise RuleError("unknown time zone; expected an IANA name like Europe/Berlin",
                            time_zone=time_zone) from None
    try:
        return await store.add_rule(Rule(anny_resource_id, room, time_zone=time_zone))
    except ConcurrencyError:
        mapped = await store.get_rule(anny_resource_id)
        if mapped is not None:
            raise RuleError("this anny resource is mapped already", anny_resource=anny_resource_id,
                            room=mapped.room) from None
        raise RuleError("this room is mapped already", room=room) from None


async def remove_rule(store: StateStore, anny_resource_id: str) -> Rule:
    try:
        return await store.remove_rule(anny_resource_id)
    except NotFoundError:
        raise RuleError("no rule for this anny resource", anny_resource=anny_resource_id) from None


def rule_view(rule: Rule) -> dict[str, Any]:
    view = asdict(rule)
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in view.items()}


async def activate(worker: Worker) -> dict[str, Any]:
    """Subscribe every mapped room and sync the whole window both ways, now."""
    store = worker.services.store
    status = await store.get_status()
    status.state, status.activated_at = "active", datetime.now(UTC)
    await store.save_status(status)
    report = await run_nightly(worker)
    rooms = [w for w in report.follow_up if isinstance(w, RoomWork)]
    for work in report.follow_up:
        await worker.handle(work)
    return {"state": "active", "rooms": len(rooms), "bookings_checked": report.bookings_checked,
            "subscriptions_renewed": report.renewed}


async def status_view(store: StateStore) -> dict[str, Any]:
    status = await store.get_status()
    subscriptions = {s.room: s.expires_at.isoformat() for s in await store.list_subscriptions()}
    rooms = {r.room: r for r in await store.list_room_states()}
    return {
        "state": status.state,
        "activated_at": status.activated_at.isoformat() if status.activated_at else None,
        "last_error": status.last_error or None,
        "rules": [{**rule_view(rule), "subscription_expires": subscriptions.get(rule.room),
                   "last_run_at": _iso(rooms[rule.room].last_run_at) if rule.room in rooms else None}
                  for rule in await store.list_rules()],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
