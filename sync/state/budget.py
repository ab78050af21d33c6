"""The `budget` table (`sync.budget`): PartitionKey `anny`, RowKey `reads` / `writes` (the
organisation's anny budget log); `throttled` rows (429s received from each side); `fallback`
rows (an instance's spell on the local fallback rate)."""

from __future__ import annotations

from typing import Any

from sync.keys import encode_key
from sync.state.records import BudgetRecord, FallbackRecord
from sync.state.table import Tables, from_entity, to_entity, update


class BudgetTable:
    def __init__(self, tables: Tables) -> None:
        self._table = tables.table("budget")

    async def get_budget(self, kind: str) -> BudgetRecord:
        """The budget log of `kind`; a fresh unsaved one (etag None) when there is none yet."""
        entity = await self._table.get("anny", kind)
        return from_entity(BudgetRecord, entity) if entity else BudgetRecord(kind)

    async def save_budget(self, record: BudgetRecord) -> BudgetRecord:
        """ETag-guarded write (create-only when never saved); a lost race raises ConcurrencyError."""
        record.etag = await self._table.replace(to_entity(record, "anny", record.kind), record.etag)
        return record

    async def save_fallback(self, record: FallbackRecord) -> None:
        await self._table.upsert(to_entity(record, "fallback", encode_key(record.instance)))

    async def list_fallbacks(self) -> list[FallbackRecord]:
        return [from_entity(FallbackRecord, e) async for e in self._table.query("PartitionKey eq @pk", pk="fallback")]

    async def delete_fallback(self, instance: str) -> None:
        await self._table.delete("fallback", encode_key(instance))

    async def count_throttled(self, source: str) -> None:
        """One more 429 received from `source` ("anny" or "graph") that reached the app."""
        async def read() -> dict[str, Any]:
            entity = await self._table.get("throttled", source)
            return dict(entity or {"PartitionKey": "throttled", "RowKey": source, "count": 0}) | {
                "_etag": entity.metadata.get("etag") if entity is not None else None}

        async def save(entity: dict[str, Any]) -> dict[str, Any]:
            etag = entity.pop("_etag")
            await self._table.replace(entity, etag)
            return entity

        await update(read, lambda e: e.__setitem__("count", int(e["count"]) + 1), save)

    async def throttled_counts(self) -> dict[str, int]:
        return {e["RowKey"]: int(e["count"]) async for e in self._table.query("PartitionKey eq @pk", pk="throttled")}
