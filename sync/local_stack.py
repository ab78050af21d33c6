"""The local stack file: how `python -m sync` finds the app that `make run` is serving on this machine.

`make run` writes it (readable by its owner only: it holds the admin key) once the app answers,
and removes it when it stops. The CLI reads it when no `--api`/`SYNC_ADMIN_API` is given.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STACK_FILE_ENV = "SYNC_LOCAL_STACK"
DEFAULT_FILE = Path(__file__).resolve().parent.parent / ".local-stack.json"


@dataclass
class SandboxRoomInfo:
    room: str
    name: str
    anny_resource: str
    children: dict[str, str] = field(default_factory=dict)  # child name → anny resource id


@dataclass
class RunningStack:
    """What a running `make run` serves; `graph`/`anny` are the emulators (sandbox mode only)."""

    pid: int
    mode: str  # "sandbox" or "real"
    app_url: str
    admin_api: str
    admin_key: str
    time_zone: str = "Europe/Berlin"
    graph_url: str = ""
    anny_url: str = ""
    azurite: str = ""
    rooms: list[SandboxRoomInfo] = field(default_factory=list)

    @property
    def is_sandbox(self) -> bool:
        return self.mode == "sandbox"


def stack_file() -> Path:
    return Path(os.environ.get(STACK_FILE_ENV) or DEFAULT_FILE)


def write_local_stack(stack: RunningStack, path: Path | None = None) -> Path:
    path = path or stack_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(stack), out, indent=2)
    return path


def remove_local_stack(pid: int, path: Path | None = None) -> None:
    """Remove the file if it is still ours (a second `make run` may have replaced it)."""
    path = path or stack_file()
    found = read_local_stack(path, require_running=False)
    if found is not None and found.pid == pid:
        path.unlink(missing_ok=True)


def read_local_stack(path: Path | None = None, require_running: bool = True) -> RunningStack | None:
    """The stack described by the file, or None when there is none (or its process is gone)."""
    path = path or stack_file()
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        rooms = [SandboxRoomInfo(**room) for room in data.pop("rooms", [])]
        stack = RunningStack(**data, rooms=rooms)
    except (OSError, ValueError, TypeError):
        return None
    if require_running and not _running(stack.pid):
        return None
    return stack


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
