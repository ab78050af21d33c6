"""Graph change subscriptions per mapped room: create (idempotent), renew, recreate, remove."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

from sync.errors import RemoteConflict, RemoteError, RemoteGone, RemoteThrottled
from sync.graph import GraphGateway
from sync.settings import Settings
from sync.state import Subscription, SubscriptionsTable

log = logging.getLogger(__name__)
NOTIFY_ROUTE = "graph/notify"
LIFECYCLE_ROUTE = "graph/lifecycle"
RENEW_BEFORE = timedelta(days=2)


def endpoint_url(settings: Settings, route: str) -> str:
    """Public URL of one of our HTTP functions; the function key rides in the query (Graph sends it back)."""
    query = f"?{urlencode({'code': settings.graph_notification_key})}" if settings.graph_notification_key else ""
    return f"{settings.public_base_url}/api/{route}{query}"


@dataclass
class SubscriptionManager:
    settings: Settings
    table: SubscriptionsTable
    graph: GraphGateway

    def _expiry(self) -> datetime:
        return datetime.now(UTC) + timedelta(minutes=self.settings.subscription_minutes)

    async def ensure(self, room: str) -> Subscription:
        """The room's subscription: the stored one if alive, else a new one (409 handled)."""
        for existing in await self.table.subscriptions_of_room(room):
            if existing.expires_at > datetime.now(UTC) + timedelta(minutes=5):
                return existing
            await self.table.delete_subscription(existing.subscription_id)
        return await self._create(room)

    async def _create(self, room: str) -> Subscription:
        client_state = secrets.token_urlsafe(48)
        notify, lifecycle = endpoint_url(self.settings, NOTIFY_ROUTE), endpoint_url(self.settings, LIFECYCLE_ROUTE)
        try:
            created = await self.graph.create_subscription(room, notify, lifecycle, client_state, self._expiry())
        except RemoteConflict:
            # One exists that we no longer know (its clientState is lost): replace it.
            stale = await self.graph.find_subscription(room)
            if stale is None:
                raise
            await self.graph.delete_subscription(room, stale)
            created = await self.graph.create_subscription(room, notify, lifecycle, client_state, self._expiry())
        sub = Subscription(created.subscription_id, room, created.expires_at, client_state)
        log.info("subscription created", extra={"room": room, "subscription_id": sub.subscription_id})
        return await self.table.save_subscription(sub)

    async def renew(self, sub: Subscription) -> Subscription:
        try:
            sub.expires_at = await self.graph.renew_subscription(sub.room, sub.subscription_id, self._expiry())
        except RemoteGone:
            await self.table.delete_subscription(sub.subscription_id)
            return await self._create(sub.room)
        return await self.table.save_subscription(sub)

    async def renew_due(self) -> int:
        """Renew every subscription expiring within two days; returns how many were renewed.

        Graph throttling that outlasted the SDK's retries stops this run's renewals, not the run
        (the nightly run's reconciliation, an activation): a subscription has two days of margin
        and one that expires meanwhile is recreated by the sweep (its room read by delta). Any
        other failure (a room Graph refuses or cannot reach, a new subscription whose validation
        failed) costs that room's renewal only, not the other rooms' nor the run."""
        due = [s for s in await self.table.list_subscriptions()
               if s.expires_at - datetime.now(UTC) < RENEW_BEFORE]
        renewed = 0
        for tried, sub in enumerate(due):
            try:
                await self.renew(sub)
                renewed += 1
            except RemoteThrottled as exc:
                log.warning("Graph throttled subscription renewals; the rest wait for the next run", extra={
                    "room": sub.room, "subscription_id": sub.subscription_id, "left": len(due) - tried,
                    "retry_after_s": exc.context.get("retry_after_s")})
                return renewed
            except RemoteError as exc:
                log.warning("subscription of room %s not renewed (%s); the next run tries again and the sweep "
                            "re-creates it if it lapses", sub.room, exc,
                            extra={"room": sub.room, "subscription_id": sub.subscription_id, "error": str(exc)})
        return renewed

    async def reauthorize(self, sub: Subscription) -> None:
        try:
            await self.graph.reauthorize_subscription(sub.room, sub.subscription_id)
        except RemoteGone:
            await self.replace(sub)
            return
        await self.renew(sub)

    async def replace(self, sub: Subscription) -> Subscription:
        """After `subscriptionRemoved`: forget the old one and create a new one."""
        await self.table.delete_subscription(sub.subscription_id)
        return await self.ensure(sub.room)

    async def remove(self, room: str) -> int:
        subs = await self.table.subscriptions_of_room(room)
        for sub in subs:
            await self.graph.delete_subscription(room, sub.subscription_id)
            await self.table.delete_subscription(sub.subscription_id)
        return len(subs)
