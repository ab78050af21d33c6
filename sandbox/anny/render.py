"""anny's object shapes: JSON:API resource objects for the API, flat objects for webhook `data`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from .model import Booking, Customer, Resource, Service
from .state import AnnyState
from .timefmt import local_iso, utc_stamp

JsonObject = dict[str, Any]


def identifier(kind: str, ident: str | None) -> JsonObject | None:
    return None if ident is None else {"type": kind, "id": ident}


def resource_object(kind: str, ident: str, attributes: JsonObject, **members: Any) -> JsonObject:
    return {"type": kind, "id": ident, "attributes": attributes, **{k: v for k, v in members.items() if v}}


def flatten(obj: JsonObject) -> JsonObject:
    """A JSON:API resource object as anny's flat shape: id, type, the attributes, and meta."""
    flat = {"id": obj["id"], "type": obj["type"], **obj["attributes"]}
    if "meta" in obj:
        flat["meta"] = obj["meta"]
    return flat


class Renderer:
    def __init__(self, state: AnnyState) -> None:
        self.state = state

    def lookup(self, kind: str, ident: str | None) -> JsonObject | None:
        """The current object of that type and id, or None when it does not exist."""
        tables: dict[str, tuple[dict[str, Any], Any]] = {
            "resources": (self.state.resources, self.resource),
            "bookings": (self.state.bookings, self.booking),
            "services": (self.state.services, self.service),
            "customers": (self.state.customers, self.customer),
        }
        table, make = tables[kind]
        item = table.get(ident or "")
        return None if item is None else make(item)

    def resource(self, r: Resource) -> JsonObject:
        parent = self.state.resources.get(r.parent_id or "")
        children = self.state.children_of(r.id)
        attributes: JsonObject = {
            "name": r.name,
            "slug": r.slug,
            "description": r.description,
            "plain_description": r.description,
            "timezone": r.timezone,
            "has_children": bool(children),
            "archived": r.archived,
            "hidden": r.hidden,
            "live": not r.archived,
            "public_listing": not r.hidden,
            "auto_accept_bookings": True,
            "continuous": False,
            "quantity": 1,
            "is_online": False,
            "color": None,
            "created_at": utc_stamp(r.created_at),
        }
        if parent is not None:
            attributes["parent"] = {
                "id": parent.id,
                "type": "resources",
                "slug": parent.slug,
                "name": parent.name,
            }
        relationships = {
            "parent": {"data": identifier("resources", r.parent_id)},
            "children": {"data": [identifier("resources", c.id) for c in children]},
        }
        meta = {"parent_id": r.parent_id, "client_url": None}
        return resource_object("resources", r.id, attributes, relationships=relationships, meta=meta)

    def service(self, s: Service) -> JsonObject:
        attributes = {
            "name": s.name,
            "slug": s.slug,
            "description": None,
            "price": s.price,
            "currency": s.currency,
            "padding_before": s.padding_before,
            "padding_after": s.padding_after,
            "is_series": False,
            "hidden": False,
            "archived": False,
            "created_at": utc_stamp(s.created_at),
            "updated_at": utc_stamp(s.created_at),
        }
        return resource_object("services", s.id, attributes)

    def customer(self, c: Customer) -> JsonObject:
        given, _, family = c.full_name.partition(" ")
        attributes = {
            "uuid": c.uuid,
            "number": c.number,
            "full_name": c.full_name,
            "given_name": given,
            "family_name": family or None,
            "email": c.email,
            "phone": c.phone,
            "mobile": None,
            "locale": "de",
            "created_at": utc_stamp(c.created_at),
        }
        return resource_object("customers", c.id, attributes, meta={"has_account": False, "external_id": None})

    def booking(self, b: Booking) -> JsonObject:
        tz = self.state.resources[b.resource_id].timezone
        service = self.state.services.get(b.service_id or "")
        before, after = (service.padding_before, service.padding_after) if service else (0, 0)
        attributes = {
            "number": b.number,
            "status": b.status,
            "is_blocker": b.is_blocker,
            "start_date": local_iso(b.start, tz),
            "end_date": local_iso(b.end, tz),
            "blocker_start_date": local_iso(b.start - timedelta(minutes=before), tz),
            "blocker_end_date": local_iso(b.end + timedelta(minutes=after), tz),
            "title": b.title,
            "description": b.description,
            "note": b.note,
            "customer_note": b.customer_note,
            "canceled_at": None if b.canceled_at is None else utc_stamp(b.canceled_at),
            "created_at": utc_stamp(b.created_at),
            "updated_at": utc_stamp(b.updated_at),
            "is_series": b.is_series,
            "is_series_master": b.is_series_master,
            "series_id": b.series_id,
            "series_type": "weekly" if b.is_series else None,
            "is_sub_booking": False,
            "manually_created": b.manually_created,
            "visible_for_customer": not b.is_blocker,
            "can_edit": True,
            "has_payment": False,
            "price_hidden": False,
            "currency": b.currency,
            "total": b.total,
            "subtotal": b.total,
            "charged_total": b.total,
            "is_net_total": False,
            "weight": 1,
            "check_in_date": None,
            "check_out_date": None,
            "custom_entry_map": {},
        }
        relationships = {
            "resource": {"data": identifier("resources", b.resource_id)},
            "service": {"data": identifier("services", b.service_id)},
            "customer": {"data": identifier("customers", b.customer_id)},
            "sub_bookings": {"data": []},
            "super_booking": {"data": None},
        }
        meta = {
            "is_anonymous": False,
            "has_custom_description": b.description is not None,
            "cancelable_until": None,
        }
        return resource_object("bookings", b.id, attributes, relationships=relationships, meta=meta)

    def booking_flat(self, b: Booking) -> JsonObject:
        """The webhook `data` shape: the flat booking with its resource (and service, customer) nested."""
        flat = flatten(self.booking(b))
        for name, ident in (
            ("resource", b.resource_id),
            ("service", b.service_id),
            ("customer", b.customer_id),
        ):
            related = self.lookup(f"{name}s", ident)
            if related is not None:
                flat[name] = flatten(related)
        return flat
