"""The anny wire shapes name only fields anny's own JSON Schemas define.

`sync/anny.py` reads anny's answers through the shapes of `sync/anny_wire.py` (the type checker
types each value read through them, and indexing a key a shape lacks is an error); this test
holds the shapes' keys to anny's schemas, so the shapes cannot promise a misspelt or invented field.
"""

from __future__ import annotations

import json
import typing

import pytest

from sandbox.anny.schemas import default_schema_dir
from sync import anny_wire

# Keys of the shapes that are not attributes in anny's schemas, and why.
NOT_IN_SCHEMAS = {
    "relationships": "JSON:API structure beside the attributes, not an attribute",
    "title": "a blocker's title: written and read back by the blocker requests, absent from booking.json",
}
SHAPES = [
    (anny_wire.BookingFields, "booking.json"),
    (anny_wire.ResourceFields, "resource.json"),
    (anny_wire.ServiceFields, "service.json"),
    (anny_wire.WebhookDelivery, "webhook.json"),
]


@pytest.fixture(scope="module")
def schema_properties() -> dict[str, set[str]]:
    directory = default_schema_dir()
    return {path.name: set(json.loads(path.read_text()).get("properties", {})) for path in directory.glob("*.json")}


@pytest.mark.parametrize(("shape", "schema"), SHAPES, ids=[s.__name__ for s, _ in SHAPES])
def test_every_field_the_client_reads_is_in_annys_schema(shape: type, schema: str,
                                                         schema_properties: dict[str, set[str]]) -> None:
    unknown = set(typing.get_type_hints(shape)) - schema_properties[schema] - set(NOT_IN_SCHEMAS)
    assert not unknown, f"{shape.__name__} names fields {sorted(unknown)} that anny's {schema} does not define"


def test_a_misspelt_field_is_caught(schema_properties: dict[str, set[str]]) -> None:
    """The check itself: a shape with a field anny does not send fails it."""

    class Misspelt(anny_wire.BookingFields, total=False):
        strat_date: str

    unknown = set(typing.get_type_hints(Misspelt)) - schema_properties["booking.json"] - set(NOT_IN_SCHEMAS)
    assert unknown == {"strat_date"}
