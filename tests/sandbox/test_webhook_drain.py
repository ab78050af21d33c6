"""The anny emulator's `settle` waits for its webhook deliveries without ever starving its loop."""

from __future__ import annotations

import asyncio
import threading

from sandbox.anny.config import AnnyConfig
from sandbox.anny.timefmt import Clock
from sandbox.anny.webhooks import WebhookHub


def test_drained_does_not_wait_on_a_delivery_that_already_finished() -> None:
    """A delivery task that has finished but is still in the hub's set (its removal is a
    done-callback the loop runs later) must not keep `drained` waiting. Waiting on it again spun
    forever: on Python 3.13 awaiting `gather` of finished tasks does not yield to the loop, so the
    removal never ran and the emulator's loop thread stopped answering (the hang seen in CI). The
    loop runs in a thread of its own, so a spin fails this test instead of hanging the suite."""
    returned = threading.Event()

    async def scenario() -> None:
        hub = WebhookHub(AnnyConfig, Clock())
        task = asyncio.ensure_future(asyncio.sleep(0))
        await task
        hub._tasks.add(task)  # finished, not yet removed
        await asyncio.wait_for(hub.drained(), 2)
        returned.set()

    thread = threading.Thread(target=asyncio.run, args=(scenario(),), daemon=True)
    thread.start()
    thread.join(5)
    assert returned.is_set(), "drained() kept waiting on a delivery that had already finished"
