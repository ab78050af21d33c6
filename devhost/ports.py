"""The fixed, documented ports of `make run`, and the check that they are free before anything starts."""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from devhost.azurite import AzuritePorts

APP_PORT = 7071  # the Functions host's own default
GRAPH_PORT = 7072
ANNY_PORT = 7073
AZURITE_PORT = 10000  # Azurite's defaults: blob 10000, queue 10001, table 10002


class PortInUse(RuntimeError):
    """A port `make run` needs is taken; the message names it and the flag that changes it."""

    def __init__(self, port: int, what: str, flag: str) -> None:
        super().__init__(f"port {port} ({what}) is in use: stop what uses it, or choose another port with "
                         f"{flag} (e.g. `make run RUN_ARGS='{flag} {port + 100}'`)")
        self.port = port


@dataclass(frozen=True)
class Ports:
    """0 means any free port (the tests use that)."""

    app: int = APP_PORT
    graph: int = GRAPH_PORT
    anny: int = ANNY_PORT
    azurite: int = AZURITE_PORT

    def wanted(self, with_emulators: bool, with_azurite: bool) -> list[tuple[int, str, str]]:
        """(port, what listens there, the flag that changes it) for every fixed port this run needs."""
        wanted = [(self.app, "the function app", "--port")]
        if with_emulators:
            wanted += [(self.graph, "the Graph emulator", "--graph-port"),
                       (self.anny, "the anny emulator", "--anny-port")]
        if with_azurite and self.azurite:
            azurite = AzuritePorts.from_base(self.azurite)
            wanted += [(port, f"Azurite {name}", "--azurite-port")
                       for name, port in (("blob", azurite.blob), ("queue", azurite.queue), ("table", azurite.table))]
        return [w for w in wanted if w[0]]

    def check_free(self, with_emulators: bool, with_azurite: bool) -> None:
        for port, what, flag in self.wanted(with_emulators, with_azurite):
            if not is_free(port):
                raise PortInUse(port, what, flag)


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on the port now (with SO_REUSEADDR, as aiohttp and Node bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True
