"""Route templates: matching of decoded path segments, and the key counters and faults use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import GraphError, bad_request
from .request import GraphRequest, GraphResponse

if TYPE_CHECKING:
    from .context import Context

Handler = Callable[["Context"], Awaitable[GraphResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    template: str  # canonical template, e.g. "/users/{mailbox}/events/{id}"
    handler: Handler
    aliases: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def scoped(self) -> bool:
        """Routes under one mailbox count against that mailbox's limits."""
        return "{mailbox}" in self.template

    def match(self, segments: list[str]) -> dict[str, str] | None:
        for template in (self.template, *self.aliases):
            params = _match(template.strip("/").split("/"), segments)
            if params is not None:
                return params
        return None


def _match(parts: list[str], segments: list[str]) -> dict[str, str] | None:
    if len(parts) != len(segments):
        return None
    params: dict[str, str] = {}
    for part, segment in zip(parts, segments, strict=True):
        if part.startswith("{"):
            params[part[1:-1]] = segment
        elif part.lower() != segment.lower():
            return None
    return params


class Router:
    def __init__(self, routes: list[Route]) -> None:
        self.routes = routes

    def find(self, request: GraphRequest) -> tuple[Route, dict[str, str]]:
        """The route and path parameters for a request; 400 for an unknown path, 405 for a wrong method."""
        matches = [(route, params) for route in self.routes if (params := route.match(request.segments)) is not None]
        for route, params in matches:
            if route.method == request.method:
                return route, params
        if matches:
            raise GraphError(405, "Request_BadRequest", f"The HTTP method '{request.method}' is not allowed here.")
        segment = request.segments[-1] if request.segments else ""
        raise bad_request(f"Resource not found for the segment '{segment}'.")
