"""Validate payloads against anny's JSON Schemas (published with anny's n8n node under the MIT
licence; a copy is kept in `schemas/` beside this module, with that licence).

The schemas `$ref` each other by relative file name (`./resource.json`), so all of them are
loaded into one `referencing.Registry`. Needs the dev packages `jsonschema` and `referencing`.

webhook.json declares `data` as `oneOf` [booking, customer, …, any object]: the last branch
matches every object, so a valid booking matches two branches and `oneOf` can never hold for
it. `validate_envelope` therefore checks the envelope with `data` held to the schema its event
names (booking.json for `bookings.*`), which is what the `oneOf` means.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import referencing
from referencing.jsonschema import DRAFT202012

SCHEMA_OF_TYPE = {"bookings": "booking.json", "resources": "resource.json", "services": "service.json",
                  "customers": "customer.json"}  # fmt: skip
SCHEMA_OF_EVENT = {"bookings": "booking.json", "customers": "customer.json", "orders": "order.json",
                   "invoices": "invoice.json"}  # fmt: skip


SCHEMA_DIR_VARIABLE = "ANNY_SCHEMA_DIR"


def default_schema_dir() -> Path:
    """Where anny's schemas are: `ANNY_SCHEMA_DIR` if set (a newer copy), else the copy kept here."""
    if configured := os.environ.get(SCHEMA_DIR_VARIABLE):
        return Path(configured)
    return Path(__file__).resolve().parent / "schemas"


def _format_checker() -> jsonschema.FormatChecker:
    """The default checker, plus `date-time` (ISO 8601 with an offset), whose checker needs a package."""
    checker = jsonschema.FormatChecker()

    @checker.checks("date-time", raises=ValueError)
    def is_datetime(value: object) -> bool:
        return not isinstance(value, str) or datetime.fromisoformat(value).tzinfo is not None

    return checker


def flatten_resource_object(obj: dict[str, Any]) -> dict[str, Any]:
    """A JSON:API resource object in the flat shape the schemas describe."""
    flat = {"id": obj["id"], "type": obj["type"], **obj.get("attributes", {})}
    return flat | ({"meta": obj["meta"]} if "meta" in obj else {})


class AnnySchemas:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_schema_dir()
        self.schemas = {p.name: json.loads(p.read_text()) for p in sorted(self.directory.glob("*.json"))}
        resources = [
            (uri, referencing.Resource.from_contents(schema, default_specification=DRAFT202012))
            for name, schema in self.schemas.items()
            for uri in (name, f"./{name}")
        ]
        self.registry: referencing.Registry[Any] = referencing.Registry().with_resources(resources)
        self.format_checker = _format_checker()

    def validate(self, schema: str | dict[str, Any], instance: Any) -> None:
        """Raise `jsonschema.ValidationError` unless `instance` fits (`schema`: a file name or a schema)."""
        contents = self.schemas[schema] if isinstance(schema, str) else schema
        validator = jsonschema.Draft202012Validator(
            contents, registry=self.registry, format_checker=self.format_checker
        )
        validator.validate(instance)

    def validate_object(self, obj: dict[str, Any]) -> None:
        """A JSON:API resource object (bookings, resources, services, customers)."""
        self.validate(SCHEMA_OF_TYPE[obj["type"]], flatten_resource_object(obj))

    def validate_document(self, document: dict[str, Any]) -> int:
        """Every primary and included object of a JSON:API document; returns how many were checked."""
        data = document["data"]
        objects = [*(data if isinstance(data, list) else [data]), *document.get("included", [])]
        for obj in objects:
            self.validate_object(obj)
        return len(objects)

    def validate_envelope(self, envelope: dict[str, Any]) -> None:
        """A webhook body: webhook.json, with `data` held to the schema of the event's object."""
        family = str(envelope.get("event", "")).split(".")[0]
        data_schema = {"$ref": f"./{SCHEMA_OF_EVENT[family]}"} if family in SCHEMA_OF_EVENT else {"type": "object"}
        webhook = self.schemas["webhook.json"]
        schema = webhook | {"properties": webhook["properties"] | {"data": data_schema}}
        self.validate(schema, envelope)
