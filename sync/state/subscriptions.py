"""The `subscriptions` table: PartitionKey `sub`, RowKey the Graph subscription id; its room,
expiry and clientState."""

from __future__ import annotations

from sync.keys import encode_key, normalise_mailbox
from sync.state.records import Subscription
from sync.state.table import Tables, from_entity, to_entity


class SubscriptionsTable:
    def __init__(self, tables: Tables) -> None:
        self._table = tables.table("subscriptions")

    async def save_subscription(self, sub: Subscription) -> Subscription:
        sub.room = normalise_mailbox(sub.room)
        sub.etag = await self._table.upsert(to_entity(sub, "sub", encode_key(sub.subscription_id)))
        return sub

    async def get_subscription(self, subscription_id: str) -> Subscription | None:
        entity = await self._table.get("sub", encode_key(subscription_id))
        return from_entity(Subscription, entity) if entity else None

    async def subscriptions_of_room(self, room: str) -> list[Subscription]:
        return [from_entity(Subscription, e) async for e in self._table.query(
            "PartitionKey eq @pk and room eq @room", pk="sub", room=normalise_mailbox(room))]

    async def list_subscriptions(self) -> list[Subscription]:
        return [from_entity(Subscription, e) async for e in self._table.query("PartitionKey eq @pk", pk="sub")]

    async def delete_subscription(self, subscription_id: str) -> None:
        await self._table.delete("sub", encode_key(subscription_id))
