"""The few OData query options the product uses on events: $expand, $filter, $select."""

from __future__ import annotations

import re
from collections.abc import Callable

from .errors import bad_request
from .model import Instance

_LITERAL = r"'((?:[^']|'')*)'"
_EXPAND = re.compile(r"^\s*singleValueExtendedProperties\s*(?:\(\s*\$filter\s*=\s*(.*)\)\s*)?$", re.IGNORECASE)
_ID_EQ = re.compile(r"\bid\s+eq\s+" + _LITERAL, re.IGNORECASE)
_ANY = re.compile(
    r"^\s*singleValueExtendedProperties/any\(\s*(\w+)\s*:\s*(.*)\)\s*$",
    re.IGNORECASE | re.DOTALL,
)
_SIMPLE = re.compile(r"^\s*(\w+)\s+eq\s+(?:" + _LITERAL + r"|(true|false))\s*$", re.IGNORECASE)

Predicate = Callable[[Instance], bool]


def _unquote(text: str) -> str:
    return text.replace("''", "'")


def expand(value: str | None) -> list[str] | None:
    """Extended property ids asked for by `$expand`; None when not expanded; [] for all."""
    if value is None:
        return None
    match = _EXPAND.match(value)
    if match is None:
        raise bad_request(f"Parsing OData Select and Expand failed: Could not find a property named '{value}'.")
    return [_unquote(found) for found in _ID_EQ.findall(match.group(1) or "")]


def where(value: str | None) -> Predicate:
    """A predicate for `$filter`: an extended-property `any` clause or `<property> eq <literal>`."""
    if not value:
        return lambda _inst: True
    match = _ANY.match(value)
    if match:
        return _extended_match(match.group(1), match.group(2))
    simple = _SIMPLE.match(value)
    if simple:
        name, literal, flag = simple.groups()
        wanted: object = _unquote(literal) if literal is not None else flag.lower() == "true"
        return lambda inst: inst.props.get(name) == wanted
    raise bad_request(f"Invalid filter clause: the query '{value}' is not supported.")


def _extended_match(var: str, clause: str) -> Predicate:
    found = re.fullmatch(
        rf"\s*{var}/id\s+eq\s+{_LITERAL}\s+and\s+{var}/value\s+eq\s+{_LITERAL}\s*",
        clause,
        re.IGNORECASE,
    )
    if found is None:
        raise bad_request(f"Invalid filter clause: '{clause}'.")
    prop_id, prop_value = (_unquote(part) for part in found.groups())

    def matches(inst: Instance) -> bool:
        stored = inst.extended.get(prop_id.lower())
        return stored is not None and stored[1] == prop_value

    return matches


def select(data: dict, value: str | None) -> dict:
    """Keep the `$select`ed properties (plus id and etag, as Graph does)."""
    if not value:
        return data
    keep = {name.strip() for name in value.split(",")} | {"id", "@odata.etag", "singleValueExtendedProperties"}
    return {name: item for name, item in data.items() if name in keep}
