"""calendarView delta rounds and tokens.

A round is computed once, when a client starts it (no token, or a deltaLink): the list
of instances to return (all of them for a baseline; for a deltaLink only the ones new or
changed since the token's snapshot, plus `@removed` entries for the ones gone). The round
is served page by page through `$skiptoken`; its last page carries a `$deltatoken` that
names the snapshot {instance id -> changeKey} the round started from.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from .errors import GraphError
from .model import Instance

MAX_ROUNDS = 2000


@dataclass(frozen=True)
class Removed:
    id: str


@dataclass
class Baseline:
    mailbox_key: str
    window: tuple[datetime, datetime]
    snapshot: dict[str, str]
    created: datetime


@dataclass
class DeltaRound:
    id: str
    baseline: Baseline  # what the round's deltaLink will stand for
    items: list[Instance | Removed]


def gone() -> GraphError:
    return GraphError(410, "syncStateNotFound", "The sync state generation is not found; start a new delta baseline.")


class DeltaStore:
    def __init__(self) -> None:
        self.rounds: OrderedDict[str, DeltaRound] = OrderedDict()
        self.baselines: dict[str, Baseline] = {}
        self.ttl: timedelta | None = None
        self.omit_removals = 0  # the next N deletions a round would report are never reported

    def begin(
        self,
        mailbox_key: str,
        window: tuple[datetime, datetime],
        current: list[Instance],
        previous: Baseline | None,
        now: datetime,
    ) -> DeltaRound:
        snapshot = {inst.id: inst.change_key for inst in current}
        old = previous.snapshot if previous else {}
        items: list[Instance | Removed] = [inst for inst in current if old.get(inst.id) != inst.change_key]
        removed = [Removed(item_id) for item_id in old if item_id not in snapshot]
        omitted = min(self.omit_removals, len(removed))  # gone from the snapshot: never reported later
        self.omit_removals -= omitted
        items += removed[omitted:]
        found = DeltaRound(secrets.token_urlsafe(18), Baseline(mailbox_key, window, snapshot, now), items)
        self.rounds[found.id] = found
        while len(self.rounds) > MAX_ROUNDS:
            self.rounds.popitem(last=False)
        return found

    def page(self, skiptoken: str) -> tuple[DeltaRound, int]:
        round_id, _, offset = skiptoken.rpartition(".")
        found = self.rounds.get(round_id)
        if found is None or not offset.isdigit():
            raise gone()
        return found, int(offset)

    def finish(self, finished: DeltaRound) -> str:
        token = secrets.token_urlsafe(24)
        self.baselines[token] = finished.baseline
        return token

    def baseline(self, token: str, now: datetime) -> Baseline:
        found = self.baselines.get(token)
        if found is None or (self.ttl is not None and now - found.created > self.ttl):
            raise gone()
        return found

    def expire(self, mailbox_key: str) -> int:
        """Forget every token of a mailbox (or all with "*"); returns how many were dropped."""
        doomed = [t for t, b in self.baselines.items() if mailbox_key in ("*", b.mailbox_key)]
        for token in doomed:
            del self.baselines[token]
        for round_id in [r for r, d in self.rounds.items() if mailbox_key in ("*", d.baseline.mailbox_key)]:
            del self.rounds[round_id]
        return len(doomed)
