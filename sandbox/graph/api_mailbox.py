"""Graph handlers for places, users and a mailbox's master category list."""

from __future__ import annotations

from .context import Context
from .errors import GraphError, bad_request
from .ids import new_guid
from .model import Category
from .request import GraphResponse, page

COLORS = ("none", *(f"preset{n}" for n in range(25)))


async def list_rooms(ctx: Context) -> GraphResponse:
    rooms = sorted(ctx.state.rooms(), key=lambda room: room.email.lower())
    context = ctx.context_url("places/microsoft.graph.room")
    return page(ctx.request, [room.to_graph() for room in rooms], ctx.config.places_page_size, context)


async def get_user(ctx: Context) -> GraphResponse:
    mailbox = ctx.mailbox
    body = {
        "@odata.context": ctx.context_url("users/$entity"),
        "id": mailbox.user_id,
        "displayName": mailbox.display_name,
        "mail": mailbox.address,
        "userPrincipalName": mailbox.address,
    }
    return GraphResponse(200, body)


def _categories_context(ctx: Context) -> str:
    return ctx.context_url(f"users('{ctx.mailbox.address}')/outlook/masterCategories")


async def list_categories(ctx: Context) -> GraphResponse:
    items = [category.to_graph() for category in ctx.mailbox.categories]
    return GraphResponse(200, {"@odata.context": _categories_context(ctx), "value": items})


def _color(value: object) -> str:
    if value not in COLORS:
        raise bad_request(f"Requested value '{value}' was not found.", "RequestBodyRead")
    return str(value)


async def create_category(ctx: Context) -> GraphResponse:
    body = ctx.request.json_object()
    name = str(body.get("displayName") or "").strip()
    if not name:
        raise bad_request("The displayName of a category is required.", "ErrorInvalidRequest")
    if any(c.display_name.lower() == name.lower() for c in ctx.mailbox.categories):
        raise GraphError(409, "ErrorFolderExists", "A category with the specified name already exists.")
    category = Category(new_guid(), name, _color(body.get("color", "none")))
    ctx.mailbox.categories.append(category)
    return GraphResponse(201, {"@odata.context": _categories_context(ctx) + "/$entity", **category.to_graph()})


def _category(ctx: Context) -> Category:
    found = next((c for c in ctx.mailbox.categories if c.id == ctx.params["id"]), None)
    if found is None:
        raise GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")
    return found


async def get_category(ctx: Context) -> GraphResponse:
    return GraphResponse(200, {"@odata.context": _categories_context(ctx) + "/$entity", **_category(ctx).to_graph()})


async def update_category(ctx: Context) -> GraphResponse:
    """Only the colour can change; a category's displayName is immutable."""
    category, body = _category(ctx), ctx.request.json_object()
    if "displayName" in body and body["displayName"] != category.display_name:
        raise bad_request("The displayName of a category cannot be changed.", "ErrorInvalidRequest")
    if "color" in body:
        category.color = _color(body["color"])
    return GraphResponse(200, {"@odata.context": _categories_context(ctx) + "/$entity", **category.to_graph()})


async def delete_category(ctx: Context) -> GraphResponse:
    ctx.mailbox.categories.remove(_category(ctx))
    return GraphResponse(204)
