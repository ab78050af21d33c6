"""Mapping rules (behaviour: rules, activation and removal): what may be mapped, checked against
anny and Graph before anything is stored.

A rule maps one anny **parent** resource to one room mailbox listed by Graph Places, 1:1
both ways. Every check runs before the rule is written, so a refused add stores nothing.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sync.anny import AnnyClient
from sync.errors import ConcurrencyError, RuleError
from sync.graph import GraphGateway
from sync.keys import normalise_mailbox
from sync.state import LinksTable, Rule, RulesTable


def _checked_format(anny_resource_id: str, room: str, time_zone: str) -> tuple[str, str]:
    anny_resource_id, room = anny_resource_id.strip(), normalise_mailbox(room)
    if not anny_resource_id:
        raise RuleError("the anny resource id is empty; list the resources with `python -m sync resources`")
    if "@" not in room or room.startswith("@") or room.endswith("@"):
        raise RuleError("the room must be a mailbox address like room@contoso.com", room=room)
    if time_zone:
        try:
            ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise RuleError("unknown time zone; expected an IANA name like Europe/Berlin",
                            time_zone=time_zone) from None
    return anny_resource_id, room


async def _check_unmapped(rules: RulesTable, anny_resource_id: str, room: str) -> None:
    mapped = await rules.get_rule(anny_resource_id)
    if mapped is not None:
        raise RuleError("this anny resource is mapped already; remove that rule first with `rules remove`",
                        anny_resource=anny_resource_id, room=mapped.room)
    taken = await rules.get_rule_for_room(room)
    if taken is not None:
        raise RuleError("this room is mapped already; remove that rule first with `rules remove`",
                        room=room, anny_resource=taken.anny_resource_id)


async def _check_resource(anny: AnnyClient, anny_resource_id: str) -> None:
    """GET /api/v1/resources/{id}: children carry a parent (anny's `parent` relationship / meta.parent_id)."""
    resource = await anny.get_resource(anny_resource_id)
    if resource is None:
        raise RuleError("unknown anny resource; list the resources with `python -m sync resources`",
                        anny_resource=anny_resource_id)
    if resource.parent_id:
        raise RuleError(f"anny resource {anny_resource_id} ({resource.name}) is a child of {resource.parent_id}: "
                        f"map {resource.parent_id} instead (its children's bookings sync into its room)",
                        anny_resource=anny_resource_id, parent=resource.parent_id)


async def _check_room(graph: GraphGateway, room: str) -> None:
    """GET /places/microsoft.graph.room: only room mailboxes are listed there (a user mailbox is not)."""
    rooms = {r.email for r in await graph.list_rooms()}
    if room not in rooms:
        raise RuleError("not a room in Microsoft Graph Places (a user mailbox or an unknown address); "
                        "list the rooms with `python -m sync rooms`", room=room)


async def add_rule(rules: RulesTable, links: LinksTable, anny: AnnyClient, graph: GraphGateway,
                   anny_resource_id: str, room: str, time_zone: str = "") -> Rule:
    """Check everything, then store the rule and set its room's marker row (guarded link writes
    need it); any refusal raises RuleError and stores nothing."""
    anny_resource_id, room = _checked_format(anny_resource_id, room, time_zone)
    await _check_unmapped(rules, anny_resource_id, room)
    await _check_resource(anny, anny_resource_id)
    await _check_room(graph, room)
    try:
        rule = await rules.add_rule(Rule(anny_resource_id, room, time_zone=time_zone))
    except ConcurrencyError:  # someone mapped one side in the meantime
        await _check_unmapped(rules, anny_resource_id, room)
        raise
    await links.mark_room_mapped(rule.room)
    return rule
