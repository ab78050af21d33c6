"""The `rules` table: PartitionKey `rule`; RowKey `res~<anny resource>` holds the rule (resource →
room), `room~<mailbox>` the uniqueness guard of its room (both created in one transaction)."""

from __future__ import annotations

import copy
import time

from azure.core.exceptions import ResourceExistsError
from azure.data.tables import TableTransactionError

from sync.errors import ConcurrencyError, NotFoundError
from sync.keys import encode_key, normalise_mailbox
from sync.state.records import Rule
from sync.state.table import Tables, from_entity, to_entity

RULE_TTL_S = 10.0  # as the "active" status (sync.services): a rule change reaches other instances within this
# Rules as this process last read them, per storage account and prefix (`get_rule(cached=True)`).
_rule_cache: dict[str, dict[str, tuple[float, Rule]]] = {}


class RulesTable:
    def __init__(self, tables: Tables) -> None:
        self._table = tables.table("rules")
        self._scope = tables.scope

    async def add_rule(self, rule: Rule) -> Rule:
        """Store a rule; both the resource and the room must be unmapped (atomic on both sides).
        The caller sets the room's marker row (`LinksTable.mark_room_mapped`)."""
        rule.room = normalise_mailbox(rule.room)
        entity = to_entity(rule, "rule", "res~" + encode_key(rule.anny_resource_id))
        guard = {"PartitionKey": "rule", "RowKey": "room~" + encode_key(rule.room),
                 "anny_resource_id": rule.anny_resource_id}
        self.forget()
        try:
            await self._table.transaction([("create", entity), ("create", guard)])
        except (TableTransactionError, ResourceExistsError) as exc:
            raise ConcurrencyError("resource or room is mapped already", anny_resource=rule.anny_resource_id,
                                   room=rule.room) from exc
        return rule

    async def get_rule(self, anny_resource_id: str, *, cached: bool = False) -> Rule | None:
        """The rule of an anny resource. `cached`: a rule this process read less than RULE_TTL_S ago
        will do (hot paths; a missing rule is always read, so a new rule is never missed)."""
        return await self._rule_at("res~" + encode_key(anny_resource_id), cached)

    async def get_rule_for_room(self, room: str, *, cached: bool = False) -> Rule | None:
        """The rule that maps the room (`cached`: as `get_rule`)."""
        return await self._rule_at("room~" + encode_key(normalise_mailbox(room)), cached)

    async def _rule_at(self, row: str, cached: bool) -> Rule | None:
        scope = _rule_cache.setdefault(self._scope, {})
        seen = scope.get(row)
        if cached and seen is not None and time.monotonic() - seen[0] < RULE_TTL_S:
            return copy.deepcopy(seen[1])
        entity = await self._table.get("rule", row)
        if entity is not None and row.startswith("room~"):
            entity = await self._table.get("rule", "res~" + encode_key(entity["anny_resource_id"]))
        if entity is None:
            scope.pop(row, None)
            return None
        rule: Rule = from_entity(Rule, entity)
        scope[row] = (time.monotonic(), copy.deepcopy(rule))
        return rule

    def forget(self) -> None:
        """A rule written through this process: every cached rule is read again."""
        _rule_cache.pop(self._scope, None)

    async def list_rules(self) -> list[Rule]:
        rules = [from_entity(Rule, e) async for e in self._table.query(
            "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high", pk="rule", low="res~", high="res\x7f")]
        return sorted(rules, key=lambda r: r.anny_resource_id)

    async def save_rule(self, rule: Rule) -> None:
        self.forget()
        await self._table.upsert(to_entity(rule, "rule", "res~" + encode_key(rule.anny_resource_id)))

    async def remove_rule(self, anny_resource_id: str) -> Rule:
        rule = await self.get_rule(anny_resource_id)
        if rule is None:
            raise NotFoundError("no rule for this anny resource", anny_resource=anny_resource_id)
        self.forget()
        await self._table.transaction([
            ("delete", {"PartitionKey": "rule", "RowKey": "res~" + encode_key(anny_resource_id)}),
            ("delete", {"PartitionKey": "rule", "RowKey": "room~" + encode_key(rule.room)}),
        ])
        return rule
