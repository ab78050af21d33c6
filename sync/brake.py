"""The brake on mass deletion (behaviour: rules, activation and removal; issue 13): a run that
would delete too many of a rule's mirrors at once stops before deleting and holds the rule until an admin confirms.

Replicating an empty side (a failed read, a wrong token, a wiped calendar) is the classic
disaster of two-way sync; a hold costs a delay, a wrong mass deletion costs every booking.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sync.settings import Settings
from sync.state import Rule, RulesTable

log = logging.getLogger(__name__)


def brake_trips(deletions: int, mirrors: int, settings: Settings) -> bool:
    """More than the configured share of the mirrors, and more than the configured minimum."""
    return deletions > settings.brake_min_items and deletions * 100 > settings.brake_share_percent * mirrors


async def hold_rule(rules: RulesTable, rule: Rule, settings: Settings, what: str, deletions: int,
                    mirrors: int) -> str:
    """Mark the rule held, with the reason and the numbers; its sync pauses until `resync --confirm-deletions`."""
    reason = (f"{what}: {deletions} of {mirrors} mirror(s) would be deleted in one run (brake: more than "
              f"{settings.brake_share_percent} % and more than {settings.brake_min_items})")
    current = await rules.get_rule(rule.anny_resource_id) or rule
    current.held, current.held_at = reason, datetime.now(UTC)
    await rules.save_rule(current)
    rule.held, rule.held_at = current.held, current.held_at
    log.warning("rule held by the brake on mass deletion; nothing deleted",
                extra={"anny_resource": rule.anny_resource_id, "room": rule.room, "reason": reason})
    return reason
