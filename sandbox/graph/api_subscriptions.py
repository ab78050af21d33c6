"""Graph handlers for `/subscriptions`, and the notification bodies subscriptions receive."""

from __future__ import annotations

from .calendar import Change
from .context import Context
from .errors import GraphError
from .ids import new_guid
from .notify import Notifier, Outgoing
from .request import GraphResponse
from .subscriptions import (
    Subscription,
    change_types,
    client_state,
    expiration,
    invalid,
    resource_mailbox,
    url,
    validation_token,
    with_token,
)
from .timefmt import graph_offset

LIFECYCLE_EVENTS = ("reauthorizationRequired", "subscriptionRemoved", "missed")


def _entity(ctx: Context, sub: Subscription) -> dict:
    return {"@odata.context": ctx.context_url("subscriptions/$entity"), **sub.to_graph()}


async def handshake(notifier: Notifier, address: str, timeout: float) -> None:
    """POST `?validationToken=…` and require the token echoed as text/plain, else 400."""
    token = validation_token()
    problem = await notifier.validate(with_token(address, token), token, timeout)
    if problem is not None:
        raise invalid(
            "Subscription validation request failed. Notification endpoint must respond with 200 OK to "
            f"validation request: {problem} ({address})."
        )


async def create(ctx: Context) -> GraphResponse:
    body = ctx.request.json_object()
    mailbox = ctx.state.mailbox(resource_mailbox(body.get("resource")))
    sub = Subscription(
        id=new_guid(),
        resource=str(body["resource"]),
        mailbox_key=mailbox.key,
        change_types=change_types(body.get("changeType")),
        notification_url=url(body.get("notificationUrl"), "notificationUrl"),
        lifecycle_url=url(body["lifecycleNotificationUrl"], "lifecycleNotificationUrl")
        if body.get("lifecycleNotificationUrl")
        else None,
        client_state=client_state(body.get("clientState")),
        expiration=expiration(body.get("expirationDateTime"), ctx.now, ctx.config.max_subscription_minutes),
        application_id=ctx.config.application_id,
        creator_id=ctx.config.application_id,
    )
    _refuse_duplicate(ctx, sub)
    for address in filter(None, (sub.notification_url, sub.lifecycle_url)):
        await handshake(ctx.notifier, address, ctx.config.validation_timeout)
    _refuse_duplicate(ctx, sub)  # one may have been created while we validated
    ctx.state.subscriptions.items[sub.id] = sub
    return GraphResponse(201, _entity(ctx, sub))


def _refuse_duplicate(ctx: Context, sub: Subscription) -> None:
    if ctx.state.subscriptions.duplicate_of(sub, ctx.now) is not None:
        raise GraphError(409, "Conflict", "A subscription for this resource and changeType exists.")


async def list_all(ctx: Context) -> GraphResponse:
    items = [sub.to_graph() for sub in ctx.state.subscriptions.active(ctx.now)]
    return GraphResponse(200, {"@odata.context": ctx.context_url("subscriptions"), "value": items})


async def get_one(ctx: Context) -> GraphResponse:
    return GraphResponse(200, _entity(ctx, ctx.state.subscriptions.get(ctx.params["id"], ctx.now)))


async def update(ctx: Context) -> GraphResponse:
    """Renew (expirationDateTime, same maximum) or move (notificationUrl, validated again)."""
    sub = ctx.state.subscriptions.get(ctx.params["id"], ctx.now)
    body = ctx.request.json_object()
    new_expiry = sub.expiration
    if "expirationDateTime" in body:
        new_expiry = expiration(body["expirationDateTime"], ctx.now, ctx.config.max_subscription_minutes)
    if body.get("notificationUrl") and body["notificationUrl"] != sub.notification_url:
        address = url(body["notificationUrl"], "notificationUrl")
        await handshake(ctx.notifier, address, ctx.config.validation_timeout)
        sub.notification_url = address
    sub.expiration = new_expiry
    return GraphResponse(200, _entity(ctx, sub))


async def delete(ctx: Context) -> GraphResponse:
    sub = ctx.state.subscriptions.get(ctx.params["id"], ctx.now)
    del ctx.state.subscriptions.items[sub.id]
    return GraphResponse(204)


async def reauthorize(ctx: Context) -> GraphResponse:
    ctx.state.subscriptions.get(ctx.params["id"], ctx.now)
    return GraphResponse(204)


def change_notification(sub: Subscription, change: Change, tenant_id: str) -> Outgoing:
    resource = f"Users/{change.mailbox.user_id}/Events/{change.event_id}"
    item = {
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": graph_offset(sub.expiration),
        "changeType": change.change_type,
        "resource": resource,
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Event",
            "@odata.id": resource,
            "@odata.etag": f'W/"{change.change_key}"',
            "id": change.event_id,
        },
        "clientState": sub.client_state,
        "tenantId": tenant_id,
    }
    return Outgoing("change", sub.notification_url, item)


def lifecycle_notification(sub: Subscription, event: str, tenant_id: str) -> Outgoing:
    if event not in LIFECYCLE_EVENTS:
        raise ValueError(f"lifecycle event must be one of {LIFECYCLE_EVENTS}")
    if sub.lifecycle_url is None:
        raise ValueError(f"subscription {sub.id} has no lifecycleNotificationUrl")
    item = {
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": graph_offset(sub.expiration),
        "tenantId": tenant_id,
        "clientState": sub.client_state,
        "lifecycleEvent": event,
    }
    return Outgoing("lifecycle", sub.lifecycle_url, item)
