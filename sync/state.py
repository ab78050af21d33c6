"""The app's state in Azure Table Storage (architecture: state), async on `azure.data.tables.aio`.

Tables (names prefixed with TABLE_PREFIX):

| table          | PartitionKey            | RowKey                 | holds                               |
| -------------- | ----------------------- | ---------------------- | ----------------------------------- |
| rules          | `rule`                  | `res~<anny resource>`  | the rule (resource → room)          |
|                | `rule`                  | `room~<mailbox>`       | uniqueness guard of the room side   |
| links          | `b~<anny id>`           | `link`                 | link, found by anny id              |
|                | `r~<mailbox>`           | `<event id>`           | link, found by room + event id      |
| subscriptions  | `sub`                   | `<subscription id>`    | room, expiry, clientState           |
| rooms          | `room`                  | `<mailbox>`            | delta link, window, run marker      |
| status         | `status`                | `integration`          | active / inactive / deleting, …     |
| events         | `evt`                   | `<anny event id>`      | processed webhook event ids         |
| budget         | `anny`                  | `reads` / `writes`     | the organisation's anny budget log  |
|                | `throttled`             | `anny` / `graph`       | 429s received from each side        |
|                | `fallback`              | `<instance>`           | an instance's spell on the local fallback rate |

Every key part is escaped by `sync.keys.encode_key`. Writes that can race carry the ETag
read before; a lost race raises `ConcurrencyError`. Filters use parameter substitution.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.data.tables import TableTransactionError, UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from sync.errors import ConcurrencyError, EntityTooLargeError, NotFoundError, RoomNotMapped, StateError
from sync.keys import encode_key, normalise_mailbox
from sync.settings import StorageSettings, environment_proxy

T = TypeVar("T")
MAX_ENTITY_BYTES = 1024 * 1024
MAX_STRING_BYTES = 64 * 1024
TABLES = ("rules", "links", "subscriptions", "rooms", "status", "events", "budget")
RULE_TTL_S = 10.0  # as the "active" status (sync.services): a rule change reaches other instances within this
# Rules as this process last read them, per storage account and prefix (`get_rule(cached=True)`).
_rule_cache: dict[str, dict[str, tuple[float, Rule]]] = {}
FILTER_KEYS = 14  # RowKeys per query: Azure Table filters allow at most 15 comparisons
SCAN_ABOVE = 10 * FILTER_KEYS  # more events than this: their links are found by a scan of the room
MAPPED_ROW = "~mapped"  # the marker row of a room's link partition (`~` + lower case: no encoded key)


def utcnow() -> datetime:
    return datetime.now(UTC)


# --- domain records -------------------------------------------------------------------------


@dataclass
class Rule:
    anny_resource_id: str
    room: str
    time_zone: str = ""  # the anny resource's zone (all-day blockers); empty: SYNC_TIME_ZONE
    removing: bool = False  # being deleted: the worker treats resource and room as unmapped
    created_at: datetime = field(default_factory=utcnow)
    activated_at: datetime | None = None  # when its first (initial) sync ran
    # [start, end) ISO pairs: the integration was deactivated; items created then stay unsynced
    off_periods: list[list[str]] = field(default_factory=list)
    held: str = ""  # the brake on mass deletion stopped it: why, with the numbers
    held_at: datetime | None = None

    def off_spans(self) -> tuple[tuple[datetime, datetime], ...]:
        return tuple((datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in self.off_periods)


@dataclass
class Link:
    """A pair of items kept in step: an anny booking/blocker and an Outlook event."""

    room: str
    origin: str  # "anny" (mirror event) or "outlook" (mirror blocker)
    anny_id: str = ""
    event_id: str = ""
    state: str = "synced"  # "pending" while a create is in flight
    generation: int = 0
    transaction_id: str = ""
    event_change_key: str = ""
    fingerprint: str = ""
    suppressed: bool = False  # anny admin deleted our blocker: do not recreate until the event changes
    start: str = ""
    end: str = ""
    anny_version: str = ""  # the anny booking's updated_at as last seen (sync.model.booking_version)
    updated_at: datetime = field(default_factory=utcnow)
    etag: str | None = field(default=None, compare=False)

    def ended_before(self, moment: datetime) -> bool:
        """What was last written ended before `moment` (unknown span: False)."""
        return bool(self.end) and datetime.fromisoformat(self.end) <= moment

    def starts_after(self, moment: datetime) -> bool:
        """What was last written starts at or after `moment` (unknown span: False)."""
        return bool(self.start) and datetime.fromisoformat(self.start) >= moment


def time_key(moment: datetime | str) -> str:
    """A moment as a sortable, comparable Table property: UTC, fixed width (`start_key`, `end_key`
    of link rows; `start`/`end` keep the offset they were written with, which does not compare)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _link_entity(link: Link, pk: str, rk: str) -> dict[str, Any]:
    entity = _to_entity(link, pk, rk)
    if link.start:
        entity["start_key"] = time_key(link.start)
    if link.end:
        entity["end_key"] = time_key(link.end)
    return entity


@dataclass
class Subscription:
    subscription_id: str
    room: str
    expires_at: datetime
    client_state: str
    etag: str | None = field(default=None, compare=False)


@dataclass
class RoomState:
    room: str
    delta_link: str = ""
    window_start: str = ""  # the delta query window the delta link was made for
    window_end: str = ""
    covered_end: str = ""  # the end of the sync window whose events the room's runs have read
    running_since: datetime | None = None
    run_id: str = ""
    rerun_requested: bool = False
    category_ensured: bool = False
    time_keys: bool = False  # its link rows all carry sortable time keys (StateStore.add_time_keys)
    last_run_at: datetime | None = None  # last successful Outlook → anny run
    last_outbound_at: datetime | None = None  # last successful anny → Outlook reconciliation
    last_error: str = ""
    last_error_at: datetime | None = None
    etag: str | None = field(default=None, compare=False)


@dataclass
class IntegrationStatus:
    state: str = "inactive"  # active | inactive | deleting
    activated_at: datetime | None = None
    deactivated_at: datetime | None = None
    window_start: str = ""
    window_end: str = ""
    last_error: str = ""
    last_error_at: datetime | None = None
    last_sweep_at: datetime | None = None
    sweep_high_water: str = ""  # anny `updated_at` of the newest booking the last sweep saw
    nightly_day: str = ""  # the local date (SYNC_TIME_ZONE) whose nightly run finished
    nightly_claimed_at: datetime | None = None
    etag: str | None = field(default=None, compare=False)


@dataclass
class RunRecord:
    """One nightly run, sweep or resync, and what it repaired (the drift report)."""

    kind: str  # nightly | sweep | resync | activate
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    repaired: dict[str, int] = field(default_factory=dict)  # drift kind → count
    items: list[dict[str, str]] = field(default_factory=list)  # the first MAX_RUN_ITEMS repairs
    checked: dict[str, int] = field(default_factory=dict)
    held: list[str] = field(default_factory=list)  # rules the brake held during this run
    error: str = ""
    etag: str | None = field(default=None, compare=False)


MAX_RUN_ITEMS = 100
KEPT_RUNS = 20


@dataclass
class Progress:
    """How far the latest initial sync or reconciliation of one room has come, per direction."""

    room: str
    started_at: datetime = field(default_factory=utcnow)
    to_outlook_total: int = 0
    to_outlook_done: int = 0
    to_anny_total: int = 0
    to_anny_done: int = 0
    updated_at: datetime = field(default_factory=utcnow)
    continues_at: datetime | None = None  # throttled: the rest runs from the backfill queue then
    continues_reason: str = ""
    etag: str | None = field(default=None, compare=False)


@dataclass
class BudgetRecord:
    """One kind of anny request (reads or writes): the slices granted lately, shared by every instance.

    `grants` is JSON: a list of `[granted_at_epoch_s, count]` (see `sync.budget`).
    """

    kind: str
    grants: str = "[]"
    paused_until: float = 0.0  # epoch seconds: an anny 429 asked everyone to wait until then
    etag: str | None = field(default=None, compare=False)


@dataclass
class FallbackRecord:
    """One instance's spell on the local fallback rate (the budget table was unreachable for it), in epoch s."""

    instance: str
    since: float
    last_seen: float  # when it last said it was still in fallback
    ended: float = 0.0  # 0: still in fallback as far as anyone knows
    error: str = ""
    etag: str | None = field(default=None, compare=False)


# --- size limits (Azurite does not enforce them; Azure does) -------------------------------


def _value_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-16-le")) + 4
    if isinstance(value, bytes):
        return len(value) + 4
    return 8


def check_entity_size(entity: dict[str, Any], **context: Any) -> None:
    """Raise EntityTooLargeError where Azure would refuse the entity (strings ≤ 64 KiB, entity ≤ 1 MiB)."""
    total = 4 + 2 * (len(entity["PartitionKey"]) + len(entity["RowKey"]))
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey"):
            continue
        if isinstance(value, str) and len(value.encode("utf-16-le")) > MAX_STRING_BYTES:
            raise EntityTooLargeError(f"property {name} exceeds 64 KiB", **context)
        total += 8 + 2 * len(name) + _value_bytes(value)
    if total > MAX_ENTITY_BYTES:
        raise EntityTooLargeError("entity exceeds 1 MiB", **context)


# --- (de)serialising dataclasses ------------------------------------------------------------


def _to_entity(record: Any, pk: str, rk: str) -> dict[str, Any]:
    entity: dict[str, Any] = {"PartitionKey": pk, "RowKey": rk}
    for f in dataclasses.fields(record):
        if f.name == "etag":
            continue
        value = getattr(record, f.name)
        if value is None:
            continue
        if isinstance(value, (list, dict, frozenset, set)):
            value = json.dumps(sorted(value) if isinstance(value, (set, frozenset)) else value)
        entity[f.name] = value
    return entity


def _from_entity(cls: type, entity: Any) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    values = {k: v for k, v in entity.items() if k in names and k != "etag"}
    for key, value in values.items():
        if isinstance(value, datetime) and value.tzinfo is None:
            values[key] = value.replace(tzinfo=UTC)
        elif isinstance(value, str) and str(names[key].type).startswith(("dict[", "list[")):
            values[key] = json.loads(value)
    record = cls(**values)
    record.etag = entity.metadata.get("etag") if hasattr(entity, "metadata") else None
    return record


# --- the store --------------------------------------------------------------------------------


class StateStore:
    """Async repository over the app's tables. Use as `async with StateStore(...) as store:`."""

    def __init__(self, storage: StorageSettings, prefix: str = "annysync", *, retry_total: int | None = None) -> None:
        """`retry_total`: the SDK's retries of a failed request (None: the SDK's default)."""
        self._client_options: dict[str, Any] = {} if retry_total is None else {"retry_total": retry_total}
        self._storage = storage
        self._prefix = prefix
        self._cache_scope = f"{storage.connection_string or storage.table_service_uri}|{prefix}"
        self._service: TableServiceClient | None = None
        self._tables: dict[str, TableClient] = {}
        self._credential: Any = None
        self.operations = 0  # Table requests made, for benchmarks and status
        self.operations_by: Counter[str] = Counter()  # the same, by "<operation> <table>"

    async def __aenter__(self) -> StateStore:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self, create_tables: bool = True) -> None:
        transport = AioHttpTransport(use_env_settings=environment_proxy())
        if self._storage.connection_string:
            self._service = TableServiceClient.from_connection_string(self._storage.connection_string,
                                                                      transport=transport, **self._client_options)
        else:
            from azure.identity.aio import DefaultAzureCredential

            self._credential = DefaultAzureCredential(
                managed_identity_client_id=self._storage.client_id or None)
            self._service = TableServiceClient(self._storage.table_service_uri, credential=self._credential,
                                               transport=transport, **self._client_options)
        for name in TABLES:
            self._tables[name] = self._service.get_table_client(f"{self._prefix}{name}")
        if create_tables:
            for name in TABLES:
                await self._create_table(name)

    async def _create_table(self, name: str) -> None:
        try:
            await self._tables[name].create_table()
        except ResourceExistsError:
            pass

    async def close(self) -> None:
        for client in self._tables.values():
            await client.close()
        if self._service is not None:
            await self._service.close()
        if self._credential is not None:
            await self._credential.close()

    # -- primitive operations, each counted and with errors mapped ----------------------------

    def _count(self, operation: str, table: str) -> None:
        self.operations += 1
        self.operations_by[f"{operation} {table}"] += 1

    async def _get(self, table: str, pk: str, rk: str) -> Any | None:
        self._count("get", table)
        try:
            return await self._tables[table].get_entity(pk, rk)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            raise StateError(f"reading {table} failed: {exc.message}", table=table) from exc

    async def _create(self, table: str, entity: dict[str, Any]) -> str | None:
        check_entity_size(entity, table=table)
        self._count("create", table)
        try:
            meta = await self._tables[table].create_entity(entity)
        except ResourceExistsError as exc:
            raise ConcurrencyError("entity exists already", table=table, key=entity["RowKey"]) from exc
        return meta.get("etag")

    async def _replace(self, table: str, entity: dict[str, Any], etag: str | None) -> str | None:
        """Write `entity`; with an ETag only if unchanged since read, without one create-only."""
        if etag is None:
            return await self._create(table, entity)
        check_entity_size(entity, table=table)
        self._count("replace", table)
        try:
            meta = await self._tables[table].update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise ConcurrencyError("entity changed since it was read", table=table,
                                   key=entity["RowKey"]) from exc
        return meta.get("etag")

    async def _upsert(self, table: str, entity: dict[str, Any]) -> str | None:
        check_entity_size(entity, table=table)
        self._count("upsert", table)
        meta = await self._tables[table].upsert_entity(entity, mode=UpdateMode.REPLACE)
        return meta.get("etag")

    async def _delete(self, table: str, pk: str, rk: str, etag: str | None = None) -> None:
        self._count("delete", table)
        kwargs: dict[str, Any] = {}
        if etag is not None:
            kwargs = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        try:
            await self._tables[table].delete_entity(pk, rk, **kwargs)
        except ResourceModifiedError as exc:
            raise ConcurrencyError("entity changed since it was read", table=table, key=rk) from exc
        except ResourceNotFoundError:
            pass

    async def _query(self, table: str, query: str, **parameters: Any) -> AsyncIterator[Any]:
        self._count("query", table)
        async for entity in self._tables[table].query_entities(query, parameters=parameters):
            yield entity

    # -- rules ------------------------------------------------------------------------------------

    async def add_rule(self, rule: Rule) -> Rule:
        """Store a rule; both the resource and the room must be unmapped (atomic on both sides).
        Then the room's marker row is set (see `save_link(..., guarded=True)`)."""
        rule.room = normalise_mailbox(rule.room)
        entity = _to_entity(rule, "rule", "res~" + encode_key(rule.anny_resource_id))
        guard = {"PartitionKey": "rule", "RowKey": "room~" + encode_key(rule.room),
                 "anny_resource_id": rule.anny_resource_id}
        self._forget_rules()
        self._count("transaction", "rules")
        try:
            await self._tables["rules"].submit_transaction([("create", entity), ("create", guard)])
        except (TableTransactionError, ResourceExistsError) as exc:
            raise ConcurrencyError("resource or room is mapped already", anny_resource=rule.anny_resource_id,
                                   room=rule.room) from exc
        await self.mark_room_mapped(rule.room)
        return rule

    async def get_rule(self, anny_resource_id: str, *, cached: bool = False) -> Rule | None:
        """The rule of an anny resource. `cached`: a rule this process read less than RULE_TTL_S ago
        will do (hot paths; a missing rule is always read, so a new rule is never missed)."""
        return await self._rule_at("res~" + encode_key(anny_resource_id), cached)

    async def get_rule_for_room(self, room: str, *, cached: bool = False) -> Rule | None:
        """The rule that maps the room (`cached`: as `get_rule`)."""
        return await self._rule_at("room~" + encode_key(normalise_mailbox(room)), cached)

    async def _rule_at(self, row: str, cached: bool) -> Rule | None:
        scope = _rule_cache.setdefault(self._cache_scope, {})
        seen = scope.get(row)
        if cached and seen is not None and time.monotonic() - seen[0] < RULE_TTL_S:
            return copy.deepcopy(seen[1])
        entity = await self._get("rules", "rule", row)
        if entity is not None and row.startswith("room~"):
            entity = await self._get("rules", "rule", "res~" + encode_key(entity["anny_resource_id"]))
        if entity is None:
            scope.pop(row, None)
            return None
        rule: Rule = _from_entity(Rule, entity)
        scope[row] = (time.monotonic(), copy.deepcopy(rule))
        return rule

    def _forget_rules(self) -> None:
        """A rule written through this process: every cached rule is read again."""
        _rule_cache.pop(self._cache_scope, None)

    async def list_rules(self) -> list[Rule]:
        rules = [_from_entity(Rule, e) async for e in self._query(
            "rules", "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            pk="rule", low="res~", high="res\x7f")]
        return sorted(rules, key=lambda r: r.anny_resource_id)

    async def save_rule(self, rule: Rule) -> None:
        self._forget_rules()
        await self._upsert("rules", _to_entity(rule, "rule", "res~" + encode_key(rule.anny_resource_id)))

    async def remove_rule(self, anny_resource_id: str) -> Rule:
        rule = await self.get_rule(anny_resource_id)
        if rule is None:
            raise NotFoundError("no rule for this anny resource", anny_resource=anny_resource_id)
        self._forget_rules()
        self._count("transaction", "rules")
        await self._tables["rules"].submit_transaction([
            ("delete", {"PartitionKey": "rule", "RowKey": "res~" + encode_key(anny_resource_id)}),
            ("delete", {"PartitionKey": "rule", "RowKey": "room~" + encode_key(rule.room)}),
        ])
        return rule

    # -- links ------------------------------------------------------------------------------------

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
        await self._upsert("links", {"PartitionKey": self._room_partition(room), "RowKey": MAPPED_ROW})

    async def mark_room_unmapped(self, room: str) -> None:
        await self._delete("links", self._room_partition(room), MAPPED_ROW)

    async def link_by_anny_id(self, anny_id: str) -> Link | None:
        return await self._link_at(self._anny_key(anny_id))

    async def link_by_event(self, room: str, event_id: str) -> Link | None:
        return await self._link_at(self._event_key(room, event_id))

    async def _link_at(self, key: tuple[str, str]) -> Link | None:
        """The link stored at `key`. An index copy is only a pointer: the owner is read (for its
        ETag), and an index whose owner no longer names this key (left over by a crash) is ignored.
        """
        entity = await self._get("links", *key)
        return None if entity is None else await self._link_from(key, entity)

    async def _link_from(self, key: tuple[str, str], entity: Any) -> Link | None:
        link: Link = _from_entity(Link, entity)
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
            async for entity in self._query("links", "PartitionKey eq @pk", pk=pk):
                if entity["RowKey"] in keys:
                    found[(entity["PartitionKey"], entity["RowKey"])] = entity
            wanted = []
        for first in range(0, len(wanted), FILTER_KEYS):
            chunk = {f"k{i}": encode_key(event_id) for i, event_id in enumerate(wanted[first:first + FILTER_KEYS])}
            rows = " or ".join(f"RowKey eq @{name}" for name in chunk)
            async for entity in self._query("links", f"PartitionKey eq @pk and ( {rows} )", pk=pk, **chunk):
                found[(entity["PartitionKey"], entity["RowKey"])] = entity
        links = await asyncio.gather(*(self._link_from(key, entity) for key, entity in found.items()))
        return {link.event_id: link for link in links if link is not None}

    async def owner_link(self, link: Link) -> Link | None:
        """Re-read the authoritative copy of a link (with its ETag)."""
        entity = await self._get("links", *self._owner_key(link))
        return _from_entity(Link, entity) if entity else None

    async def save_link(self, link: Link, previous_index: tuple[str, str] | None = None, *,
                        guarded: bool = False, index: bool = True) -> Link:
        """Write the link's index entity, then its owner (ETag-guarded; create-only without an ETag).

        The owner is written last, so a crash in between leaves the owner as it was and the
        retried work item redoes the step. Reads through an index always check the owner
        (`_link_at`), so an index that ran ahead or stayed behind is never believed. A lost
        race raises ConcurrencyError.

        `guarded`: every row written into the room's partition is written in one transaction
        with the room's marker row, so it is written only while a rule maps the room; otherwise
        RoomNotMapped is raised and nothing of that row is written (the rule-removal race of
        behaviour: rules, activation and removal; settled without a read). `index=False` leaves
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
            await self._delete("links", *previous_index)
        return link

    async def _write_link(self, link: Link, operation: tuple[Any, ...], guarded: bool) -> str | None:
        """One link row written; a guarded row of the room's partition together with its marker."""
        kind, entity = operation[0], operation[1]
        if not (guarded and entity["PartitionKey"] == self._room_partition(link.room)):
            if kind == "upsert":
                return await self._upsert("links", entity)
            return await self._replace("links", entity, link.etag if kind == "update" else None)
        check_entity_size(entity, table="links")
        marker = {"PartitionKey": entity["PartitionKey"], "RowKey": MAPPED_ROW}
        for attempt in range(2):
            self._count("transaction", "links")
            try:
                done = await self._tables["links"].submit_transaction(
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
        rule = await self.get_rule_for_room(room)
        if rule is None or rule.removing:
            return False
        await self.mark_room_mapped(room)
        rule = await self.get_rule_for_room(room)
        if rule is None or rule.removing:
            await self.mark_room_unmapped(room)
            return False
        return True

    def index_key_of(self, link: Link) -> tuple[str, str] | None:
        return self._index_key(link)

    async def delete_link(self, link: Link) -> None:
        """Remove both entities of a link (ETag-guarded on the owner)."""
        await self._delete("links", *self._owner_key(link), etag=link.etag)
        index = self._index_key(link)
        if index is not None:
            await self._delete("links", *index)

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
        return [_from_entity(Link, e) async for e in self._query("links", query, **parameters)
                if e["RowKey"] != MAPPED_ROW]

    async def add_time_keys(self, room: str) -> int:
        """Give the room's link rows written before sortable time keys existed theirs (once per
        room); a row changed meanwhile was written with keys. Returns how many were updated."""
        updated = 0
        async for entity in self._query("links", "PartitionKey eq @pk", pk=self._room_partition(room)):
            keys = {name: time_key(entity[field]) for name, field in (("start_key", "start"), ("end_key", "end"))
                    if entity.get(field) and name not in entity}
            if not keys:
                continue
            self._count("merge", "links")
            try:
                await self._tables["links"].update_entity(
                    {"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"], **keys},
                    mode=UpdateMode.MERGE, etag=entity.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified)
                updated += 1
            except (ResourceModifiedError, ResourceNotFoundError):
                pass
        return updated

    async def all_links_of_room(self, room: str) -> list[Link]:
        """Every link of a room, pending ones included (a scan: for deletion and maintenance only)."""
        owners: dict[tuple[str, str], Link] = {}
        referenced: dict[tuple[str, str], Link] = {}
        async for entity in self._query("links", "room eq @room", room=normalise_mailbox(room)):
            link: Link = _from_entity(Link, entity)
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
        async for entity in self._query("links", "PartitionKey ge @low", low=""):
            if entity["RowKey"] == MAPPED_ROW:
                continue
            link: Link = _from_entity(Link, entity)
            if self._owner_key(link) == (entity["PartitionKey"], entity["RowKey"]):
                owners.append(link)
        return owners

    async def clear_all(self) -> int:
        """Delete every entity of the app's tables (the tables stay: their names are reused at once)."""
        self._forget_rules()
        removed = 0
        for name in TABLES:
            async for entity in self._query(name, "PartitionKey ge @low", low=""):
                await self._delete(name, entity["PartitionKey"], entity["RowKey"])
                removed += 1
        return removed

    # -- subscriptions ------------------------------------------------------------------------------

    async def save_subscription(self, sub: Subscription) -> Subscription:
        sub.room = normalise_mailbox(sub.room)
        sub.etag = await self._upsert("subscriptions", _to_entity(sub, "sub", encode_key(sub.subscription_id)))
        return sub

    async def get_subscription(self, subscription_id: str) -> Subscription | None:
        entity = await self._get("subscriptions", "sub", encode_key(subscription_id))
        return _from_entity(Subscription, entity) if entity else None

    async def subscriptions_of_room(self, room: str) -> list[Subscription]:
        return [_from_entity(Subscription, e) async for e in self._query(
            "subscriptions", "PartitionKey eq @pk and room eq @room", pk="sub", room=normalise_mailbox(room))]

    async def list_subscriptions(self) -> list[Subscription]:
        return [_from_entity(Subscription, e) async for e in self._query(
            "subscriptions", "PartitionKey eq @pk", pk="sub")]

    async def delete_subscription(self, subscription_id: str) -> None:
        await self._delete("subscriptions", "sub", encode_key(subscription_id))

    # -- per-room sync state ---------------------------------------------------------------------

    async def get_room_state(self, room: str) -> RoomState:
        """The room's state; a fresh unsaved one (etag None) when there is none yet."""
        room = normalise_mailbox(room)
        entity = await self._get("rooms", "room", encode_key(room))
        return _from_entity(RoomState, entity) if entity else RoomState(room=room)

    async def save_room_state(self, state: RoomState) -> RoomState:
        """ETag-guarded write (create-only when never saved); a lost race raises ConcurrencyError."""
        state.room = normalise_mailbox(state.room)
        try:
            state.etag = await self._replace("rooms", _to_entity(state, "room", encode_key(state.room)),
                                             state.etag)
        except ConcurrencyError as exc:
            raise ConcurrencyError("room state was written by someone else", room=state.room) from exc
        return state

    async def list_room_states(self) -> list[RoomState]:
        return [_from_entity(RoomState, e) async for e in self._query("rooms", "PartitionKey eq @pk", pk="room")]

    async def delete_room_state(self, room: str) -> None:
        await self._delete("rooms", "room", encode_key(normalise_mailbox(room)))

    # -- integration status ---------------------------------------------------------------------------

    async def get_status(self) -> IntegrationStatus:
        entity = await self._get("status", "status", "integration")
        return _from_entity(IntegrationStatus, entity) if entity else IntegrationStatus()

    async def save_status(self, status: IntegrationStatus) -> IntegrationStatus:
        status.etag = await self._replace("status", _to_entity(status, "status", "integration"), status.etag)
        return status

    async def update_status(self, change: Callable[[IntegrationStatus], object]) -> IntegrationStatus:
        """Read, change and write the status, again after a lost race."""
        return await self._update(self.get_status, change, self.save_status)

    async def update_room_state(self, room: str, change: Callable[[RoomState], object]) -> RoomState:
        """Read, change and write a room's state, again after a lost race; `change` returning
        False leaves it as it is."""
        return await self._update(lambda: self.get_room_state(room), change, self.save_room_state)

    @staticmethod
    async def _update(read: Callable[[], Awaitable[T]], change: Callable[[T], object],
                      save: Callable[[T], Awaitable[T]], attempts: int = 5) -> T:
        for _ in range(attempts):
            record = await read()
            if change(record) is False:
                return record
            try:
                return await save(record)
            except ConcurrencyError:
                continue
        raise ConcurrencyError("the entity kept changing while it was updated", attempts=attempts)

    # -- run records (the drift report) -----------------------------------------------------------

    async def save_run(self, run: RunRecord) -> None:
        """Store a run (newest first by key) and forget all but the last KEPT_RUNS."""
        run.items = run.items[:MAX_RUN_ITEMS]
        key = f"{10**15 - int(run.started_at.timestamp() * 1000):015d}~{run.kind}"  # newest first
        await self._upsert("status", _to_entity(run, "run", key))
        for old in (await self._run_entities())[KEPT_RUNS:]:
            await self._delete("status", old["PartitionKey"], old["RowKey"])

    async def _run_entities(self) -> list[Any]:
        found = [e async for e in self._query("status", "PartitionKey eq @pk", pk="run")]
        return sorted(found, key=lambda e: e["RowKey"])

    async def list_runs(self) -> list[RunRecord]:
        """Runs, newest first."""
        return [_from_entity(RunRecord, e) for e in await self._run_entities()]
    # -- initial sync progress (sync.progress) ------------------------------------------------------------

    async def get_progress(self, room: str) -> Progress:
        room = normalise_mailbox(room)
        entity = await self._get("status", "progress", encode_key(room))
        return _from_entity(Progress, entity) if entity else Progress(room)

    async def update_progress(self, room: str, change: Callable[[Progress], object]) -> Progress:
        async def save(progress: Progress) -> Progress:
            progress.updated_at = utcnow()
            progress.etag = await self._replace("status", _to_entity(progress, "progress", encode_key(progress.room)),
                                                progress.etag)
            return progress

        return await self._update(lambda: self.get_progress(room), change, save, attempts=10)

    async def list_progress(self) -> list[Progress]:
        return [_from_entity(Progress, e) async for e in self._query("status", "PartitionKey eq @pk", pk="progress")]

    # -- the anny budget (sync.budget) ------------------------------------------------------------------

    async def get_budget(self, kind: str) -> BudgetRecord:
        """The budget log of `kind`; a fresh unsaved one (etag None) when there is none yet."""
        entity = await self._get("budget", "anny", kind)
        return _from_entity(BudgetRecord, entity) if entity else BudgetRecord(kind)

    async def save_budget(self, record: BudgetRecord) -> BudgetRecord:
        """ETag-guarded write (create-only when never saved); a lost race raises ConcurrencyError."""
        record.etag = await self._replace("budget", _to_entity(record, "anny", record.kind), record.etag)
        return record

    async def save_fallback(self, record: FallbackRecord) -> None:
        await self._upsert("budget", _to_entity(record, "fallback", encode_key(record.instance)))

    async def list_fallbacks(self) -> list[FallbackRecord]:
        return [_from_entity(FallbackRecord, e) async for e in self._query(
            "budget", "PartitionKey eq @pk", pk="fallback")]

    async def delete_fallback(self, instance: str) -> None:
        await self._delete("budget", "fallback", encode_key(instance))

    async def count_throttled(self, source: str) -> None:
        """One more 429 received from `source` ("anny" or "graph") that reached the app."""
        async def read() -> dict[str, Any]:
            entity = await self._get("budget", "throttled", source)
            return dict(entity or {"PartitionKey": "throttled", "RowKey": source, "count": 0}) | {
                "_etag": entity.metadata.get("etag") if entity is not None else None}

        async def save(entity: dict[str, Any]) -> dict[str, Any]:
            etag = entity.pop("_etag")
            await self._replace("budget", entity, etag)
            return entity

        await self._update(read, lambda e: e.__setitem__("count", int(e["count"]) + 1), save)

    async def throttled_counts(self) -> dict[str, int]:
        return {e["RowKey"]: int(e["count"]) async for e in self._query(
            "budget", "PartitionKey eq @pk", pk="throttled")}

    # -- processed webhook event ids ------------------------------------------------------------------

    async def is_processed(self, event_id: str) -> bool:
        return await self._get("events", "evt", encode_key(event_id)) is not None

    async def mark_processed(self, event_id: str, keep_for: timedelta) -> None:
        entity = {"PartitionKey": "evt", "RowKey": encode_key(event_id), "expires_at": utcnow() + keep_for}
        await self._upsert("events", entity)

    async def purge_processed(self, now: datetime | None = None) -> int:
        """Forget event ids whose retention ended; returns how many were removed."""
        expired = [e async for e in self._query(
            "events", "PartitionKey eq @pk and expires_at lt @now", pk="evt", now=now or utcnow())]
        for entity in expired:
            await self._delete("events", entity["PartitionKey"], entity["RowKey"])
        return len(expired)

