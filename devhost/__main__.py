"""`python -m devhost` (`make run`): run the function app locally under the local functions runner.

Settings come from local.settings.json (`Values`), then the environment. With
`--with-emulators`, Azurite and the Graph and anny emulators are started too and the
settings pointed at them, so the whole product runs on this machine.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import threading
from pathlib import Path

from devhost.azurite import start_azurite
from devhost.host import HostKeys, LocalFunctionsHost
from devhost.worker_env import preflight

ROOT = Path(__file__).resolve().parent.parent


class _StructuredFormatter(logging.Formatter):
    """Shows the `extra=` fields the app logs (in Azure they become custom dimensions)."""

    _standard = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in vars(record).items() if k not in self._standard}
        text = super().format(record)
        return f"{text} {json.dumps(extras, default=str)}" if extras else text


def _load_local_settings(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    values = json.loads(path.read_text()).get("Values", {})
    return {k: str(v) for k, v in values.items() if v != ""}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    parser.add_argument("--port", type=int, default=7071)
    parser.add_argument("--app", default="function_app", help="module holding `app` (default function_app)")
    parser.add_argument("--settings", default=str(ROOT / "local.settings.json"))
    parser.add_argument("--with-emulators", action="store_true", help="start Azurite, Graph and anny emulators")
    args = parser.parse_args()
    handler = logging.StreamHandler()
    handler.setFormatter(_StructuredFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDKs' request logging is noise here
    logging.getLogger("httpx").setLevel(logging.WARNING)

    may_serve, verdict = preflight(args.app)  # what the real host's worker refuses, Azure refuses
    print(verdict)
    if not may_serve:
        raise SystemExit(1)
    for name, value in _load_local_settings(Path(args.settings)).items():
        os.environ.setdefault(name, value)
    stops = []
    keys = HostKeys(master=os.environ.get("DEVHOST_MASTER_KEY", "local-master-key"),
                    default=os.environ.get("DEVHOST_FUNCTION_KEY", "local-function-key"))
    if args.with_emulators:
        stops.extend(_start_emulators(args.port, keys))
    connection = os.environ.get("AzureWebJobsStorage", "")
    if connection in ("", "UseDevelopmentStorage=true"):
        azurite = start_azurite()
        stops.append(azurite.stop)
        os.environ["AzureWebJobsStorage"] = connection = azurite.connection_string

    app = importlib.import_module(args.app).app
    host = LocalFunctionsHost(app, connection, keys=keys, port=args.port, run_timers=True).start()
    stops.insert(0, host.stop)
    print(f"functions host on {host.url}/api/ (function key {keys.default!r}, master key {keys.master!r})")
    for f in host.functions:
        print(f"  {f.name}: {f.trigger['type']} {f.trigger.get('route') or f.trigger.get('queueName') or ''}")
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    for stop in stops:
        stop()


def _start_emulators(port: int, keys: HostKeys) -> list:
    from sandbox.anny import start_anny_emulator
    from sandbox.graph.emulator import start_graph_emulator

    graph, graph_server = start_graph_emulator()
    anny, anny_server = start_anny_emulator()
    os.environ.update({
        "GRAPH_BASE_URL": graph.base_url, "GRAPH_AUTH_MODE": "static_token", "GRAPH_STATIC_TOKEN": "local",
        "ANNY_BASE_URL": anny_server.url, "ANNY_API_TOKEN": anny.config.token,
        "ANNY_ORGANIZATION_ID": anny.config.organization_id, "ANNY_WEBHOOK_SECRET": "local-webhook-secret",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}", "GRAPH_NOTIFICATION_KEY": keys.default,
    })
    print(f"Graph emulator {graph.base_url}  (control: {graph_server.url}/_control)")
    print(f"anny emulator  {anny_server.url}  (control: {anny_server.url}/_control)")
    return [graph_server.stop, anny_server.stop]


if __name__ == "__main__":
    main()
