"""`make bench-initial` in small: the same run, fewer rooms and a short window, as a correctness test.

No timing is asserted here (the benchmark reports it): only that nothing is lost, doubled,
poisoned or refused with a 429 by anny, and that the live changes made halfway arrive, with the
backfill queue worked on by a second instance (a process of its own, as Flex Consumption scales
it) that shares anny's budget with the first.
"""

from __future__ import annotations

from bench.initial import BACKFILL_FUNCTION, Scale, run_on
from bench.instance import instance_running
from devhost.azurite import Azurite
from devhost.host import QueueOptions
from devhost.stack import Emulators, start_stack


async def test_a_short_initial_sync_against_both_sides_limits_loses_nothing(
        azurite: Azurite, emulators: Emulators, table_prefix: str) -> None:
    scale = Scale(rooms=2, per_room=16, reads=40, writes=10, window_s=2, latency_ms=20, live=2)
    emulators.reset()
    emulators.graph.set_latency(scale.latency_ms)
    emulators.anny.set_latency(scale.latency_ms)
    stack = start_stack(azurite, emulators, table_prefix, poll_queues=True, queues=QueueOptions.from_host_json(),
                        **scale.settings)
    try:
        with instance_running(stack, [BACKFILL_FUNCTION]) as backfill:
            result = await run_on(stack, scale)
    finally:
        emulators.graph.set_latency(0)
        emulators.anny.set_latency(0)
        stack.stop()
    assert result["lost"] == 0 and result["duplicated"] == 0 and result["poisoned"] == 0
    assert result["anny_429"] == 0  # the budget kept the app within anny's limits
    assert result["live_measured"] == 2 * scale.live
    new_bookings = scale.rooms * scale.per_room + scale.live
    assert result["anny_calls"]["GET /api/v1/bookings/{id}"] == new_bookings  # a read per new booking; none per echo
    assert backfill.table_ops > 0  # the blockers were the other instance's work
