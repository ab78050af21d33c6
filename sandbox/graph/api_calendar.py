"""Graph handlers for a mailbox's calendar: events, calendarView, delta, instances."""

from __future__ import annotations

from datetime import datetime

from . import calendar, odata
from .context import Context
from .delta import Baseline, DeltaRound, Removed
from .errors import GraphError
from .eventbody import check_body, render
from .model import Instance
from .request import GraphResponse, page
from .timefmt import instant, zone


def _render(ctx: Context, inst: Instance, expand: list[str] | None = None) -> dict:
    tz = ctx.request.timezone
    if tz is not None:
        zone(tz)
    return odata.select(render(inst, ctx.mailbox, tz, expand), ctx.request.query.get("$select"))


def _events_context(ctx: Context) -> str:
    return ctx.context_url(f"users('{ctx.mailbox.address}')/events")


def _entity(ctx: Context, inst: Instance, expand: list[str] | None = None) -> dict:
    return {"@odata.context": _events_context(ctx) + "/$entity", **_render(ctx, inst, expand)}


async def list_events(ctx: Context) -> GraphResponse:
    query = ctx.request.query
    expand = odata.expand(query.get("$expand"))
    keep = odata.where(query.get("$filter"))
    items = [_render(ctx, inst, expand) for inst in calendar.masters_and_singles(ctx.mailbox) if keep(inst)]
    return page(ctx.request, items, ctx.config.events_page_size, _events_context(ctx))


async def get_event(ctx: Context) -> GraphResponse:
    expand = odata.expand(ctx.request.query.get("$expand"))
    return GraphResponse(200, _entity(ctx, calendar.instance(ctx.mailbox, ctx.params["id"]), expand))


async def create_event(ctx: Context) -> GraphResponse:
    body = check_body(ctx.request.json(), creating=True)
    event, changes = calendar.create(ctx.mailbox, body, ctx.now)
    ctx.changes.extend(changes)
    return GraphResponse(201, _entity(ctx, event.as_instance()))


async def update_event(ctx: Context) -> GraphResponse:
    body = check_body(ctx.request.json(), creating=False)
    inst, changes = calendar.update(ctx.mailbox, ctx.params["id"], body, ctx.now)
    ctx.changes.extend(changes)
    return GraphResponse(200, _entity(ctx, inst))


async def delete_event(ctx: Context) -> GraphResponse:
    ctx.changes.extend(calendar.delete(ctx.mailbox, ctx.params["id"]))
    return GraphResponse(204)


def _window(ctx: Context) -> tuple[datetime, datetime]:
    query = ctx.request.query
    if not query.get("startdatetime") or not query.get("enddatetime"):
        raise GraphError(
            400,
            "ErrorInvalidParameter",
            "This request requires a time window specified by the query string parameters StartDateTime and "
            "EndDateTime.",
        )
    start, end = instant(query["startdatetime"]), instant(query["enddatetime"])
    calendar.check_window(start, end)
    return start, end


async def calendar_view(ctx: Context) -> GraphResponse:
    start, end = _window(ctx)
    keep = odata.where(ctx.request.query.get("$filter"))
    found = [inst for inst in calendar.view(ctx.mailbox, start, end) if keep(inst)]
    context = ctx.context_url(f"users('{ctx.mailbox.address}')/calendarView")
    return page(ctx.request, found, ctx.config.events_page_size, context, lambda inst: _render(ctx, inst))


async def instances(ctx: Context) -> GraphResponse:
    start, end = _window(ctx)
    event, original = calendar.resolve(ctx.mailbox, ctx.params["id"])
    found = event.instances(start, end) if event.is_series and original is None else []
    items = [_render(ctx, inst) for inst in found]
    context = ctx.context_url(f"users('{ctx.mailbox.address}')/events('{event.id}')/instances")
    return page(ctx.request, items, ctx.config.events_page_size, context)


async def delta(ctx: Context) -> GraphResponse:
    """calendarView delta: a baseline, a `$skiptoken` page, or the changes since a `$deltatoken`."""
    store, query = ctx.state.delta, ctx.request.query
    if "$skiptoken" in query:
        current, offset = store.page(query["$skiptoken"])
    elif "$deltatoken" in query:
        baseline = store.baseline(query["$deltatoken"], ctx.now)
        current = _begin(ctx, baseline.window, baseline)
        offset = 0
    else:
        current, offset = _begin(ctx, _window(ctx), None), 0
    if current.baseline.mailbox_key != ctx.mailbox.key:
        raise GraphError(410, "syncStateNotFound", "The sync state belongs to another mailbox.")
    return _delta_page(ctx, current, offset)


def _begin(ctx: Context, window: tuple[datetime, datetime], previous: Baseline | None) -> DeltaRound:
    found = calendar.view(ctx.mailbox, *window)
    return ctx.state.delta.begin(ctx.mailbox.key, window, found, previous, ctx.now)


def _delta_page(ctx: Context, current: DeltaRound, offset: int) -> GraphResponse:
    size = ctx.request.page_size(ctx.config.delta_page_size)
    chunk = current.items[offset : offset + size]
    body: dict = {"@odata.context": ctx.context_url("Collection(event)"), "value": [_delta_item(ctx, i) for i in chunk]}
    if offset + size < len(current.items):
        body["@odata.nextLink"] = ctx.request.link({"$skiptoken": f"{current.id}.{offset + size}"})
    else:
        body["@odata.deltaLink"] = ctx.request.link({"$deltatoken": ctx.state.delta.finish(current)})
    return GraphResponse(200, body)


def _delta_item(ctx: Context, item: Instance | Removed) -> dict:
    if isinstance(item, Removed):
        return {"@odata.type": "#microsoft.graph.event", "id": item.id, "@removed": {"reason": "deleted"}}
    return {"@odata.type": "#microsoft.graph.event", **_render(ctx, item)}
