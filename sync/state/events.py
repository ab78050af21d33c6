"""The `events` table: PartitionKey `evt`, RowKey an anny webhook's event id, with its expiry
(processed deliveries whose redelivery would not be free, `sync.processed`)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sync.keys import encode_key
from sync.state.records import utcnow
from sync.state.table import Tables


class ProcessedEvents:
    def __init__(self, tables: Tables) -> None:
        self._table = tables.table("events")

    async def is_processed(self, event_id: str) -> bool:
        return await self._table.get("evt", encode_key(event_id)) is not None

    async def mark_processed(self, event_id: str, keep_for: timedelta) -> None:
        entity = {"PartitionKey": "evt", "RowKey": encode_key(event_id), "expires_at": utcnow() + keep_for}
        await self._table.upsert(entity)

    async def purge_processed(self, now: datetime | None = None) -> int:
        """Forget event ids whose retention ended; returns how many were removed."""
        expired = [e async for e in self._table.query("PartitionKey eq @pk and expires_at lt @now",
                                                      pk="evt", now=now or utcnow())]
        for entity in expired:
            await self._table.delete(entity["PartitionKey"], entity["RowKey"])
        return len(expired)
