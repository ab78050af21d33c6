"""The nightly run (behaviour: the sync window; architecture): renew subscriptions, roll the
window, reconcile both ways.

Its timer fires every hour; the run acts once per local day (SYNC_TIME_ZONE), at the first
tick after local midnight. NCRONTAB schedules are UTC on Flex Consumption, and a schedule
read from an app setting (`%NAME%`) stops the host when the setting is missing, so the
local day is decided here instead.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sync.reconcile import reconcile_rules
from sync.runs import RunLog, claim, every_part, recorded
from sync.state import IntegrationStatus, RunRecord
from sync.worker import Worker

log = logging.getLogger(__name__)
CLAIM_FOR = timedelta(minutes=30)  # a run that died keeps the day claimed this long, then the next tick retries


def local_day(now: datetime, zone: str) -> str:
    return now.astimezone(ZoneInfo(zone)).date().isoformat()


def nightly_due(status: IntegrationStatus, now: datetime, zone: str) -> bool:
    """Not yet run this local day, and no run started within CLAIM_FOR."""
    if status.nightly_day == local_day(now, zone):
        return False
    return status.nightly_claimed_at is None or now - status.nightly_claimed_at >= CLAIM_FOR


async def run_nightly(worker: Worker, now: datetime | None = None) -> RunRecord | None:
    """Once per local day: renew subscriptions, purge old webhook ids, reconcile every rule's window
    both ways and record what was repaired. None when inactive or already done today."""
    services = worker.services
    now = now or datetime.now(UTC)
    if not await services.is_active():
        log.info("integration not active; nightly run skipped")
        return None
    zone = services.settings.time_zone
    if not await claim(services.status, lambda s: nightly_due(s, now, zone),
                       lambda s: setattr(s, "nightly_claimed_at", now)):
        return None
    async with recorded(services.status, RunLog("nightly")) as run:
        async def renew() -> None:
            run.count("subscriptions renewed", await worker.subscriptions.renew_due())

        async def purge() -> None:
            run.count("webhook ids forgotten", await services.processed.purge_processed())

        async def reconcile() -> None:
            resources = await services.anny.list_resources()
            rules = [rule for rule in await services.rules.list_rules() if not rule.removing]
            await reconcile_rules(worker, rules, run, resources)

        # housekeeping that fails must not cost the night its comparison
        await every_part(("subscription renewals", renew), ("forgetting old webhook ids", purge),
                         ("reconciliation", reconcile))
    await mark_nightly_done(worker, local_day(now, zone))
    return run.record


async def mark_nightly_done(worker: Worker, day: str) -> None:
    def done(status: IntegrationStatus) -> None:
        status.nightly_day, status.nightly_claimed_at = day, None

    await worker.services.status.update_status(done)
