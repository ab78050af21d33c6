"""The `rooms` table: PartitionKey `room`, RowKey the mailbox; the room's delta link and window,
its lease and rerun flag (`sync.room_runs`), category flag, last runs and error."""

from __future__ import annotations

from collections.abc import Callable

from sync.errors import ConcurrencyError
from sync.keys import encode_key, normalise_mailbox
from sync.state.records import RoomState
from sync.state.table import Tables, from_entity, to_entity, update


class RoomsTable:
    def __init__(self, tables: Tables) -> None:
        self._table = tables.table("rooms")

    async def get_room_state(self, room: str) -> RoomState:
        """The room's state; a fresh unsaved one (etag None) when there is none yet."""
        room = normalise_mailbox(room)
        entity = await self._table.get("room", encode_key(room))
        return from_entity(RoomState, entity) if entity else RoomState(room=room)

    async def save_room_state(self, state: RoomState) -> RoomState:
        """ETag-guarded write (create-only when never saved); a lost race raises ConcurrencyError."""
        state.room = normalise_mailbox(state.room)
        try:
            state.etag = await self._table.replace(to_entity(state, "room", encode_key(state.room)),
                                             state.etag)
        except ConcurrencyError as exc:
            raise ConcurrencyError("room state was written by someone else", room=state.room) from exc
        return state

    async def list_room_states(self) -> list[RoomState]:
        return [from_entity(RoomState, e) async for e in self._table.query("PartitionKey eq @pk", pk="room")]

    async def delete_room_state(self, room: str) -> None:
        await self._table.delete("room", encode_key(normalise_mailbox(room)))


    async def update_room_state(self, room: str, change: Callable[[RoomState], object]) -> RoomState:
        """Read, change and write a room's state, again after a lost race; `change` returning
        False leaves it as it is."""
        return await update(lambda: self.get_room_state(room), change, self.save_room_state)
