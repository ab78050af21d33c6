"""Cold start: `import function_app` and the first Graph write, in a fresh interpreter.

Run by bench.outbound with the app's settings pointed at the Graph emulator; prints a JSON line.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import asyncio  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

import function_app  # noqa: E402, F401
from sync.graph import GraphGateway  # noqa: E402
from sync.keys import transaction_id  # noqa: E402
from sync.model import DesiredEvent  # noqa: E402
from sync.settings import Settings  # noqa: E402


async def first_write(room: str) -> None:
    gateway = GraphGateway.from_settings(Settings.from_env())
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    desired = DesiredEvent("cold-start", "Cold start", start, start + timedelta(hours=1))
    try:
        await gateway.create_event(room, desired, transaction_id("cold-start", 0))
    finally:
        await gateway.close()


def main() -> None:
    imported = time.perf_counter() - START
    asyncio.run(first_write(sys.argv[1]))
    total = time.perf_counter() - START
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"import_s": imported, "cold_start_s": total, "cold_start_rss_mb": peak_mb}))


if __name__ == "__main__":
    main()
