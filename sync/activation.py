"""Activation, deactivation, reactivation and resync, each with a `--dry-run` preview
(behaviour: rules, activation and removal).

* The first activation of a rule transfers everything in the window, both ways.
* `deactivate` stops syncing and removes nothing; the time it happened is kept.
* Activating again transfers only what is new: the rule remembers the period it was off,
  and items created in it stay unsynced (their count is in the report). Linked items catch
  up with their changes.
* `resync` forgets those periods and brings everything in the window over; with
  `--confirm-deletions` it also releases a rule the brake on mass deletion held.
"""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from typing import Any

from sync.continuation import InlineSync, answer_due, until_due
from sync.errors import RuleError
from sync.nightly import local_day
from sync.reconcile import RuleReport, preview_rule, side_by_side
from sync.runs import RunLog
from sync.state import IntegrationStatus, Rule, RulesTable
from sync.worker import Worker

log = logging.getLogger(__name__)
NOT_PREVIEWED = ("the answer was due (ADMIN_ANSWER_SECONDS; Azure ends an HTTP request after 230 s): "
                 "preview this rule alone with `resync --rule {rule} --dry-run`")
UNSYNCED_NOTE = ("items created while the integration was deactivated stay unsynced ('left unsynced'); "
                 "`resync` brings them over")


def _mode(rule: Rule, status: IntegrationStatus) -> str:
    if rule.activated_at is None:
        return "initial"
    return "catch-up" if status.state == "active" else "reactivation"


def _prepared(rule: Rule, mode: str, status: IntegrationStatus, now: datetime) -> Rule:
    """The rule as activation leaves it: first activation time, or one more off period."""
    if mode == "initial":
        return dataclasses.replace(rule, activated_at=now)
    if mode == "reactivation":
        off_since = status.deactivated_at or rule.activated_at or now
        return dataclasses.replace(rule, off_periods=[*rule.off_periods, [off_since.isoformat(), now.isoformat()]])
    return rule


async def _rules(rules: RulesTable, only: str = "") -> list[Rule]:
    if only:
        rule = await rules.get_rule(only)
        if rule is None or rule.removing:
            raise RuleError("no rule for this anny resource; see `python -m sync rules list`", anny_resource=only)
        return [rule]
    return [r for r in await rules.list_rules() if not r.removing]


async def _preview(worker: Worker, rules: list[tuple[Rule, str]]) -> list[dict[str, Any]]:
    """Each rule's preview, rooms side by side. Through the admin API a rule whose preview is not
    done when the answer is due (`continuation.answer_due`) is reported as not previewed."""
    resources = await worker.services.anny.list_resources()
    modes, due = {rule.anny_resource_id: mode for rule, mode in rules}, answer_due()

    async def one(rule: Rule) -> dict[str, Any]:
        mode, report = modes[rule.anny_resource_id], RuleReport(rule)
        async with until_due(due) as cutoff:
            report = await preview_rule(worker, rule, resources)
        if cutoff.reached:
            return {"mode": mode, **report.view(), "not_previewed": NOT_PREVIEWED.format(rule=rule.anny_resource_id)}
        return {"mode": mode, **report.view(with_items=True)}

    return await side_by_side([rule for rule, _ in rules], one)


async def activate(worker: Worker, dry_run: bool = False) -> dict[str, Any]:
    """Subscribe every mapped room and sync both ways: everything for new rules, only what is new
    for rules that were synced before the last deactivation."""
    services = worker.services
    status = await services.status.get_status()
    now = datetime.now(UTC)
    planned = [(_prepared(rule, _mode(rule, status), status, now), _mode(rule, status))
               for rule in await _rules(services.rules)]
    if dry_run:
        return {"dry_run": True, "state": status.state, "rules": await _preview(worker, planned),
                "note": UNSYNCED_NOTE}
    for rule, _ in planned:
        await services.rules.save_rule(rule)

    def active(current: IntegrationStatus) -> None:
        current.state, current.activated_at = "active", now
        current.nightly_day = local_day(now, worker.services.settings.time_zone)  # this run is today's
        current.sweep_high_water = ""  # this run compared everything: the sweep starts from now

    await services.status.update_status(active)
    worker.services.forget_status()
    run = RunLog("activate", drift=False)
    run.count("subscriptions renewed", await worker.subscriptions.renew_due())
    inline = InlineSync(worker, run.kind)  # a 429 hands the rest to the backfill queue
    done = await inline.sync_all([rule for rule, _ in planned], run)
    reports = [{"mode": mode, **view} for (_, mode), view in zip(planned, done, strict=True)]
    await run.save(services.status)
    log.info("activated", extra={"rules": len(reports)})
    return {"state": "active", "rules": reports, "note": _notes(UNSYNCED_NOTE, inline.note)}


def _notes(*notes: str | None) -> str:
    return "; ".join(note for note in notes if note)


async def deactivate(worker: Worker) -> dict[str, Any]:
    """Stop syncing: subscriptions removed, webhooks acknowledged and ignored; nothing else removed."""
    services = worker.services

    def inactive(status: IntegrationStatus) -> None:
        if status.state == "active":
            status.deactivated_at = datetime.now(UTC)
        status.state = "inactive"

    await services.status.update_status(inactive)
    worker.services.forget_status()
    removed = 0
    for rule in await services.rules.list_rules():
        removed += await worker.subscriptions.remove(rule.room)
    return {"state": "inactive", "subscriptions_removed": removed}


async def resync(worker: Worker, only: str = "", dry_run: bool = False,
                 confirm_deletions: bool = False) -> dict[str, Any]:
    """Bring everything in the window over, both ways, for one rule or all; with
    `confirm_deletions` the brake does not apply to this run and a held rule is released."""
    services = worker.services
    rules = [(dataclasses.replace(rule, off_periods=[]), "resync") for rule in await _rules(services.rules, only)]
    if dry_run:
        return {"dry_run": True, "rules": await _preview(worker, rules)}
    if not await worker.services.is_active():
        raise RuleError("the sync is not active: `activate` first (or preview with --dry-run)")
    held = [rule.anny_resource_id for rule, _ in rules if rule.held and not confirm_deletions]
    if held:
        raise RuleError("held by the brake on mass deletion: check with `resync --rule R --dry-run`, then "
                        "release with `resync --rule R --confirm-deletions`", held=", ".join(held))
    run = RunLog("resync", drift=False)
    inline = InlineSync(worker, run.kind, allow_deletions=confirm_deletions, baseline=True)
    for rule, _ in rules:
        if confirm_deletions:
            rule.held, rule.held_at = "", None
        await services.rules.save_rule(rule)
    reports = await inline.sync_all([rule for rule, _ in rules], run)
    await run.save(services.status)
    return {"rules": reports, **({"note": inline.note} if inline.note else {})}
