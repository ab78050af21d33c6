"""A throttled or long admin command goes on in the background (issue 10: nothing poisoned, nothing failed by a 429).

Activation, resync and a new rule's initial sync run inline in the admin command. When anny
or Graph answers 429 beyond what can be waited out in place (the SDK's retries, or anny's
`Retry-After` longer than `sync.anny.RETRY_IN_PROCESS_S`), the command does not fail: the
rule being synced and every rule after it are handed to the backfill queue as `RuleSync`
items, invisible until `Retry-After` has passed. The answer reports what was done and what
continues; `status` shows the waiting rooms until their rest has run.

Through the admin API the same happens when the answer is due (`ADMIN_ANSWER_SECONDS`): Azure
ends an HTTP request after 230 s whatever the function does, and an admin who saw the command
fail would start it again. The rules under way are stopped where they are (as a crash there
would; each step is safe to stop after) and handed over with the rules not started, visible
at once. The CLI run locally has no such limit and syncs everything inline.

The rest is the whole comparison of the rule again: what the first run wrote is unchanged
now and costs no write, and every write stays idempotent (links, transactionIds).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sync import progress
from sync.anny import AnnyResource
from sync.errors import RemoteThrottled
from sync.reconcile import Flows, RuleReport, reconcile_rule, side_by_side
from sync.runs import RunLog
from sync.state import Rule
from sync.work import BACKFILL_QUEUE, RuleSync

log = logging.getLogger(__name__)
DEFAULT_WAIT_S = 5.0  # a 429 whose wait is not known (each client already bounds Retry-After)
CONTINUED = " (continued)"
ANSWER_DUE = "the admin API answers within ADMIN_ANSWER_SECONDS (Azure ends an HTTP request after 230 s)"
_answer_due: ContextVar[float | None] = ContextVar("admin_answer_due", default=None)


def answer_due() -> float | None:
    """When the admin API's answer is due (event-loop time), or None: no limit (the CLI run locally, a queue item)."""
    return _answer_due.get()


@contextmanager
def answering_within(seconds: float) -> Iterator[None]:
    """Inline syncs started within this block hand what is left to the backfill queue after `seconds`."""
    token = _answer_due.set(asyncio.get_running_loop().time() + seconds)
    try:
        yield
    finally:
        _answer_due.reset(token)


@dataclass
class Cutoff:
    """Whether `until_due` stopped its block because the answer was due."""

    reached: bool = False


@asynccontextmanager
async def until_due(due_at: float | None) -> AsyncIterator[Cutoff]:
    """Run the block until `due_at` (event-loop time; None: to its end). Stopped then, as a crash
    at that point would stop it, the block's caller sees `reached` instead of an exception."""
    cutoff = Cutoff()
    try:
        async with asyncio.timeout_at(due_at) as deadline:
            yield cutoff
    except TimeoutError:
        if not deadline.expired():
            raise  # a timeout of the block's own
        cutoff.reached = True


@dataclass
class InlineSync:
    """The rule syncs of one admin command (`kind`: activate, resync, rule added)."""

    worker: Flows
    kind: str
    allow_deletions: bool = False
    baseline: bool = False
    continues_at: datetime | None = None  # set by the first 429 or the answer's due time: later rules wait too
    reason: str = ""
    throttled: bool = False
    due_at: float | None = field(default_factory=answer_due)  # when the answer is due (event-loop time); None: never
    _resources: list[AnnyResource] | None = field(default=None, repr=False)

    async def sync_all(self, rules: list[Rule], run: RunLog) -> list[dict[str, Any]]:
        """`sync` for every rule, rooms side by side (`reconcile.side_by_side`): after a 429 in one
        room, the rooms not started yet go to the backfill queue, those under way carry on; once
        the answer is due, those under way go too."""
        if rules and self._resources is None:
            self._resources = await self.worker.services.anny.list_resources()
        return await side_by_side(rules, lambda rule: self.sync(rule, run))

    async def sync(self, rule: Rule, run: RunLog) -> dict[str, Any]:
        """Sync the rule now; after a 429 (now or earlier in this command), or once the answer is due,
        hand it to the backfill queue."""
        report = RuleReport(rule)
        if self.continues_at is None and self.due_at is not None \
                and asyncio.get_running_loop().time() >= self.due_at:
            self._answer_now(rule)
        if self.continues_at is None:
            try:
                async with until_due(self.due_at) as cutoff:
                    if self._resources is None:
                        self._resources = await self.worker.services.anny.list_resources()
                    await reconcile_rule(self.worker, rule, run, self._resources,
                                         allow_deletions=self.allow_deletions, baseline=self.baseline, report=report)
                if not cutoff.reached:
                    return report.view()
                self._answer_now(rule)
            except RemoteThrottled as exc:
                wait = exc.retry_after_s or DEFAULT_WAIT_S
                self.continues_at = max(self.continues_at or datetime.now(UTC),
                                        datetime.now(UTC) + timedelta(seconds=wait))
                self.reason, self.throttled = exc.message, True
                log.warning("throttled during an inline sync; the rest continues from the backfill queue",
                            extra={"run": self.kind, "room": rule.room, "anny_resource": rule.anny_resource_id,
                                   "wait_s": round(wait, 1), "error": str(exc)[:300]})
        return {**report.view(), "continues": await self._hand_over(rule)}

    def _answer_now(self, rule: Rule) -> None:
        """The admin API's answer is due: this rule and the rest continue from the backfill queue at once."""
        if self.continues_at is None:
            self.continues_at, self.reason = datetime.now(UTC), ANSWER_DUE
        log.info("the answer is due; the rest of the inline sync continues from the backfill queue",
                 extra={"run": self.kind, "room": rule.room, "anny_resource": rule.anny_resource_id})

    async def _hand_over(self, rule: Rule) -> dict[str, str]:
        """The rule's sync to the backfill queue, visible from `continues_at`; what the answer says of it."""
        assert self.continues_at is not None
        services = self.worker.services
        delay = max(0.0, (self.continues_at - datetime.now(UTC)).total_seconds())
        work = RuleSync(rule.anny_resource_id, self.kind.removesuffix(CONTINUED), self.allow_deletions,
                        self.baseline)
        await progress.continues(services.status, rule.room, self.continues_at, self.reason)
        await services.queues.send(work, delay_s=delay, queue=BACKFILL_QUEUE)
        return {"at": self.continues_at.isoformat(), "reason": self.reason}

    @property
    def note(self) -> str | None:
        """What the command's answer says when something continues in the background."""
        if self.continues_at is None:
            return None
        why = f"throttled ({self.reason})" if self.throttled else self.reason
        return (f"{why}; what is not done yet continues in the background from "
                f"{self.continues_at.strftime('%H:%M:%S UTC')}: `status` shows it")


async def continue_rule_sync(worker: Flows, work: RuleSync) -> None:
    """The backfill queue's `RuleSync`: the rest of a throttled inline sync (throttled again: later again)."""
    services = worker.services
    rule = await services.rules.get_rule(work.anny_resource)
    if rule is None or rule.removing:
        log.info("throttled sync dropped: its rule is gone", extra={"anny_resource": work.anny_resource})
        return
    await progress.resumed(services.status, rule.room)
    run = RunLog(work.run + CONTINUED, drift=False)
    inline = InlineSync(worker, run.kind, work.allow_deletions, work.baseline)
    view = await inline.sync(rule, run)
    await run.save(services.status, error=inline.note or "")
    log.info("throttled sync continued", extra={"run": work.run, "room": rule.room, "done": "continues" not in view})
