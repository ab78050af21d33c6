"""Everything the emulator stores, and its configuration."""

from __future__ import annotations

from dataclasses import dataclass, field

from .delta import DeltaStore
from .errors import GraphError
from .model import Mailbox, Room
from .subscriptions import SubscriptionStore


@dataclass
class GraphConfig:
    """Emulator settings; every field can be given to `start_graph_emulator(**config)`."""

    tenant_id: str = "4a1c9f2e-8d3b-4c55-9e61-0d2f7a6b3c10"
    application_id: str = "0b7d2c3e-5f61-4a8b-9c0d-e1f2a3b4c5d6"
    concurrency: int = 4
    budget: int = 10_000
    window_seconds: float = 600.0
    concurrency_retry_after: int = 1
    latency_ms: float = 0.0
    max_subscription_minutes: int = 10_080
    validation_timeout: float = 10.0
    notification_batch_interval: float = 0.05
    notification_max_attempts: int = 4
    notification_retry_delay: float = 0.5
    notification_timeout: float = 10.0
    delta_token_ttl_seconds: float | None = None
    events_page_size: int = 10
    delta_page_size: int = 10
    places_page_size: int = 100


@dataclass
class State:
    mailboxes: dict[str, Mailbox] = field(default_factory=dict)  # by lower-cased address
    subscriptions: SubscriptionStore = field(default_factory=SubscriptionStore)
    delta: DeltaStore = field(default_factory=DeltaStore)

    def add(self, mailbox: Mailbox) -> Mailbox:
        existing = self.mailboxes.get(mailbox.key)
        if existing is not None:
            existing.display_name, existing.room = mailbox.display_name, mailbox.room or existing.room
            return existing
        self.mailboxes[mailbox.key] = mailbox
        return mailbox

    def find(self, name: str) -> Mailbox | None:
        """A mailbox by SMTP address (any case) or by user id."""
        found = self.mailboxes.get(name.lower())
        if found is not None:
            return found
        return next((m for m in self.mailboxes.values() if m.user_id.lower() == name.lower()), None)

    def mailbox(self, name: str) -> Mailbox:
        found = self.find(name)
        if found is None:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{name}' is invalid.")
        return found

    def rooms(self) -> list[Room]:
        return [m.room for m in self.mailboxes.values() if m.room is not None]
