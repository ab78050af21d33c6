"""The `status` table: PartitionKey `status`, RowKey `integration` (active / inactive / deleting,
activation, last error, nightly and sweep marks); `run` rows (the last KEPT_RUNS runs, newest
first: the drift report); `progress` rows (an initial sync's progress per room)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sync.keys import encode_key, normalise_mailbox
from sync.state.records import KEPT_RUNS, MAX_RUN_ITEMS, IntegrationStatus, Progress, RunRecord, utcnow
from sync.state.table import Tables, from_entity, to_entity, update


class StatusTable:
    def __init__(self, tables: Tables) -> None:
        self._table = tables.table("status")

    async def get_status(self) -> IntegrationStatus:
        entity = await self._table.get("status", "integration")
        return from_entity(IntegrationStatus, entity) if entity else IntegrationStatus()

    async def save_status(self, status: IntegrationStatus) -> IntegrationStatus:
        status.etag = await self._table.replace(to_entity(status, "status", "integration"), status.etag)
        return status

    async def update_status(self, change: Callable[[IntegrationStatus], object]) -> IntegrationStatus:
        """Read, change and write the status, again after a lost race."""
        return await update(self.get_status, change, self.save_status)

    # -- run records (the drift report) -----------------------------------------------------------

    async def save_run(self, run: RunRecord) -> None:
        """Store a run (newest first by key) and forget all but the last KEPT_RUNS."""
        run.items = run.items[:MAX_RUN_ITEMS]
        key = f"{10**15 - int(run.started_at.timestamp() * 1000):015d}~{run.kind}"  # newest first
        await self._table.upsert(to_entity(run, "run", key))
        for old in (await self._run_entities())[KEPT_RUNS:]:
            await self._table.delete(old["PartitionKey"], old["RowKey"])

    async def _run_entities(self) -> list[Any]:
        found = [e async for e in self._table.query("PartitionKey eq @pk", pk="run")]
        return sorted(found, key=lambda e: e["RowKey"])

    async def list_runs(self) -> list[RunRecord]:
        """Runs, newest first."""
        return [from_entity(RunRecord, e) for e in await self._run_entities()]
    # -- initial sync progress (sync.progress) ------------------------------------------------------------

    async def get_progress(self, room: str) -> Progress:
        room = normalise_mailbox(room)
        entity = await self._table.get("progress", encode_key(room))
        return from_entity(Progress, entity) if entity else Progress(room)

    async def update_progress(self, room: str, change: Callable[[Progress], object]) -> Progress:
        async def save(progress: Progress) -> Progress:
            progress.updated_at = utcnow()
            progress.etag = await self._table.replace(to_entity(progress, "progress", encode_key(progress.room)),
                                                progress.etag)
            return progress

        return await update(lambda: self.get_progress(room), change, save, attempts=10)

    async def list_progress(self) -> list[Progress]:
        return [from_entity(Progress, e) async for e in self._table.query("PartitionKey eq @pk", pk="progress")]
