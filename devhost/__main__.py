"""`python -m devhost` (`make run`): the function app on this machine, under the local functions runner.

Without credentials it runs the **sandbox**: Azurite and both emulators on fixed ports, a seeded
organisation, the anny webhook registered, the rooms mapped and the sync active. With credentials
in local.settings.json (`ANNY_API_TOKEN` and the rest) it runs against the real Graph and anny, as
deployed. Either way it writes the local stack file that `python -m sync` reads, and stops
everything it started on Ctrl-C, SIGTERM or SIGHUP.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import secrets
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from devhost import sandbox
from devhost.azurite import AzuritePorts, start_azurite
from devhost.host import HostKeys, LocalFunctionsHost
from devhost.logs import configure_logging
from devhost.ports import ANNY_PORT, APP_PORT, AZURITE_PORT, GRAPH_PORT, PortInUse, Ports
from devhost.sandbox import SeededOrganisation
from devhost.worker_env import preflight
from sync.local_stack import RunningStack, remove_local_stack, stack_file, write_local_stack

ROOT = Path(__file__).resolve().parent.parent
STOP_GRACE_S = 10  # after a stop signal, whatever has not stopped by then is killed
LOCAL_STORAGE = ("", "UseDevelopmentStorage=true")
log = logging.getLogger("devhost")


class Shutdown(BaseException):
    """Raised in the main thread by a stop signal, wherever startup or the wait happens to be."""


class SetupError(RuntimeError):
    """Something the user has to fix before the app can run; the message says what."""


class WorkerRefuses(SetupError):
    """The Functions host's own Python worker refuses the app: Azure would not run it either."""


def _load_local_settings(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    values = json.loads(path.read_text()).get("Values", {})
    return {k: str(v) for k, v in values.items() if v != "" and not str(v).startswith("<")}


# The sandbox's anny keeps anny's documented rate limits, so the app's budget is exercised.
ANNY_LIMITS = {"rate_limits": True}

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--sandbox", "--with-emulators", action="store_true",
                      help="run the seeded sandbox even if local.settings.json has credentials")
    mode.add_argument("--real", action="store_true",
                      help="run against the real Graph and anny (settings from local.settings.json)")
    parser.add_argument("--port", type=int, default=APP_PORT, help=f"the app's port (default {APP_PORT})")
    parser.add_argument("--graph-port", type=int, default=GRAPH_PORT,
                        help=f"the Graph emulator's port (default {GRAPH_PORT})")
    parser.add_argument("--anny-port", type=int, default=ANNY_PORT,
                        help=f"the anny emulator's port (default {ANNY_PORT})")
    parser.add_argument("--azurite-port", type=int, default=AZURITE_PORT,
                        help=f"Azurite's blob port; queue and table use the next two (default {AZURITE_PORT})")
    parser.add_argument("--settings", default=str(ROOT / "local.settings.json"))
    parser.add_argument("--app", default="function_app", help="module holding `app` (default function_app)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also log no-op syncs, and the fields of every line")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.verbose)
    settings = {} if args.sandbox else _load_local_settings(Path(args.settings))
    sandbox = args.sandbox or (not args.real and "ANNY_API_TOKEN" not in settings and
                               "ANNY_API_TOKEN" not in os.environ)
    ports = Ports(args.port, args.graph_port, args.anny_port, args.azurite_port)
    stops: list[Callable[[], None]] = []
    _install_signal_handlers()
    try:
        if sandbox:
            _start_sandbox(ports, args.app, stops)
        else:
            _start_real(ports, args.app, settings, stops)
        while True:
            time.sleep(3600)
    except Shutdown:
        return 0
    except WorkerRefuses as exc:
        print(exc, flush=True)
        print("make run: not serving what Azure would refuse (see above)", file=sys.stderr)
        return 1
    except (PortInUse, SetupError) as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    except (OSError, RuntimeError) as exc:  # e.g. a port taken meanwhile, Azurite not installed
        log.debug("startup failed", exc_info=True)
        print(f"make run: {exc} (run with -v for details)", file=sys.stderr)
        return 1
    finally:
        _stop_all(stops)


def _install_signal_handlers() -> None:
    def stop(signum: int, _frame: FrameType | None) -> None:
        for other in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(other, signal.SIG_IGN)  # one stop at a time; the watchdog ends a hung one
        try:
            print(f"\nstopping ({signal.Signals(signum).name}) …", file=sys.stderr, flush=True)
        except OSError:
            pass  # the terminal is gone (SIGHUP)
        raise Shutdown

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)
    threading.Thread(target=_watch_terminal, name="terminal-watch", daemon=True).start()


def _watch_terminal() -> None:
    """SIGHUP ourselves when our terminal hangs up.

    The kernel sends SIGHUP only to a terminal's session leader. Under `make run` started as a
    terminal's own command (tmux, an IDE), that leader is make, which then waits for us: we
    would never hear of the hang-up. An interactive shell passes SIGHUP on to its jobs anyway.
    """
    terminal = next((fd for fd in (2, 1, 0) if os.isatty(fd)), None)
    if terminal is None:
        return
    watcher = select.poll()
    watcher.register(terminal, 0)  # only POLLHUP/POLLERR/POLLNVAL: nothing is read from the terminal
    while not watcher.poll(1000):
        pass
    os.kill(os.getpid(), signal.SIGHUP)


def _stop_all(stops: list[Callable[[], None]]) -> None:
    """Stop in reverse start order; a watchdog ends the process if that takes longer than STOP_GRACE_S
    (Azurite gets SIGKILL with us: it is started with a parent-death signal)."""
    watchdog = threading.Timer(STOP_GRACE_S, lambda: os._exit(1))
    watchdog.daemon = True
    watchdog.start()
    for stop in reversed(stops):
        try:
            stop()
        except Exception as exc:  # stop the rest whatever one of them says
            log.warning("while stopping: %s", exc)
    watchdog.cancel()


def _worker_check(app_module: str) -> Callable[[], str]:
    """What the real host's worker refuses, Azure refuses: index the app with it while the rest starts.
    The returned function waits for the verdict, and raises if the worker refuses the app."""
    verdict: list[tuple[bool, str]] = []
    thread = threading.Thread(target=lambda: verdict.append(preflight(app_module)), name="worker-check",
                              daemon=True)
    thread.start()

    def result() -> str:
        thread.join()
        may_serve, text = verdict[0] if verdict else (True, "Functions worker check skipped: it did not finish")
        if not may_serve:
            raise WorkerRefuses(text)
        return text

    return result


def _start_sandbox(ports: Ports, app_module: str, stops: list[Callable[[], None]]) -> None:
    ports.check_free(with_emulators=True, with_azurite=True)
    started = time.monotonic()
    worker_check = _worker_check(app_module)
    keys = HostKeys(master=secrets.token_urlsafe(24), default=secrets.token_urlsafe(24))
    azurite = start_azurite(ports=AzuritePorts.from_base(ports.azurite))
    stops.append(azurite.stop)
    emulators = sandbox.start_emulators(ports.graph, ports.anny, anny_config=ANNY_LIMITS)
    stops.append(emulators.stop)
    org = sandbox.seed(emulators)
    app = importlib.import_module(app_module).app
    host = LocalFunctionsHost(app, azurite.connection_string, keys=keys, port=ports.app, run_timers=True)
    os.environ.update(sandbox.sandbox_env(azurite, emulators, host.url, keys))
    worker_verdict = worker_check()
    _start_host(host, stops)
    sandbox.connect(org, emulators, host.url, keys)
    sandbox.wait_for_initial_sync(org, emulators, host)
    stack = RunningStack(pid=os.getpid(), mode="sandbox", app_url=host.url, admin_api=f"{host.url}/api/manage",
                         admin_key=keys.master, graph_url=emulators.graph_server.url,
                         anny_url=emulators.anny_server.url, azurite=azurite.connection_string, rooms=org.rooms)
    _write_stack(stack, stops)
    print(_sandbox_banner(stack, org, worker_verdict, time.monotonic() - started), flush=True)


def _start_real(ports: Ports, app_module: str, settings: dict[str, str], stops: list[Callable[[], None]]) -> None:
    for name, value in settings.items():
        os.environ.setdefault(name, value)
    local_storage = os.environ.get("AzureWebJobsStorage", "") in LOCAL_STORAGE
    ports.check_free(with_emulators=False, with_azurite=local_storage)
    keys = _real_keys()
    worker_check = _worker_check(app_module)
    if local_storage:
        azurite = start_azurite(ports=AzuritePorts.from_base(ports.azurite))
        stops.append(azurite.stop)
        os.environ["AzureWebJobsStorage"] = azurite.connection_string
    app = importlib.import_module(app_module).app
    host = LocalFunctionsHost(app, os.environ["AzureWebJobsStorage"], keys=keys, port=ports.app, run_timers=True)
    worker_verdict = worker_check()
    _start_host(host, stops)
    stack = RunningStack(pid=os.getpid(), mode="real", app_url=host.url, admin_api=f"{host.url}/api/manage",
                         admin_key=keys.master, time_zone=os.environ.get("SYNC_TIME_ZONE", "Europe/Berlin"),
                         azurite=os.environ["AzureWebJobsStorage"] if local_storage else "")
    _write_stack(stack, stops)
    public = os.environ.get("PUBLIC_BASE_URL", "")
    print("\n".join([
        f"anny sync, against the real Graph and anny — app on {host.url}/api/ (public: {public or 'not set'})",
        f"  anny webhook URL: {public or host.url}/api/anny/webhook?code=<DEVHOST_FUNCTION_KEY>",
        f"  keys and URLs for the CLI: {stack_file()} (`python -m sync status` reads it)",
        f"  {worker_verdict}",
        "  stop: Ctrl-C",
    ]), flush=True)


def _start_host(host: LocalFunctionsHost, stops: list[Callable[[], None]]) -> None:
    from sync.services import close_services

    host.start()
    stops.append(host.stop)
    stops.append(lambda: host.call(close_services(), timeout=5))


def _real_keys() -> HostKeys:
    """The function key the anny webhook URL carries must outlive a restart, so it is a setting;
    Graph's notification URLs carry GRAPH_NOTIFICATION_KEY, as the `graph-notify` host key does in Azure."""
    function_key = os.environ.get("DEVHOST_FUNCTION_KEY", "")
    if len(function_key) < 32:
        raise SetupError("set DEVHOST_FUNCTION_KEY (at least 32 characters, e.g. `openssl rand -hex 32`) in "
                      "local.settings.json: the anny webhook URL carries it as ?code=")
    notify_key = os.environ.get("GRAPH_NOTIFICATION_KEY", "")
    per_function = {name: notify_key for name in ("graph_notify", "graph_lifecycle")} if notify_key else {}
    return HostKeys(master=os.environ.get("DEVHOST_MASTER_KEY") or secrets.token_urlsafe(32), default=function_key,
                    per_function=per_function)


def _write_stack(stack: RunningStack, stops: list[Callable[[], None]]) -> None:
    write_local_stack(stack)
    stops.append(lambda: remove_local_stack(stack.pid))


def _sandbox_banner(stack: RunningStack, org: SeededOrganisation, worker_verdict: str, seconds: float) -> str:
    first = stack.rooms[0]
    synced = f"{org.mirror_events} mirror events and {org.mirror_blockers} blockers written" + (
        "" if org.settled else " so far, the rest follows in the background")
    return "\n".join([
        "",
        f"anny sync sandbox ready in {seconds:.1f} s: seeded {len(org.rooms)} mapped rooms, "
        f"{org.anny_bookings} anny bookings (incl. a series), {org.outlook_meetings} Outlook meetings; "
        f"anny webhook registered; sync active ({synced}).",
        "  anny's rate limits are enforced by the emulator (400 reads and 100 writes a minute, as documented).",
        f"  app            {stack.app_url}/api/   (keys: in {stack_file()}; {worker_verdict})",
        f"  Graph emulator {stack.graph_url}/v1.0   (person in Outlook: {stack.graph_url}/_control)",
        f"  anny emulator  {stack.anny_url}/api/v1   (person in anny: {stack.anny_url}/_control)",
        "  try it, in another terminal:",
        "    .venv/bin/python -m sync status",
        f"    .venv/bin/python -m sync sandbox book --room {first.name.split()[-1].lower()} --at 'tomorrow 10:00'",
        f"    .venv/bin/python -m sync sandbox meet --room {first.name.split()[-1].lower()} --at 'tomorrow 16:00' "
        "--subject Board",
        "  stop: Ctrl-C",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
