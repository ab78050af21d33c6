"""Start and stop Azurite (the official Azure Storage emulator, from npm) on free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
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


def start_azurite(timeout: float = 30) -> Azurite:
    table_port, queue_port = free_port(), free_port()
    blob_port = free_port()
    args = [azurite_binary(), "--inMemoryPersistence", "--silent", "--skipApiVersionCheck", "--loose",
            "--blobHost", "127.0.0.1", "--blobPort", str(blob_port),
            "--tableHost", "127.0.0.1", "--tablePort", str(table_port),
            "--queueHost", "127.0.0.1", "--queuePort", str(queue_port)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "AZURITE_ACCOUNTS": ""}, start_new_session=True)
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
