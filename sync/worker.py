"""The queue worker: the only place that writes to anny and Graph. One work item at a time."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sync import processed, progress
from sync.anny import seen_booking
from sync.budget import BACKFILL, LIVE, priority
from sync.continuation import continue_rule_sync
from sync.errors import RemoteAuthError, RemoteError, RemoteThrottled, RemoteUnavailable, SyncError
from sync.inbound import InboundFlow, RoomRunResult
from sync.model import OutlookEvent
from sync.outbound import OutboundFlow
from sync.services import Services
from sync.state import IntegrationStatus, RoomState
from sync.subscriptions import SubscriptionManager
from sync.work import (
    BACKFILL_QUEUE,
    WORK_QUEUE,
    BadWorkItem,
    BookingWork,
    EventsBackfill,
    LifecycleWork,
    RoomWork,
    RuleSync,
    Work,
    backfill_items,
    decode,
    max_dequeue_count,
    outages_of,
    signal_time,
    span_of,
)

log = logging.getLogger(__name__)
OUTAGE_BACKOFF_S = 30.0  # the first wait after an outage; doubled at each put-back
OUTAGE_PUT_BACKS = 6  # after 30 s, 1, 2, 4, 8 and 16 min: an outage of half an hour poisons nothing


@dataclass
class Worker:
    services: Services

    @property
    def outbound(self) -> OutboundFlow:
        s = self.services
        return OutboundFlow(s.settings, s.links, s.rules, s.rooms, s.anny, s.graph, s.categories_ensured)

    @property
    def inbound(self) -> InboundFlow:
        s = self.services
        return InboundFlow(s.settings, s.links, s.rules, s.rooms, s.anny, s.graph, self.outbound,
                           self._backfill_later)

    @property
    def subscriptions(self) -> SubscriptionManager:
        return SubscriptionManager(self.services.settings, self.services.subscriptions, self.services.graph)

    async def handle_message(self, body: str | bytes, message_id: str = "", queue: str = WORK_QUEUE,
                             dequeue_count: int = 1) -> list[Work]:
        """Carry out one queue message; returns follow-up work. Raising makes the queue retry it
        (up to maxDequeueCount, then the poison queue keeps it for the admin). Messages of the
        backfill queue are worked on at backfill priority (sync.budget)."""
        try:
            work = decode(body)
        except BadWorkItem as exc:
            log.error("dropping a message that is not a work item", extra={"error": str(exc)})
            return []
        try:
            with priority(BACKFILL if queue == BACKFILL_QUEUE else LIVE):
                return await self.handle(work, message_id)
        except RemoteThrottled as exc:
            return await self._put_back(work, queue, exc.retry_after_s, outages_of(body), "throttled", exc)
        except RemoteUnavailable as exc:
            if dequeue_count < max_dequeue_count():
                raise  # a blip: the queue's own retry, visibilityTimeout later
            return await self._after_outage(work, queue, outages_of(body), exc)
        except RemoteAuthError as exc:
            log.error("anny or Graph refused our credentials; fix them, then replay the poison queue",
                      extra={"error": str(exc), **exc.context})
            await self._record_error(str(exc))
            raise

    async def _after_outage(self, work: Work, queue: str, outages: int, exc: RemoteUnavailable) -> list[Work]:
        """anny or Graph unavailable beyond their clients' retries (5xx, timeouts) at the queue's
        last attempt, which would send the item to the poison queue: it is put back after a growing
        wait (or what Retry-After asked) instead, OUTAGE_PUT_BACKS times, each time with the queue's
        attempts anew, so an outage of about half an hour poisons nothing; after that the poison
        queue takes it, so an item that cannot succeed still reaches the admin."""
        if outages >= OUTAGE_PUT_BACKS:
            raise exc
        delay = max(OUTAGE_BACKOFF_S * 2 ** outages, exc.retry_after_s)
        return await self._put_back(work, queue, delay, outages + 1, "anny or Graph unavailable", exc)

    async def _put_back(self, work: Work, queue: str, delay_s: float, outages: int, why: str,
                        exc: RemoteError) -> list[Work]:
        """The item back on its queue as a new message, invisible for `delay_s`: the wait never
        counts towards maxDequeueCount. `outages` travels with it (`work.outages_of`)."""
        await self.services.queues.send(work, delay_s=delay_s, queue=queue, outages=outages)
        log.warning("%s; work item put back on the queue", why, extra={
            "work": repr(work), "delay_s": round(delay_s, 1), "outages": outages, "error": str(exc)[:300]})
        return []

    async def handle(self, work: Work, message_id: str = "") -> list[Work]:
        if not await self.services.is_active():
            log.info("integration not active; work item acknowledged and ignored", extra={"work": repr(work)})
            return []
        match work:
            case BookingWork(booking_id=booking_id, anny_event_id=event_id, observed=observed, seen=seen):
                await self.outbound.sync_booking(booking_id, observed=observed,
                                                 seen=seen_booking(seen) if seen else None)
                if event_id:
                    keep = timedelta(hours=self.services.settings.processed_event_hours)
                    await processed.mark_processed(self.services.processed, event_id, seen is not None, keep)
                return []
            case RoomWork(room=room):
                try:
                    result = await self.inbound.sync_room(room, run_id=message_id, signalled_at=signal_time(work))
                except SyncError as exc:
                    await self._record_error(str(exc), room)
                    raise
                await self._after_room_run(result)
                return [RoomWork(room, reason="more changes")] if result.rerun_later else []
            case EventsBackfill(room=room, event_ids=event_ids):
                await self._after_room_run(await self.inbound.backfill_events(room, event_ids, span_of(work)))
                await progress.advance(self.services.status, room, "to_anny", len(event_ids))
                return []
            case LifecycleWork():
                return await self._lifecycle(work)
            case RuleSync():
                await continue_rule_sync(self, work)
                return []
        return []

    async def _after_room_run(self, result: RoomRunResult) -> None:
        if result.failures:
            await self._record_error(f"{len(result.failures)} event(s) of {result.room} could not be synced: "
                                     f"{result.failures[-1]}", result.room)

    async def _backfill_later(self, room: str, events: list[OutlookEvent]) -> None:
        """Events a baseline left to backfill, queued in items (`backfill_items`)."""
        if not events:
            return
        await progress.start(self.services.status, room, "to_anny", len(events))
        for item in backfill_items(room, events):
            await self.services.queues.send(item, queue=BACKFILL_QUEUE)
        log.info("baseline events queued for backfill", extra={"room": room, "events": len(events)})

    async def _lifecycle(self, work: LifecycleWork) -> list[Work]:
        sub = await self.services.subscriptions.get_subscription(work.subscription_id)
        if sub is None:
            log.warning("lifecycle event for an unknown subscription", extra={"subscription_id": work.subscription_id})
            return []
        log.info("lifecycle event", extra={"subscription_id": sub.subscription_id, "room": sub.room,
                                          "lifecycle_event": work.event})
        if work.event == "reauthorizationRequired":
            await self.subscriptions.reauthorize(sub)
            return []
        if work.event == "subscriptionRemoved":
            await self.subscriptions.replace(sub)
        return [RoomWork(sub.room, reason=work.event)]

    async def _record_error(self, message: str, room: str = "") -> None:
        """The last error, for `status`: the integration's, and the room's when it is known."""
        now = datetime.now(UTC)

        def change(status: IntegrationStatus | RoomState) -> None:
            status.last_error, status.last_error_at = message[:2000], now

        await self.services.status.update_status(change)
        if room:
            await self.services.rooms.update_room_state(room, change)

