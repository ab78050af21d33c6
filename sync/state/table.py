"""The one shared Table Storage helper: clients, counted operations with ETags mapped to
`ConcurrencyError`, size checks (Azurite does not enforce Azure's limits), and the (de)serialising
of the records. Every repository of `sync.state` works through a `Table` of its own.

Every key part is escaped by `sync.keys.encode_key`; filters use parameter substitution.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient, TableServiceClient

from sync.errors import ConcurrencyError, EntityTooLargeError, StateError
from sync.settings import StorageSettings, environment_proxy

T = TypeVar("T")
MAX_ENTITY_BYTES = 1024 * 1024
MAX_STRING_BYTES = 64 * 1024
TABLES = ("rules", "links", "subscriptions", "rooms", "status", "events", "budget")
Operation = tuple[Any, ...]  # ("create" | "upsert" | "update" | "delete", entity[, options]) of a transaction


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


def to_entity(record: Any, pk: str, rk: str) -> dict[str, Any]:
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


def from_entity(cls: type, entity: Any) -> Any:
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


async def update(read: Callable[[], Awaitable[T]], change: Callable[[T], object],
                 save: Callable[[T], Awaitable[T]], attempts: int = 5) -> T:
    """Read, change and write, again after a lost race; `change` returning False writes nothing."""
    for _ in range(attempts):
        record = await read()
        if change(record) is False:
            return record
        try:
            return await save(record)
        except ConcurrencyError:
            continue
    raise ConcurrencyError("the entity kept changing while it was updated", attempts=attempts)


class Tables:
    """The app's tables in one storage account (names prefixed with TABLE_PREFIX), and the count of
    requests made to them. Use as `async with Tables(storage, prefix) as tables:`."""

    def __init__(self, storage: StorageSettings, prefix: str = "annysync", *, retry_total: int | None = None) -> None:
        """`retry_total`: the SDK's retries of a failed request (None: the SDK's default)."""
        self._client_options: dict[str, Any] = {} if retry_total is None else {"retry_total": retry_total}
        self._storage = storage
        self._prefix = prefix
        self.scope = f"{storage.connection_string or storage.table_service_uri}|{prefix}"  # for caches
        self._service: TableServiceClient | None = None
        self._clients: dict[str, TableClient] = {}
        self._credential: Any = None
        self.operations = 0  # Table requests made, for benchmarks and status
        self.operations_by: Counter[str] = Counter()  # the same, by "<operation> <table>"

    async def __aenter__(self) -> Tables:
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
            self._clients[name] = self._service.get_table_client(f"{self._prefix}{name}")
        if create_tables:
            for name in TABLES:
                try:
                    await self._clients[name].create_table()
                except ResourceExistsError:
                    pass

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        if self._service is not None:
            await self._service.close()
        if self._credential is not None:
            await self._credential.close()

    def table(self, name: str) -> Table:
        return Table(self, name)

    def client(self, name: str) -> TableClient:
        return self._clients[name]

    def count(self, operation: str, table: str) -> None:
        self.operations += 1
        self.operations_by[f"{operation} {table}"] += 1

    async def clear_all(self) -> int:
        """Delete every entity of the app's tables (the tables stay: their names are reused at once)."""
        removed = 0
        for name in TABLES:
            table = self.table(name)
            async for entity in table.query("PartitionKey ge @low", low=""):
                await table.delete(entity["PartitionKey"], entity["RowKey"])
                removed += 1
        return removed


class Table:
    """One table: each request counted, its errors mapped, entities checked against Azure's limits."""

    def __init__(self, tables: Tables, name: str) -> None:
        self._tables = tables
        self.name = name

    @property
    def _client(self) -> TableClient:
        return self._tables.client(self.name)

    def _count(self, operation: str) -> None:
        self._tables.count(operation, self.name)

    async def get(self, pk: str, rk: str) -> Any | None:
        self._count("get")
        try:
            return await self._client.get_entity(pk, rk)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as exc:
            raise StateError(f"reading {self.name} failed: {exc.message}", table=self.name) from exc

    async def create(self, entity: dict[str, Any]) -> str | None:
        check_entity_size(entity, table=self.name)
        self._count("create")
        try:
            meta = await self._client.create_entity(entity)
        except ResourceExistsError as exc:
            raise ConcurrencyError("entity exists already", table=self.name, key=entity["RowKey"]) from exc
        return meta.get("etag")

    async def replace(self, entity: dict[str, Any], etag: str | None) -> str | None:
        """Write `entity`; with an ETag only if unchanged since read, without one create-only."""
        if etag is None:
            return await self.create(entity)
        check_entity_size(entity, table=self.name)
        self._count("replace")
        try:
            meta = await self._client.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=etag, match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError) as exc:
            raise ConcurrencyError("entity changed since it was read", table=self.name,
                                   key=entity["RowKey"]) from exc
        return meta.get("etag")

    async def upsert(self, entity: dict[str, Any]) -> str | None:
        check_entity_size(entity, table=self.name)
        self._count("upsert")
        meta = await self._client.upsert_entity(entity, mode=UpdateMode.REPLACE)
        return meta.get("etag")

    async def delete(self, pk: str, rk: str, etag: str | None = None) -> None:
        self._count("delete")
        kwargs: dict[str, Any] = {}
        if etag is not None:
            kwargs = {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        try:
            await self._client.delete_entity(pk, rk, **kwargs)
        except ResourceModifiedError as exc:
            raise ConcurrencyError("entity changed since it was read", table=self.name, key=rk) from exc
        except ResourceNotFoundError:
            pass

    async def query(self, query: str, **parameters: Any) -> AsyncIterator[Any]:
        self._count("query")
        async for entity in self._client.query_entities(query, parameters=parameters):
            yield entity


    async def transaction(self, operations: list[Operation]) -> list[Mapping[str, Any]]:
        """One entity-group transaction (one partition, all or nothing); raises TableTransactionError."""
        for operation in operations:
            if operation[0] != "delete":
                check_entity_size(operation[1], table=self.name)
        self._count("transaction")
        return list(await self._client.submit_transaction(operations))

    async def merge(self, entity: dict[str, Any], etag: str) -> bool:
        """Add or change the entity's given properties if it is unchanged since read (False if not)."""
        self._count("merge")
        try:
            await self._client.update_entity(entity, mode=UpdateMode.MERGE, etag=etag,
                                              match_condition=MatchConditions.IfNotModified)
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True
