"""`make run`'s entry point as a newcomer meets it: a subprocess in sandbox mode (free ports), the CLI
helpers acting as people, the sync seen on the other side, and nothing left running after SIGHUP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from sync.graph import ANNY_PROPERTY_ID
from sync.local_stack import RunningStack, read_local_stack

ROOT = Path(__file__).resolve().parent.parent
FREE_PORTS = ["--port", "0", "--graph-port", "0", "--anny-port", "0", "--azurite-port", "0"]
MARKER = "ANNY_SYNC_TEST_RUN"


@dataclass
class Run:
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    marker: str
    output: Path

    @property
    def stack(self) -> RunningStack:
        stack = read_local_stack(Path(self.env["SYNC_LOCAL_STACK"]))
        assert stack is not None
        return stack

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "sync", *args]
        return subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True,  # noqa: S603
                              timeout=60)


def _env(tmp_path: Path, marker: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANNY_", "GRAPH_", "SYNC_", "AzureWebJobs"))}
    return env | {"SYNC_LOCAL_STACK": str(tmp_path / "stack.json"), MARKER: marker}


def _ours(marker: str) -> list[int]:
    """Every process carrying this run's marker in its environment (the runner and all it started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"{MARKER}={marker}".encode() in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _start(tmp_path: Path, *args: str) -> Run:
    marker = uuid.uuid4().hex
    env = _env(tmp_path, marker)
    output = tmp_path / "make-run.log"
    with output.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "devhost", *args], cwd=ROOT, env=env,  # noqa: S603
                                   stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Run(process, env, marker, output)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    run = _start(tmp_path_factory.mktemp("make-run"), "--sandbox", *FREE_PORTS)
    deadline = time.monotonic() + 90
    try:
        while read_local_stack(Path(run.env["SYNC_LOCAL_STACK"])) is None:
            assert run.process.poll() is None, f"make run ended early:\n{run.output.read_text()}"
            assert time.monotonic() < deadline, f"make run not ready in 90 s:\n{run.output.read_text()}"
            time.sleep(0.2)
        yield run
    finally:
        if run.process.poll() is None:
            os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait()
        for pid in _ours(run.marker):
            os.kill(pid, signal.SIGKILL)


def _events(stack: RunningStack, room: str) -> list[dict]:
    return httpx.get(f"{stack.graph_url}/_control/mailboxes/{quote(room)}/events").json()


def _anny_id_of(event: dict) -> str | None:
    for prop in event.get("singleValueExtendedProperties") or []:
        if prop["id"].lower() == ANNY_PROPERTY_ID.lower():
            return prop["value"]
    return None


def test_the_sandbox_starts_seeded_connected_and_active(sandbox: Run) -> None:
    stack = sandbox.stack
    banner = sandbox.output.read_text()
    assert "sandbox ready" in banner and "python -m sync sandbox book" in banner
    assert stack.admin_key not in banner, "the banner must not print the admin key"
    rooms = httpx.get(f"{stack.graph_url}/v1.0/places/microsoft.graph.room",
                      headers={"Authorization": "Bearer x"}).json()["value"]
    assert len(rooms) >= 3 and all(r["capacity"] and r["building"] for r in rooms)
    resources = httpx.get(f"{stack.anny_url}/_control/resources").json()
    assert any(r.get("parent_id") or (r.get("meta") or {}).get("parent_id") for r in resources), resources

    berlin = next(r for r in stack.rooms if r.name == "Room Berlin")
    mirrored = {_anny_id_of(e) for e in _events(stack, berlin.room)} - {None}
    bookings = httpx.get(f"{stack.anny_url}/_control/bookings").json()
    on_child = [b for b in bookings if b["resource"]["id"] in berlin.children.values()]
    assert on_child and {b["id"] for b in on_child} <= mirrored, "bookings on a child appear in the parent's room"
    series = [b for b in bookings if b["is_series"] and not b["is_series_master"]]
    assert series and all(any(b["id"] in {_anny_id_of(e) for e in _events(stack, r.room)} for r in stack.rooms)
                          for b in series)
    blockers = [b for b in bookings if b["is_blocker"]]
    titles = [b["title"] for b in blockers]
    assert titles.count("Weekly planning") >= 2, "a recurring meeting: a blocker per occurrence"
    assert "Board" in titles and "Offsite preparation" in titles
    assert "Salary review" not in titles and "Busy in Outlook" in titles, "a private meeting gets a neutral title"

    status = sandbox.cli("--json", "status")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["state"] == "active"


def test_a_booking_made_in_anny_appears_in_outlook_through_the_webhook(sandbox: Run) -> None:
    stack = sandbox.stack
    done = sandbox.cli("sandbox", "--json", "book", "--room", "berlin", "--at", "tomorrow 07:00", "--minutes", "30")
    assert done.returncode == 0, done.stdout + done.stderr
    booking_id = json.loads(done.stdout)["booking_id"]

    berlin = next(r for r in stack.rooms if r.name == "Room Berlin")
    mirror = [e for e in _events(stack, berlin.room) if _anny_id_of(e) == booking_id]
    assert len(mirror) == 1 and "anny" in mirror[0]["categories"]
    deliveries = httpx.get(f"{stack.anny_url}/_control/webhooks/deliveries").json()
    assert any(d["booking_id"] == booking_id and d["status"] == "delivered" for d in deliveries), \
        "the mirror came through the anny webhook"
    assert f"anny booking {booking_id} (Room Berlin, " in sandbox.output.read_text(), "one log line for the change"


def test_a_meeting_made_in_outlook_becomes_an_anny_blocker(sandbox: Run) -> None:
    stack = sandbox.stack
    done = sandbox.cli("sandbox", "meet", "--room", "hamburg", "--at", "+2d 18:00", "--subject", "Smoke test")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the sync created anny blocker" in done.stdout

    hamburg = next(r for r in stack.rooms if r.name == "Room Hamburg")
    blockers = [b for b in httpx.get(f"{stack.anny_url}/_control/bookings").json()
                if b["is_blocker"] and b["title"] == "Smoke test"]
    assert len(blockers) == 1 and blockers[0]["resource"]["id"] == hamburg.anny_resource
    assert f'Outlook meeting "Smoke test" ({hamburg.room}, ' in sandbox.output.read_text()


def test_sighup_stops_everything_it_started(sandbox: Run) -> None:
    ours = _ours(sandbox.marker)
    assert len(ours) >= 2, "the runner and Azurite"
    app_port = int(sandbox.stack.app_url.rsplit(":", 1)[1])
    sandbox.process.send_signal(signal.SIGHUP)
    assert sandbox.process.wait(timeout=15) == 0
    deadline = time.monotonic() + 5
    while _ours(sandbox.marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ours(sandbox.marker) == []
    assert not Path(sandbox.env["SYNC_LOCAL_STACK"]).exists()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", app_port)) != 0


def test_a_port_in_use_is_one_line_and_nothing_is_left_running(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = _start(tmp_path, "--sandbox", *FREE_PORTS, "--graph-port", str(port))
        assert run.process.wait(timeout=30) == 1
    lines = run.output.read_text().strip().splitlines()
    assert len(lines) == 1 and str(port) in lines[0] and "--graph-port" in lines[0], lines
    assert _ours(run.marker) == []


def test_with_credentials_the_same_command_runs_against_the_services_they_name(tmp_path: Path) -> None:
    """Credentials in local.settings.json: no emulators, no seeding; the app talks to the services the
    settings name (here the emulators stand in for Graph and anny) and the CLI finds it all the same."""
    from devhost.stack import Emulators
    from sandbox.organisation import anny_seed, graph_seed, today_here
    from sandbox.serve import free_port

    emulators = Emulators.start()
    try:
        emulators.graph.seed(graph_seed(today_here()))
        resources = emulators.anny.seed(anny_seed(today_here()))["resources"]
        port = free_port()
        values = {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true", "GRAPH_BASE_URL": emulators.graph.base_url,
            "GRAPH_AUTH_MODE": "static_token", "GRAPH_STATIC_TOKEN": "token",
            "ANNY_BASE_URL": emulators.anny_server.url, "ANNY_API_TOKEN": emulators.anny.config.token,
            "ANNY_ORGANIZATION_ID": emulators.anny.config.organization_id, "ANNY_WEBHOOK_SECRET": "s" * 32,
            "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "GRAPH_NOTIFICATION_KEY": "n" * 32,
        }
        settings = tmp_path / "local.settings.json"
        settings.write_text(json.dumps({"Values": values}))
        refused = _start(tmp_path, "--settings", str(settings), "--port", str(port), "--azurite-port", "0")
        assert refused.process.wait(timeout=30) == 1
        assert "DEVHOST_FUNCTION_KEY" in refused.output.read_text(), "says which setting is missing"

        settings.write_text(json.dumps({"Values": values | {"DEVHOST_FUNCTION_KEY": "f" * 32}}))
        run = _start(tmp_path, "--settings", str(settings), "--port", str(port), "--azurite-port", "0")
        try:
            deadline = time.monotonic() + 60
            while read_local_stack(Path(run.env["SYNC_LOCAL_STACK"])) is None:
                assert run.process.poll() is None and time.monotonic() < deadline, run.output.read_text()
                time.sleep(0.2)
            assert run.stack.mode == "real" and run.stack.graph_url == ""
            added = run.cli("rules", "add", "--anny-resource", resources["room-berlin"],
                            "--room", "room-berlin@contoso.com")
            assert added.returncode == 0, added.stdout + added.stderr
            activated = run.cli("--json", "activate")
            assert activated.returncode == 0, activated.stdout + activated.stderr
            [subscription] = emulators.graph.subscriptions()
            assert subscription["notificationUrl"].endswith("?code=" + "n" * 32), \
                "Graph reaches the app with GRAPH_NOTIFICATION_KEY, as with the graph-notify key in Azure"
            synced_by = time.monotonic() + 30  # activation queues the initial sync; the runner works it off
            while not [e for e in emulators.graph.events("room-berlin@contoso.com") if _anny_id_of(e)]:
                assert time.monotonic() < synced_by, "the room's anny bookings were synced"
                time.sleep(0.2)
            run.process.send_signal(signal.SIGTERM)
            assert run.process.wait(timeout=15) == 0
            assert _ours(run.marker) == []
        finally:
            if run.process.poll() is None:
                os.killpg(run.process.pid, signal.SIGKILL)
    finally:
        emulators.stop()
