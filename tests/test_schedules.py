"""When the timers act (issue 13): the nightly run once per local day after local midnight in
SYNC_TIME_ZONE, the sweep every SWEEP_INTERVAL_MINUTES, and the brake's threshold. Pure functions."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from croniter import croniter

from sync.brake import brake_trips
from sync.nightly import CLAIM_FOR, local_day, nightly_due
from sync.settings import Settings
from sync.state import IntegrationStatus
from sync.sweep import sweep_due
from sync.work import NIGHTLY_SCHEDULE, SWEEP_SCHEDULE

ENV = {"ANNY_API_TOKEN": "t", "ANNY_ORGANIZATION_ID": "o", "ANNY_WEBHOOK_SECRET": "s",
       "PUBLIC_BASE_URL": "https://sync.example.org", "AzureWebJobsStorage": "UseDevelopmentStorage=true"}


def first_nightly_after(start: datetime, zone: str, done_day: str) -> datetime:
    """Walk the hourly timer from `start` until the nightly run acts."""
    ticks = croniter(NIGHTLY_SCHEDULE, start, second_at_beginning=True)
    status = IntegrationStatus(nightly_day=done_day)
    for _ in range(48):
        tick = ticks.get_next(datetime)
        if nightly_due(status, tick, zone):
            return tick
    raise AssertionError("never ran")


@pytest.mark.parametrize(("zone", "local_midnight_utc"), [
    ("Europe/Berlin", datetime(2026, 11, 30, 23, 0, tzinfo=UTC)),
    ("America/Los_Angeles", datetime(2026, 12, 1, 8, 0, tzinfo=UTC)),  # west of UTC: later than 02:00 UTC
    ("Asia/Kolkata", datetime(2026, 11, 30, 18, 30, tzinfo=UTC)),  # a half-hour offset
    ("Pacific/Kiritimati", datetime(2026, 11, 30, 10, 0, tzinfo=UTC)),  # UTC+14
])
def test_nightly_runs_within_an_hour_after_local_midnight(zone: str, local_midnight_utc: datetime) -> None:
    before = local_midnight_utc - timedelta(hours=5)
    ran = first_nightly_after(before, zone, local_day(before, zone))
    assert local_midnight_utc <= ran < local_midnight_utc + timedelta(hours=1)


def test_nightly_runs_once_a_day_and_a_dead_run_is_retried_later() -> None:
    now = datetime(2026, 12, 1, 9, 5, tzinfo=UTC)
    today = local_day(now, "Europe/Berlin")
    assert not nightly_due(IntegrationStatus(nightly_day=today), now, "Europe/Berlin")
    claimed = IntegrationStatus(nightly_day="2026-11-30", nightly_claimed_at=now - timedelta(minutes=10))
    assert not nightly_due(claimed, now, "Europe/Berlin")  # running elsewhere
    assert nightly_due(replace(claimed, nightly_claimed_at=now - CLAIM_FOR), now, "Europe/Berlin")


@pytest.mark.parametrize("interval", [5, 15, 60])
def test_sweep_acts_every_interval_on_a_five_minute_timer(interval: int) -> None:
    start = datetime(2026, 12, 1, 0, 0, 30, tzinfo=UTC)
    ticks = croniter(SWEEP_SCHEDULE, start, second_at_beginning=True)
    status, ran = IntegrationStatus(), []
    for _ in range(36):  # three hours
        tick = ticks.get_next(datetime)
        if sweep_due(status, tick, interval):
            status.last_sweep_at = tick
            ran.append(tick)
    gaps = {b - a for a, b in itertools.pairwise(ran)}
    assert gaps == {timedelta(minutes=interval)}


@pytest.mark.parametrize(("deletions", "mirrors", "trips"), [
    (20, 20, False),  # not more than the minimum
    (21, 40, True),  # more than 50 % and more than 20
    (21, 42, False),  # exactly half is not more than half
    (30, 100, False),
    (0, 0, False),
])
def test_brake_needs_both_the_share_and_the_minimum(deletions: int, mirrors: int, trips: bool) -> None:
    assert brake_trips(deletions, mirrors, Settings.from_env(ENV)) is trips


def test_brake_thresholds_are_settings() -> None:
    settings = Settings.from_env({**ENV, "DELETION_BRAKE_PERCENT": "10", "DELETION_BRAKE_MIN_ITEMS": "2"})
    assert brake_trips(3, 20, settings) and not brake_trips(2, 20, settings)
