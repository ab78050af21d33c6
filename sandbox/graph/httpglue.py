"""aiohttp <-> GraphRequest/GraphResponse."""

from __future__ import annotations

import json

from aiohttp import web

from .request import GraphRequest, GraphResponse

JSON_TYPE = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"


async def to_graph_request(request: web.Request) -> GraphRequest:
    """Keep the path encoded (ids carry `%2F`); repeated headers are joined with commas."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    origin = f"{request.scheme}://{request.host}"
    return GraphRequest.build(request.method, request.raw_path, headers, await request.read(), origin)


def to_web_response(response: GraphResponse) -> web.Response:
    if response.body is None:
        return web.Response(status=response.status, headers=response.headers)
    text = json.dumps(response.body)
    headers = {**response.headers, "Content-Type": JSON_TYPE}
    return web.Response(status=response.status, body=text.encode(), headers=headers)
