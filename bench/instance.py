"""One more instance of the app for a benchmark, in a process of its own (`python -m bench.instance`).

Flex Consumption runs each queue-triggered function on instances of its own (HTTP triggers share
theirs): the backfill queue's worker does not share a process, or its CPU, with the HTTP triggers
and the live queue's worker. `instance_running(stack, ["sync_backfill"])` runs those functions in a
second runner over the same Azurite and emulators, with the benchmark's own instance's app settings
and every other function disabled (`AzureWebJobs.<name>.Disabled`, as Azure reads it); the
benchmark's instance disables them in turn. Both share anny's budget through Table Storage, as
instances in Azure do. When told to stop (SIGTERM), the process prints its CPU time and Table
operations since it was ready.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import host_table_operations
from devhost.host import LocalFunctionsHost, QueueOptions, disabled_setting
from devhost.stack import LocalStack
from sync.services import close_services

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60  # to import the app and start the runner
STOP_TIMEOUT_S = 30  # to stop once told (SIGTERM); killed after that


def disabled_settings(names: list[str]) -> dict[str, str]:
    return {disabled_setting(name): "true" for name in names}


@dataclass
class InstanceCost:
    """What the other instance spent while it ran: CPU seconds and Table operations."""

    cpu_s: float = 0.0
    table_ops: int = 0


@contextmanager
def instance_running(stack: LocalStack, functions: list[str]) -> Iterator[InstanceCost]:
    """`functions` in a second instance for the block; their cost is filled in when it ends."""
    others = [f.name for f in stack.host.functions if f.name not in functions]
    env = {**os.environ, **stack.env, **disabled_settings(others)}
    for name in functions:
        env.pop(disabled_setting(name), None)
    process = subprocess.Popen([sys.executable, "-m", "bench.instance"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, text=True)
    cost = InstanceCost()
    try:
        assert process.stdout is not None
        answered, _, _ = select.select([process.stdout], [], [], READY_TIMEOUT_S)
        if not answered or not process.stdout.readline():
            raise RuntimeError(f"bench.instance: the second instance was not ready within {READY_TIMEOUT_S} s")
        yield cost
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            out, _ = process.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
        spent = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        if "cpu_s" in spent:  # not when it was killed
            cost.cpu_s, cost.table_ops = spent["cpu_s"], spent["table_ops"]


def main() -> None:
    app = importlib.import_module("function_app").app
    host = LocalFunctionsHost(app, os.environ["AzureWebJobsStorage"], queues=QueueOptions.from_host_json(),
                              poll_queues=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    cpu_ready = time.process_time()
    print(json.dumps({"ready": True}), flush=True)
    stop.wait()
    operations = host_table_operations(host)
    host.call(close_services())
    host.stop()
    print(json.dumps({"cpu_s": time.process_time() - cpu_ready, "table_ops": operations}), flush=True)


if __name__ == "__main__":
    main()
