"""What a Graph handler gets: the request, its path parameters, the emulator and its mailbox."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from .calendar import Change
from .errors import GraphError
from .model import Mailbox
from .request import GraphRequest
from .state import GraphConfig, State

if TYPE_CHECKING:
    from .emulator import GraphEmulator


@dataclass
class Context:
    request: GraphRequest
    params: dict[str, str]
    emulator: GraphEmulator
    mailbox_or_none: Mailbox | None = None
    changes: list[Change] = field(default_factory=list)

    @property
    def state(self) -> State:
        return self.emulator.state

    @property
    def config(self) -> GraphConfig:
        return self.emulator.config

    @property
    def now(self) -> datetime:
        return self.emulator.clock.now()

    @property
    def mailbox(self) -> Mailbox:
        if self.mailbox_or_none is None:
            raise GraphError(500, "InternalServerError", "route has no mailbox")
        return self.mailbox_or_none

    def context_url(self, tail: str) -> str:
        return f"{self.request.origin}/v1.0/$metadata#{tail}"
