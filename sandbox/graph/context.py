"""What a Graph handler gets: the request, its path parameters, the emulator's parts it serves from
(state, configuration, clock, notifier) and its mailbox. Handlers never see the emulator itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .calendar import Change
from .clock import Clock
from .errors import GraphError
from .model import Mailbox
from .notify import Notifier
from .request import GraphRequest
from .state import GraphConfig, State


@dataclass
class Context:
    request: GraphRequest
    params: dict[str, str]
    state: State
    config: GraphConfig
    clock: Clock
    notifier: Notifier
    mailbox_or_none: Mailbox | None = None
    changes: list[Change] = field(default_factory=list)

    @property
    def now(self) -> datetime:
        return self.clock.now()

    @property
    def mailbox(self) -> Mailbox:
        if self.mailbox_or_none is None:
            raise GraphError(500, "InternalServerError", "route has no mailbox")
        return self.mailbox_or_none

    def context_url(self, tail: str) -> str:
        return f"{self.request.origin}/v1.0/$metadata#{tail}"
