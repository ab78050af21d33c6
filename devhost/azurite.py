"""Start and stop Azurite (the official Azure Storage emulator, from npm) on free ports."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sandbox.serve import free_port

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's fixed, publicly documented development key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class AzuriteNotInstalled(RuntimeError):
    pass


@dataclass
class Azurite:
    """A running Azurite with table and queue services, in-memory persistence."""

    table_port: int
    queue_port: int
    process: subprocess.Popen[bytes]

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
                f"QueueEndpoint=http://127.0.0.1:{self.queue_port}/{ACCOUNT};"
                f"TableEndpoint=http://127.0.0.1:{self.table_port}/{ACCOUNT};")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        # Azurite waits for idle keep-alive connections on SIGTERM; in-memory data needs no flush.
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def azurite_binary() -> str:
    local = ROOT / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return str(local)
    found = shutil.which("azurite")
    if found:
        return found
    raise AzuriteNotInstalled("Azurite is not installed: run `npm install` in the project (make test does)")


@dataclass(frozen=True)
class AzuritePorts:
    """Azurite's three services; 0 means any free port. Its documented defaults are 10000–10002."""

    blob: int = 0
    queue: int = 0
    table: int = 0

    @classmethod
    def from_base(cls, base: int) -> AzuritePorts:
        """`base` for blob, `base + 1` for queue, `base + 2` for table, as Azurite's defaults are laid out."""
        return cls(base, base + 1, base + 2) if base else cls()

    def resolved(self) -> AzuritePorts:
        return AzuritePorts(self.blob or free_port(), self.queue or free_port(), self.table or free_port())


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the process that started Azurite dies, however it dies.

    Azurite runs in a session of its own (so a Ctrl-C reaches only us, and we stop it in order),
    which also means no terminal signal reaches it: without this, a crashed or killed runner
    would leave it running.
    """
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def start_azurite(timeout: float = 30, ports: AzuritePorts | None = None) -> Azurite:
    chosen = (ports or AzuritePorts()).resolved()
    blob_port, queue_port, table_port = chosen.blob, chosen.queue, chosen.table
    args = [azurite_binary(), "--inMemoryPersistence", "--silent", "--skipApiVersionCheck", "--loose",
            "--blobHost", "127.0.0.1", "--blobPort", str(blob_port),
            "--tableHost", "127.0.0.1", "--tablePort", str(table_port),
            "--queueHost", "127.0.0.1", "--queuePort", str(queue_port)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "AZURITE_ACCOUNTS": ""}, start_new_session=True,
                               preexec_fn=_die_with_parent)
    azurite = Azurite(table_port, queue_port, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            err = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise RuntimeError(f"Azurite exited early: {err[-2000:]}")
        if _listening(table_port) and _listening(queue_port):
            return azurite
        time.sleep(0.1)
    azurite.stop()
    raise RuntimeError("Azurite did not start in time")


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
