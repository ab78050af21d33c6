"""Transport-neutral requests and responses (HTTP and `$batch` items share one pipeline)."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import GraphError, bad_request

VERSIONS = ("v1.0", "beta")
_PREFER = re.compile(r'([\w.-]+)\s*=\s*(?:"([^"]*)"|([^,;\s]*))')


def split_path(raw_path: str) -> list[str]:
    """Percent-decoded segments of a still-encoded path: `//` and the version prefix vanish,
    `delta()` becomes `delta`; an encoded `/` (`%2F`) inside an id stays inside its segment."""
    segments = [urllib.parse.unquote(part) for part in raw_path.split("?", 1)[0].split("/") if part]
    if segments and segments[0].lower() in VERSIONS:
        segments = segments[1:]
    return [s[:-2] if s.endswith("()") else s for s in segments]


@dataclass
class GraphRequest:
    method: str
    segments: list[str]
    query: dict[str, str]  # keys lower-cased
    headers: dict[str, str]  # keys lower-cased
    body: bytes = b""
    origin: str = "http://localhost"
    params: dict[str, str] = field(default_factory=dict)  # filled by routing

    @classmethod
    def build(cls, method: str, raw_url: str, headers: dict[str, str], body: bytes, origin: str) -> GraphRequest:
        path, _, query = raw_url.partition("?")
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        return cls(
            method=method.upper(),
            segments=split_path(path),
            query={key.lower(): value for key, value in pairs},
            headers={key.lower(): value for key, value in headers.items()},
            body=body,
            origin=origin,
        )

    def json(self) -> Any:
        if not self.body:
            raise bad_request("Empty Payload. JSON content expected.", "RequestBodyRead")
        try:
            return json.loads(self.body)
        except ValueError:
            raise bad_request("Invalid JSON. The request body could not be parsed.", "RequestBodyRead") from None

    def json_object(self) -> dict:
        body = self.json()
        if not isinstance(body, dict):
            raise bad_request("Invalid JSON. A JSON object was expected.", "RequestBodyRead")
        return body

    def prefer(self) -> dict[str, str]:
        """`Prefer` preferences (several may share one header, comma separated)."""
        text = self.headers.get("prefer", "")
        found = _PREFER.finditer(text)
        return {m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3) for m in found}

    @property
    def timezone(self) -> str | None:
        return self.prefer().get("outlook.timezone")

    def int_query(self, name: str) -> int | None:
        value = self.query.get(name)
        if value is None:
            return None
        if not value.isdigit():
            raise bad_request(f"Invalid value '{value}' for query option {name}.")
        return int(value)

    def page_size(self, default: int) -> int:
        size = self.int_query("$top") or _maybe_int(self.prefer().get("odata.maxpagesize")) or default
        return max(1, size)

    def link(self, query: dict[str, str]) -> str:
        """An absolute link to this resource with another query (for nextLink/deltaLink)."""
        path = "/".join(urllib.parse.quote(segment, safe="@:()'") for segment in self.segments)
        encoded = urllib.parse.urlencode(query, safe="$:'(),", quote_via=urllib.parse.quote)
        return f"{self.origin}/v1.0/{path}" + (f"?{encoded}" if encoded else "")

    def bearer(self) -> str:
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""


def _maybe_int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


@dataclass
class GraphResponse:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_error(cls, error: GraphError) -> GraphResponse:
        return cls(error.status, error.body(), dict(error.headers))


def page(request: GraphRequest, items: list[Any], default_size: int, context: str,
         render: Callable[[Any], Any] | None = None) -> GraphResponse:
    """A `{"value": [...]}` page with `@odata.nextLink` by `$skip`, like Graph's list answers.
    `render`: applied to the page's items only (a long list's pages cost a page each, not the list)."""
    size = request.page_size(default_size)
    skip = request.int_query("$skip") or 0
    shown = items[skip : skip + size]
    body: dict[str, Any] = {"@odata.context": context, "value": [render(i) for i in shown] if render else shown}
    if skip + size < len(items):
        query = {k: v for k, v in request.query.items() if k != "$skip"} | {"$skip": str(skip + size)}
        body["@odata.nextLink"] = request.link(query)
    return GraphResponse(200, body)
