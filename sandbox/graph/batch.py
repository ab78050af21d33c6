"""`POST /$batch`: up to 20 requests, run through the same pipeline as HTTP requests.

Without `dependsOn` the requests run concurrently (each can be throttled on its own);
with it they run in order and a request whose dependency failed answers 424. Only the
documented `dependsOn` key counts (the Python SDK writes `depends_on`, which Graph ignores).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Awaitable, Callable

from .context import Context
from .errors import GraphError, bad_request
from .request import GraphRequest, GraphResponse

MAX_REQUESTS = 20
Dispatch = Callable[[GraphRequest], Awaitable[GraphResponse]]


def _body_bytes(value: object) -> bytes:
    if value is None:
        return b""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return value.encode()
    return json.dumps(value).encode()


def _sub_request(outer: GraphRequest, item: dict) -> GraphRequest:
    headers = {str(k): str(v) for k, v in (item.get("headers") or {}).items()}
    headers.setdefault("Authorization", outer.headers.get("authorization", ""))
    address, body = "/" + str(item["url"]).lstrip("/"), _body_bytes(item.get("body"))
    return GraphRequest.build(str(item["method"]), address, headers, body, outer.origin)


def _check(items: object) -> list[dict]:
    if not isinstance(items, list) or not items:
        raise bad_request("The batch request must contain a non-empty 'requests' array.")
    if len(items) > MAX_REQUESTS:
        raise bad_request(f"Number of requests in a batch exceeds the limit of {MAX_REQUESTS}.")
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict) or not all(item.get(k) for k in ("id", "method", "url")):
            raise bad_request("Each batch request needs an id, a method and a url.")
        if str(item["id"]) in seen:
            raise bad_request(f"Batch request id '{item['id']}' is used more than once.")
        for dependency in item.get("dependsOn") or []:
            if str(dependency) not in seen:
                raise bad_request(f"Invalid dependency for request Id '{item['id']}': '{dependency}'.")
        seen.add(str(item["id"]))
    return items


def _answer(item_id: str, response: GraphResponse) -> dict:
    answer: dict = {"id": item_id, "status": response.status, "headers": dict(response.headers)}
    if response.body is not None:
        answer["headers"].setdefault("Content-Type", "application/json")
        answer["body"] = response.body
    return answer


async def run(ctx: Context, dispatch: Dispatch) -> GraphResponse:
    items = _check(ctx.request.json_object().get("requests"))
    if not any(item.get("dependsOn") for item in items):
        results = await asyncio.gather(*(dispatch(_sub_request(ctx.request, item)) for item in items))
        answers = [_answer(str(item["id"]), result) for item, result in zip(items, results, strict=True)]
        return GraphResponse(200, {"responses": answers})
    statuses: dict[str, int] = {}
    answers = []
    for item in items:
        failed = [d for d in item.get("dependsOn") or [] if statuses.get(str(d), 0) >= 400]
        if failed:
            error = GraphError(424, "FailedDependency", f"Request depends on failed request(s) {failed}.")
            response = GraphResponse.of_error(error)
        else:
            response = await dispatch(_sub_request(ctx.request, item))
        statuses[str(item["id"])] = response.status
        answers.append(_answer(str(item["id"]), response))
    return GraphResponse(200, {"responses": answers})
