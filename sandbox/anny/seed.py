"""The seed document: an organisation's starting state (see docs/emulators.md). Sends no webhooks."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Protocol

from .model import BookingDraft
from .render import JsonObject
from .state import AnnyState


class Seedable(Protocol):
    """What seeding needs of the emulator (which imports this module, not the other way round)."""

    state: AnnyState

    def draft(self, resource: str, start: Any, end: Any, **options: Any) -> BookingDraft: ...

    def create_webhook_subscription(self, url: str, events: Iterable[str] = ..., **options: Any) -> JsonObject: ...

RESOURCE_OPTIONS = ("id", "slug", "timezone", "description", "hidden", "archived")
SERVICE_OPTIONS = ("id", "slug", "price", "currency", "padding_before", "padding_after")
BOOKING_TEXT = ("status", "title", "description", "note", "customer_note")


def _pick(spec: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: spec[name] for name in names if name in spec}


def _add_resources(emu: Seedable, specs: list[dict[str, Any]], parent: str | None = None) -> dict[str, str]:
    ids: dict[str, str] = {}
    for spec in specs:
        resource = emu.state.add_resource(spec["name"], parent=parent, **_pick(spec, RESOURCE_OPTIONS))
        ids[resource.slug] = resource.id
        ids |= _add_resources(emu, spec.get("children", []), resource.id)
    return ids


def _booking_args(spec: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    options = _pick(spec, BOOKING_TEXT) | {
        "service": spec.get("service"),
        "customer": spec.get("customer"),
        "is_blocker": bool(spec.get("is_blocker", False)),
    }
    return [spec["resource"], spec["start"], spec["end"]], options


def apply_seed(emu: Seedable, data: dict[str, Any]) -> dict[str, Any]:
    """Add everything in `data`; returns the ids made (resources by slug, services by name, …)."""
    state = emu.state
    result: dict[str, Any] = {"resources": _add_resources(emu, data.get("resources", []))}
    result["services"] = {
        s["name"]: state.add_service(s["name"], **_pick(s, SERVICE_OPTIONS)).id for s in data.get("services", [])
    }
    result["customers"] = {
        c["email"]: state.customer_for(c).id  # type: ignore[union-attr]
        for c in data.get("customers", [])
    }
    result["bookings"] = []
    for spec in data.get("bookings", []):
        args, options = _booking_args(spec)
        result["bookings"] += [c.booking.id for c in state.create_booking(emu.draft(*args, **options), spec.get("id"))]
    result["series"] = []
    for spec in data.get("series", []):
        args, options = _booking_args(spec)
        interval = timedelta(days=spec.get("interval_days", 7))
        master, *occurrences = (
            c.booking.id for c in state.create_series(emu.draft(*args, **options), spec["count"], interval)
        )
        result["series"].append({"master": master, "occurrences": occurrences})
    result["webhook_subscriptions"] = [
        {"id": sub["id"], "signing_key": sub["signing_key"]}
        for sub in (emu.create_webhook_subscription(**spec) for spec in data.get("webhook_subscriptions", []))
    ]
    return result
