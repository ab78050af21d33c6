"""What `status` shows (one source for the CLI and the admin API), and how the CLI prints answers as text.

`status_view` gathers the state into plain JSON-able data; `render` turns any command's
answer into aligned text for a person. The admin API returns the data, the CLI prints it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from sync.budget import Limits, OrgBudget
from sync.model import SyncWindow
from sync.progress import progress_view
from sync.queues import queue_client
from sync.services import Services
from sync.settings import StorageSettings
from sync.state import Rule, RunRecord
from sync.work import BACKFILL_POISON_QUEUE, BACKFILL_QUEUE, POISON_QUEUE, POISON_QUEUES, WORK_QUEUE

log = logging.getLogger(__name__)
POISON_ADVICE = (f"work items that kept failing (host.json maxDequeueCount) wait in the queues `{POISON_QUEUE}` and "
                 f"`{BACKFILL_POISON_QUEUE}`. Read `last error` below, fix its cause, then move them back "
                 f"to `{WORK_QUEUE}` and `{BACKFILL_QUEUE}` with `python -m sync replay-poison` (as the app's "
                 "identity; in the portal or Storage Explorer your own account would need the role Storage "
                 "Queue Data Contributor, since the template turns shared keys off); `resync` also repairs "
                 "whatever they were about")


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def rule_view(rule: Rule) -> dict[str, Any]:
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in asdict(rule).items()}


async def poison_count(storage: StorageSettings) -> int | None:
    """Work items parked in the poison queues after maxDequeueCount failures (None: unknown)."""
    from azure.core.exceptions import AzureError, ResourceNotFoundError

    total = 0
    for name in POISON_QUEUES:
        client, credential = queue_client(storage, name)
        try:
            total += (await client.get_queue_properties()).approximate_message_count or 0  # header always sent
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            log.warning("poison queue not readable", extra={"queue": name, "error": str(exc)})
            return None
        finally:
            await client.close()
            if credential is not None:
                await credential.close()
    return total


def run_view(run: RunRecord, with_items: bool = False) -> dict[str, Any]:
    view: dict[str, Any] = {"kind": run.kind, "started_at": iso(run.started_at), "finished_at": iso(run.finished_at),
                            "repaired": run.repaired, "checked": run.checked, "held": run.held,
                            "error": run.error or None}
    if with_items:
        view["items"] = run.items
    return view


async def _rule_rows(services: Services) -> list[dict[str, Any]]:
    subscriptions = {s.room: s.expires_at for s in await services.subscriptions.list_subscriptions()}
    rooms = {r.room: r for r in await services.rooms.list_room_states()}
    rows = []
    for rule in await services.rules.list_rules():
        links = await services.links.links_of_room(rule.room)
        room = rooms.get(rule.room)
        outbound = [link.updated_at for link in links if link.origin == "anny"]
        if room is not None and room.last_outbound_at:
            outbound.append(room.last_outbound_at)
        rows.append({
            **rule_view(rule),
            "state": "removing" if rule.removing else "held" if rule.held else "OK",
            "last_sync_to_outlook": iso(max(outbound)) if outbound else None,
            "last_sync_to_anny": iso(room.last_run_at) if room else None,
            "mirror_events": sum(1 for link in links if link.origin == "anny"),
            "mirror_blockers": sum(1 for link in links if link.origin == "outlook" and not link.suppressed),
            "last_error": (room.last_error or None) if room else None,
            "last_error_at": iso(room.last_error_at) if room else None,
            "subscription_expires": iso(subscriptions.get(rule.room)),
        })
    return rows


async def status_view(services: Services, drift: bool = False, budget: OrgBudget | None = None) -> dict[str, Any]:
    settings = services.settings
    limits = Limits.configured(settings)
    status = await services.status.get_status()
    window = SyncWindow.now(datetime.now(UTC), settings.window_months, settings.time_zone)
    runs = await services.status.list_runs()
    poison = await poison_count(settings.storage)
    latest = {kind: next((r for r in runs if r.kind == kind), None) for kind in ("sweep", "nightly")}
    view: dict[str, Any] = {
        "state": status.state,
        "activated_at": iso(status.activated_at),
        "window": {"start": window.start.isoformat(), "end": window.end.isoformat(), "time_zone": settings.time_zone},
        "last_error": status.last_error or None,
        "last_error_at": iso(status.last_error_at),
        "poison_queue": poison,
        "poison_queue_advice": POISON_ADVICE if poison else None,
        "rules": await _rule_rows(services),
        "anny_budget": (await (budget or OrgBudget(services.budget_log, limits)).usage()).as_dict(),
        "initial_sync": progress_view(await services.status.list_progress(), limits),
        "last_sweep": run_view(latest["sweep"]) if latest["sweep"] else None,
        "last_nightly": run_view(latest["nightly"]) if latest["nightly"] else None,
        "runs": [run_view(r, with_items=drift) for r in runs[:10]],
    }
    return view


# --- text for a person ------------------------------------------------------------------------------


def _when(value: str | None) -> str:
    if not value:
        return "-"
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in counts.items() if n) or "nothing"


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> list[str]:
    """Aligned columns: (heading, key) pairs."""
    cells = [[heading for heading, _ in columns]]
    cells += [["-" if row.get(key) in (None, "", []) else str(row[key]) for _, key in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in cells]


def _run_line(run: dict[str, Any] | None) -> str:
    if not run:
        return "never"
    held = f"; held {', '.join(run['held'])}" if run.get("held") else ""
    error = f"; FAILED: {run['error']}" if run.get("error") else ""
    return f"{_when(run['started_at'])}: repaired {_counts(run['repaired'])}{held}{error}"


def render_status(view: dict[str, Any]) -> str:
    window = view["window"]
    lines = [
        f"state          {view['state']}" + (f" since {_when(view['activated_at'])}" if view["activated_at"] else ""),
        f"window         {window['start'][:10]} → {window['end'][:10]} ({window['time_zone']})",
        f"last sweep     {_run_line(view['last_sweep'])}",
        f"last nightly   {_run_line(view['last_nightly'])}",
        f"poison queue   {view['poison_queue'] if view['poison_queue'] is not None else 'unknown'} message(s)",
    ]
    if view.get("poison_queue_advice"):
        lines.append(f"               {view['poison_queue_advice']}")
    if view["last_error"]:
        lines.append(f"last error     {_when(view['last_error_at'])}: {view['last_error']}")
    lines += _budget_lines(view.get("anny_budget")) + _progress_lines(view.get("initial_sync"))
    lines += ["", "rules"]
    rows = [{**r, "to_outlook": _when(r["last_sync_to_outlook"]), "to_anny": _when(r["last_sync_to_anny"]),
             "expires": _when(r["subscription_expires"]), "error": r["last_error"] or "-"} for r in view["rules"]]
    if rows:
        lines += ["  " + line for line in table(rows, [
            ("room", "room"), ("anny resource", "anny_resource_id"), ("state", "state"),
            ("last anny→Outlook", "to_outlook"), ("last Outlook→anny", "to_anny"), ("events", "mirror_events"),
            ("blockers", "mirror_blockers"), ("subscription until", "expires"), ("last error", "error")])]
    else:
        lines.append("  (none: map a room with `python -m sync rules add`)")
    for rule in view["rules"]:
        if rule["held"]:
            lines.append(f"  HELD {rule['anny_resource_id']}: {rule['held']}. Check with `python -m sync resync --rule "
                         f"{rule['anny_resource_id']} --dry-run`, then release with `--confirm-deletions`.")
    lines += ["", "last runs"]
    lines += ["  " + line for line in table(
        [{**r, "started": _when(r["started_at"]), "repaired_text": _counts(r["repaired"])} for r in view["runs"]],
        [("run", "kind"), ("started", "started"), ("repaired", "repaired_text"), ("error", "error")])]
    for run in view["runs"]:
        for item in run.get("items") or []:
            lines.append(f"  {run['kind']} {_when(run['started_at'])}  {item.get('kind')}: "
                         + "  ".join(f"{k}={v}" for k, v in item.items() if k != "kind"))
    return "\n".join(lines)


def _rule_report(rule: dict[str, Any]) -> list[str]:
    """One rule of an activation, resync or preview: counts per direction, first items, the brake."""
    mode = f" ({rule['mode']})" if rule.get("mode") else ""
    lines = [f"{rule['anny_resource']} → {rule['room']}{mode}"]
    for direction in ("anny → Outlook", "Outlook → anny"):
        lines.append(f"  {direction:<16} {_counts(rule.get(direction) or {})}")
        for item in (rule.get("first_items") or {}).get(direction, []):
            lines.append("      " + "  ".join(f"{k}={v}" for k, v in item.items() if v))
    if rule.get("not_previewed"):
        lines.append(f"  NOT PREVIEWED: {rule['not_previewed']}")
    if rule.get("continues"):
        lines.append(f"  CONTINUES in the background from {_when(rule['continues']['at'])} "
                     f"({rule['continues']['reason']}); `status` shows it")
    if rule.get("held"):
        lines.append(f"  HELD: {rule['held']}")
    if rule.get("would_hold"):
        lines.append(f"  WOULD HOLD: {rule['would_hold']}")
    return lines


def render_report(result: dict[str, Any]) -> str:
    lines = ["preview (--dry-run): nothing was written"] if result.get("dry_run") else []
    if result.get("state"):
        lines.append(f"state  {result['state']}")
    for rule in result.get("rules") or []:
        lines += ["", *_rule_report(rule)]
    if not result.get("rules"):
        lines.append("no rules: map a room with `python -m sync rules add`")
    if result.get("note"):
        lines += ["", f"note: {result['note']}"]
    return "\n".join(lines).strip()


def _budget_lines(budget: dict[str, Any] | None) -> list[str]:
    if not budget:
        return []
    throttled = budget.get("throttled_429") or {}
    line = (f"anny budget    reads {budget['reads']}, writes {budget['writes']} in the last {budget['window_s']:g} s; "
            f"{budget['mode']}; 429s received: anny {throttled.get('anny', 0)}, Graph {throttled.get('graph', 0)}")
    if budget.get("paused_for_s"):
        line += f"; paused for {budget['paused_for_s']:g} s (Retry-After)"
    return [line, *(_fallback_line(spell) for spell in budget.get("fallbacks") or [])]


def _fallback_line(spell: dict[str, Any]) -> str:
    """One instance's spell on the local fallback rate (the budget table was unreachable for it)."""
    who = spell["instance"] + (" (this one)" if spell.get("this_instance") else "")
    since = _when(spell["since"])
    if spell["state"] == "ended":
        when = f"from {since} to {_when(spell['until'])}"
    elif spell["state"] == "ongoing":
        when = f"since {since}, ongoing"
    else:
        when = f"since {since}, not heard of since {_when(spell['last_seen'])}"
    error = f": {spell['error']}" if spell.get("error") else ""
    return f"  fallback     instance {who} on the local rate {when}{error}"


def _progress_lines(sync: dict[str, Any] | None) -> list[str]:
    if not sync or not sync.get("in_progress"):
        return []
    eta = sync.get("eta_s")
    left = f"about {duration(eta)} left" if eta is not None else "time left unknown"
    lines = [f"initial sync   anny → Outlook {_done(sync['to_outlook'])}, Outlook → anny {_done(sync['to_anny'])}; "
             f"{left}"]
    for room in sync["rooms"]:
        waiting = (f"; continues at {_when(room['continues_at'])} ({room['continues_reason']})"
                   if room.get("continues_at") else "")
        lines.append(f"               {room['room']}: anny → Outlook {_done(room['to_outlook'])}, "
                     f"Outlook → anny {_done(room['to_anny'])}{waiting}")
    return lines


def _done(direction: dict[str, int]) -> str:
    return f"{direction['done']}/{direction['total']}"


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def render(command: str, result: Any) -> str:
    """Any command's answer as text: status in full, lists as aligned tables, reports as key: value."""
    if command == "status":
        return render_status(result)
    if command in ("activate", "resync"):
        return render_report(result)
    if command == "rules.add" and "initial_sync" in result:
        rule = {k: v for k, v in result.items() if k != "initial_sync"}
        return "\n".join([*_key_values(rule), "", "initial sync", *_rule_report(result["initial_sync"])])
    if isinstance(result, list):
        if not result:
            return "(none)"
        keys = list(dict.fromkeys(k for row in result for k in row))
        return "\n".join(table(result, [(k, k) for k in keys]))
    return "\n".join(_key_values(result))


def _key_values(data: dict[str, Any], indent: str = "") -> list[str]:
    width = max((len(k) for k in data), default=0)
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}")
            lines += _key_values(value, indent + "  ")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{indent}{key}")
            lines += [f"{indent}  " + "  ".join(f"{k}={v}" for k, v in item.items()) for item in value]
        else:
            lines.append(f"{indent}{key.ljust(width)}  {'-' if value in (None, '', []) else value}")
    return lines
