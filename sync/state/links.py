"""The `links` table: a pair of items kept in step (an anny booking or blocker and an Outlook event).

| PartitionKey | RowKey | holds |
| --- | --- | --- |
| `b~<anny id>` | `link` | the link, found by its anny id |
| `r~<mailbox>` | `<event id>` | the link, found by room and event id; sortable UTC `start_key`/`end_key` |
| `r~<mailbox>` | `~mapped` | the room's marker: present while a rule maps the room |

A link's *owner* is the row of the side it started from, the other row an index copy, written
first and never believed without its owner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from azure.core import MatchConditions
from azure.data.tables import TableTransactionError, UpdateMode

from sync.errors import ConcurrencyError, RoomNotMapped
from sync.keys import encode_key, normalise_mailbox
from sync.state.records import Link, time_key, utcnow
from sync.state.rules import RulesTable
from sync.state.table import Tables, from_entity, to_entity

FILTER_KEYS = 14  # RowKeys per query: Azure Table filters allow at most 15 comparisons
SCAN_ABOVE = 10 * FILTER_KEYS  # more events than this: their links are found by a scan of the room
MAPPED_ROW = "~mapped"  # the marker row of a room's link partition (`~` + lower case: no encoded key)


def _link_entity(link: Link, pk: str, rk: str) -> dict[str, Any]:
    entity = to_entity(link, pk, rk)
    if link.start:
        entity["start_key"] = time_key(link.start)
    if link.end:
        entity["end_key"] = time_key(link.end)
    return entity


class LinksTable:
    def __init__(self, tables: Tables, rules: RulesTable) -> None:
        self._table = tables.table("links")
        self._rules = rules  # a room mapped before marker rows existed gets its marker after a look at its rule

    @staticmethod
    def _anny_key(anny_id: str) -> tuple[str, str]:
        return "b~" + encode_key(anny_id), "link"

    @staticmethod
    def _event_key(room: str, event_id: str) -> tuple[str, str]:
        return "r~" + encode_key(normalise_mailbox(room)), encode_key(event_id)

    def _owner_key(self, link: Link) -> tuple[str, str]:
        """The entity that settles races: keyed by the side the link started from."""
        if link.origin == "anny":
            return self._anny_key(link.anny_id)
        return self._event_key(link.room, link.event_id)

    def _index_key(self, link: Link) -> tuple[str, str] | None:
        if link.origin == "anny":
            return self._event_key(link.room, link.event_id) if link.event_id else None
        return self._anny_key(link.anny_id) if link.anny_id else None

    @staticmethod
    def _room_partition(room: str) -> str:
        return "r~" + encode_key(normalise_mailbox(room))

    async def mark_room_mapped(self, room: str) -> None:
        """Set the room's marker row: guarded link writes (`save_link(..., guarded=True)`) succeed
        only while it exists. A rule's addition sets it, its removal deletes it before scanning."""
        await self._table.upsert({"PartitionKey": self._room_partition(room), "RowKey": MAPPED_ROW})

    async def mark_room_unmapped(self, room: str) -> None:
        await self._table.delete(self._room_partition(room), MAPPED_ROW)

    async def link_by_anny_id(self, anny_id: str) -> Link | None:
        return await self._link_at(self._anny_key(anny_id))

    async def link_by_event(self, room: str, event_id: str) -> Link | None:
        return await self._link_at(self._event_key(room, event_id))

    async def _link_at(self, key: tuple[str, str]) -> Link | None:
        """The link stored at `key`. An index copy is only a pointer: the owner is read (for its
        ETag), and an index whose owner no longer names this key (left over by a crash) is ignored.
        """
        entity = await self._table.get(*key)
        return None if entity is None else await self._link_from(key, entity)

    async def _link_from(self, key: tuple[str, str], entity: Any) -> Link | None:
        link: Link = from_entity(Link, entity)
        if self._owner_key(link) == key:
            return link
        owner = await self.owner_link(link)
        if owner is None or self._index_key(owner) != key:
            return None
        return owner

    async def links_by_events(self, room: str, event_ids: Sequence[str]) -> dict[str, Link]:
        """The links of many events of one room, in a few queries instead of a read each: Azure
        allows at most 15 comparisons per filter, so RowKeys go in chunks of 14. Index copies are
        resolved to their owners as `link_by_event` does."""
        pk, found = self._room_partition(room), {}
        wanted = sorted(set(event_ids))
        if len(wanted) > SCAN_ABOVE:  # a baseline: one scan of the partition costs fewer requests
            keys = {encode_key(event_id) for event_id in wanted}
            async for entity in self._table.query("PartitionKey eq @pk", pk=pk):
                if entity["RowKey"] in keys:
                    found[(entity["PartitionKey"], entity["RowKey"])] = entity
            wanted = []
        for first in range(0, len(wanted), FILTER_KEYS):
            chunk = {f"k{i}": encode_key(event_id) for i, event_id in enumerate(wanted[first:first + FILTER_KEYS])}
            rows = " or ".join(f"RowKey eq @{name}" for name in chunk)
            async for entity in self._table.query(f"PartitionKey eq @pk and ( {rows} )", pk=pk, **chunk):
                found[(entity["PartitionKey"], entity["RowKey"])] = entity
        links = await asyncio.gather(*(self._link_from(key, entity) for key, entity in found.items()))
        return {link.event_id: link for link in links if link is not None}

    async def owner_link(self, link: Link) -> Link | None:
        """Re-read the authoritative copy of a link (with its ETag)."""
        entity = await self._table.get(*self._owner_key(link))
        return from_entity(Link, entity) if entity else None

    async def save_link(self, link: Link, previous_index: tuple[str, str] | None = None, *,
                        guarded: bool = False, index: bool = True) -> Link:
        """Write the link's index entity, then its owner (ETag-guarded; create-only without an ETag).

        The owner is written last, so a crash in between leaves the owner as it was and the
        retried work item redoes the step. Reads through an index always check the owner
        (`_link_at`), so an index that ran ahead or stayed behind is never believed. A lost
        race raises ConcurrencyError.

        `guarded`: a row this write *adds* to the room's partition (created, or upserted without
        an ETag) goes in one transaction with the room's marker row, so it is written only while a
        rule maps the room; otherwise RoomNotMapped is raised and nothing of that row is written
        (the rule-removal race of behaviour: rules, activation and removal; settled without a
        read). A row replaced by its ETag needs no marker: it existed before, so the removal's
        scan, which starts once the marker is gone, finds it, and the ETag decides who came
        second: the removal's delete fails and it removes what the link names now, or this
        replace fails with ConcurrencyError and its writer undoes what it wrote. `index=False` leaves
        the index copy as it is, for a change that no reader of index copies looks at (the anny
        version the link saw).
        """
        link.room = normalise_mailbox(link.room)
        link.updated_at = utcnow()
        context = {"room": link.room, "anny_id": link.anny_id or None, "event_id": link.event_id or None}
        index_key = self._index_key(link)
        if index and index_key is not None:
            await self._write_link(link, ("upsert", _link_entity(link, *index_key)), guarded)
        owner = _link_entity(link, *self._owner_key(link))
        write: tuple[Any, ...] = ("create", owner) if link.etag is None else (
            "update", owner, {"mode": UpdateMode.REPLACE, "etag": link.etag,
                              "match_condition": MatchConditions.IfNotModified})
        try:
            link.etag = await self._write_link(link, write, guarded)
        except ConcurrencyError as exc:
            raise ConcurrencyError("link was written by someone else", **context) from exc
        if previous_index and previous_index != index_key:
            await self._table.delete(*previous_index)
        return link

    async def _write_link(self, link: Link, operation: tuple[Any, ...], guarded: bool) -> str | None:
        """One link row written; a guarded row added to the room's partition together with its
        marker (a transaction costs about 2.5 times the CPU of a plain write, see `save_link` for
        why a replace by ETag does without)."""
        kind, entity = operation[0], operation[1]
        adds_to_room = kind != "update" and entity["PartitionKey"] == self._room_partition(link.room)
        if not (guarded and adds_to_room):
            if kind == "upsert":
                return await self._table.upsert(entity)
            return await self._table.replace(entity, link.etag if kind == "update" else None)
        marker = {"PartitionKey": entity["PartitionKey"], "RowKey": MAPPED_ROW}
        for attempt in range(2):
            try:
                done = await self._table.transaction(
                    [operation, ("update", marker, {"mode": UpdateMode.MERGE})])
                return done[0].get("etag")
            except TableTransactionError as exc:
                if exc.index != 1:  # the link row itself: changed since read, or exists already
                    raise ConcurrencyError("entity changed since it was read", table="links",
                                           key=entity["RowKey"]) from exc
                if attempt == 0 and await self._repair_marker(link.room):
                    continue
                raise RoomNotMapped("no rule maps the room (any more)", room=link.room,
                                    anny_id=link.anny_id or None, event_id=link.event_id or None) from exc
        raise AssertionError("unreachable")

    async def _repair_marker(self, room: str) -> bool:
        """A room mapped before marker rows existed gets its marker (once). The rule is read again
        after the marker is written: a removal sets `removing` before it deletes the marker, so
        either that read sees the removal or the removal deletes this marker before its scan."""
        rule = await self._rules.get_rule_for_room(room)
        if rule is None or rule.removing:
            return False
        await self.mark_room_mapped(room)
        rule = await self._rules.get_rule_for_room(room)
        if rule is None or rule.removing:
            await self.mark_room_unmapped(room)
            return False
        return True

    def index_key_of(self, link: Link) -> tuple[str, str] | None:
        return self._index_key(link)

    async def delete_link(self, link: Link) -> None:
        """Remove both entities of a link (ETag-guarded on the owner)."""
        await self._table.delete(*self._owner_key(link), etag=link.etag)
        index = self._index_key(link)
        if index is not None:
            await self._table.delete(*index)

    async def links_of_room(self, room: str, *, starting_from: datetime | None = None,
                            ending_after: datetime | None = None) -> list[Link]:
        """The link rows of the room's partition (owners of Outlook-side links, index copies of
        anny-side ones), optionally only those starting at or after `starting_from` or ending after
        `ending_after`: a filtered query on the rows' sortable UTC keys, not a scan of the room.
        Rows written before the keys existed have none; `add_time_keys` gives them theirs."""
        query, parameters = "PartitionKey eq @pk", {"pk": self._room_partition(room)}
        if starting_from is not None:
            query, parameters["start"] = query + " and start_key ge @start", time_key(starting_from)
        if ending_after is not None:
            query, parameters["end"] = query + " and end_key gt @end", time_key(ending_after)
        return [from_entity(Link, e) async for e in self._table.query(query, **parameters)
                if e["RowKey"] != MAPPED_ROW]

    async def add_time_keys(self, room: str) -> int:
        """Give the room's link rows written before sortable time keys existed theirs (once per
        room); a row changed meanwhile was written with keys. Returns how many were updated."""
        updated = 0
        async for entity in self._table.query("PartitionKey eq @pk", pk=self._room_partition(room)):
            keys = {name: time_key(entity[field]) for name, field in (("start_key", "start"), ("end_key", "end"))
                    if entity.get(field) and name not in entity}
            if not keys:
                continue
            if await self._table.merge({"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"], **keys},
                                       entity.metadata["etag"]):
                updated += 1
        return updated

    async def all_links_of_room(self, room: str) -> list[Link]:
        """Every link of a room, pending ones included (a scan: for deletion and maintenance only)."""
        owners: dict[tuple[str, str], Link] = {}
        referenced: dict[tuple[str, str], Link] = {}
        async for entity in self._table.query("room eq @room", room=normalise_mailbox(room)):
            link: Link = from_entity(Link, entity)
            key = self._owner_key(link)
            if key == (entity["PartitionKey"], entity["RowKey"]):
                owners[key] = link
            else:
                referenced[key] = link
        for key, link in referenced.items():
            if key not in owners:
                owner = await self.owner_link(link)
                if owner is not None and owner.room == link.room and self._index_key(owner) == self._index_key(link):
                    owners[key] = owner  # a stale index copy must not pull in another room's link
        return list(owners.values())

    async def all_links(self) -> list[Link]:
        """Every link (their owners), for deleting the whole integration."""
        owners = []
        async for entity in self._table.query("PartitionKey ge @low", low=""):
            if entity["RowKey"] == MAPPED_ROW:
                continue
            link: Link = from_entity(Link, entity)
            if self._owner_key(link) == (entity["PartitionKey"], entity["RowKey"]):
                owners.append(link)
        return owners
