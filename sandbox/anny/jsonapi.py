"""JSON:API v1.1 mechanics: query parameters, sparse fieldsets, `included`, paging, write bodies."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from yarl import URL

from .errors import AnnyError, bad_parameter
from .render import JsonObject

MEDIA_TYPE = "application/vnd.api+json"
JSONAPI = {"version": "1.1"}
T = TypeVar("T")
Lookup = Callable[[str, str], JsonObject | None]


@dataclass(frozen=True)
class Query:
    include: tuple[str, ...]
    fields: Mapping[str, frozenset[str]]
    filters: Mapping[str, str]
    sort: tuple[str, ...]
    page_number: int
    page_size: int

    def flag(self, name: str, default: bool) -> bool:
        value = self.filters.get(name)
        return default if value is None else value.lower() in ("1", "true", "yes")

    def ids(self, name: str) -> set[str] | None:
        value = self.filters.get(name)
        return None if value is None else {part.strip() for part in value.split(",") if part.strip()}


def _bracketed(params: Mapping[str, str], family: str) -> dict[str, str]:
    prefix = f"{family}["
    return {k[len(prefix) : -1]: v for k, v in params.items() if k.startswith(prefix) and k.endswith("]")}


def _positive(params: Mapping[str, str], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise bad_parameter(name, f"{name} must be a positive integer")
    return int(raw)


def _listed(params: Mapping[str, str], name: str, allowed: Collection[str]) -> tuple[str, ...]:
    items = tuple(part for part in params.get(name, "").split(",") if part)
    unknown = [item for item in items if item.lstrip("-") not in allowed]
    if unknown:
        raise bad_parameter(name, f"unsupported {name}: {', '.join(unknown)}")
    return items


def parse_query(
    params: Mapping[str, str],
    *,
    includes: Collection[str],
    sortable: Collection[str],
    default_size: int,
    max_size: int,
) -> Query:
    return Query(
        include=_listed(params, "include", includes),
        fields={kind: frozenset(v.split(",")) for kind, v in _bracketed(params, "fields").items()},
        filters=_bracketed(params, "filter"),
        sort=_listed(params, "sort", sortable),
        page_number=_positive(params, "page[number]", 1),
        page_size=min(_positive(params, "page[size]", default_size), max_size),
    )


def sort_items(items: list[T], sort: Sequence[str], key: Callable[..., Any]) -> list[T]:
    """Stable multi-key sort, keys applied last to first; `key(item, field=name)` gives a sort value."""
    for field in reversed(sort):
        name = field.lstrip("-")
        items = sorted(items, key=functools.partial(key, field=name), reverse=field.startswith("-"))
    return items


def sparse(obj: JsonObject, fields: Mapping[str, frozenset[str]]) -> JsonObject:
    wanted = fields.get(obj["type"])
    if wanted is None:
        return obj
    trimmed = {**obj, "attributes": {k: v for k, v in obj["attributes"].items() if k in wanted}}
    if "relationships" in obj:
        trimmed["relationships"] = {k: v for k, v in obj["relationships"].items() if k in wanted}
    return trimmed


def _linkage(obj: JsonObject, relationship: str) -> list[JsonObject]:
    data = obj.get("relationships", {}).get(relationship, {}).get("data")
    return [] if data is None else data if isinstance(data, list) else [data]


def collect_included(primary: list[JsonObject], query: Query, lookup: Lookup) -> list[JsonObject]:
    """The compound document's `included`: every object on an include path, once, primary data excluded.

    A relationship left out by a sparse fieldset is not followed (anny: `include=children` needs
    `children` in `fields[resources]` when a fieldset is given).
    """
    seen = {(o["type"], o["id"]) for o in primary}
    included: list[JsonObject] = []
    for path in query.include:
        level = primary
        for relationship in path.split("."):
            targets = [lookup(i["type"], i["id"]) for o in level for i in _linkage(o, relationship)]
            level = [sparse(t, query.fields) for t in targets if t is not None]
            for target in level:
                if (target["type"], target["id"]) not in seen:
                    seen.add((target["type"], target["id"]))
                    included.append(target)
    return included


def document(data: JsonObject | list[JsonObject], **members: Any) -> JsonObject:
    return {"jsonapi": JSONAPI, "data": data, **members}


def compound(data: JsonObject | list[JsonObject], query: Query, lookup: Lookup, **members: Any) -> JsonObject:
    primary = data if isinstance(data, list) else [data]
    if query.include:
        members["included"] = collect_included(primary, query, lookup)
    return document(data, **members)


def single_document(obj: JsonObject, query: Query, lookup: Lookup) -> JsonObject:
    return compound(sparse(obj, query.fields), query, lookup)


def page_document(
    items: Sequence[T], render: Callable[[T], JsonObject], query: Query, url: URL, lookup: Lookup,
    metadata: str = "links and meta",
) -> JsonObject:
    """One page of a collection with `meta` page counters and `links` (next/prev only where they
    exist), or only one of the two (`metadata`: "links" or "meta")."""
    size, number, total = query.page_size, query.page_number, len(items)
    last = max(1, -(-total // size))
    window = items[(number - 1) * size : number * size]

    def page_link(n: int) -> str:
        return str(url.update_query({"page[number]": str(n), "page[size]": str(size)}))

    links = {"self": page_link(number), "first": page_link(1), "last": page_link(last)}
    if number < last:
        links["next"] = page_link(number + 1)
    if 1 < number <= last + 1:
        links["prev"] = page_link(number - 1)
    meta = {"current_page": number, "last_page": last, "per_page": size, "total": total}
    data = [sparse(render(item), query.fields) for item in window]
    if metadata == "links":
        return compound(data, query, lookup, links=links)
    if metadata == "meta":
        return compound(data, query, lookup, meta=meta)
    return compound(data, query, lookup, meta=meta, links=links)


def write_data(raw: bytes, kind: str, ident: str | None = None) -> JsonObject:
    """The primary data of a write body; checks it is a `kind` object (with `ident`, for PATCH)."""
    try:
        body = json.loads(raw or b"null")
    except ValueError as error:
        raise AnnyError(400, "Bad Request", f"body is not valid JSON: {error}") from error
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, dict):
        raise AnnyError(400, "Bad Request", "body must be a JSON:API document with a `data` object")
    if data.get("type") != kind:
        raise AnnyError(409, "Conflict", f"data.type must be {kind!r}", pointer="/data/type")
    if ident is not None and str(data.get("id", ident)) != ident:
        raise AnnyError(409, "Conflict", "data.id does not match the URL", pointer="/data/id")
    if not isinstance(data.get("attributes", {}), dict):
        raise AnnyError(400, "Bad Request", "data.attributes must be an object", pointer="/data/attributes")
    return data
