"""The one error type of the emulator and its JSON:API rendering."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class AnnyError(Exception):
    """A request (HTTP or in-process) that anny refuses. Rendered as a JSON:API `errors` document."""

    status: int
    title: str
    detail: str = ""
    pointer: str | None = None
    parameter: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.title}: {self.detail}"

    def document(self) -> dict[str, Any]:
        error: dict[str, Any] = {"status": str(self.status), "title": self.title}
        if self.detail:
            error["detail"] = self.detail
        if self.pointer is not None:
            error["source"] = {"pointer": self.pointer}
        elif self.parameter is not None:
            error["source"] = {"parameter": self.parameter}
        return {"jsonapi": {"version": "1.1"}, "errors": [error]}


def not_found(kind: str, ident: str) -> AnnyError:
    return AnnyError(404, "Not Found", f"{kind} {ident!r} does not exist")


def invalid(detail: str, pointer: str) -> AnnyError:
    return AnnyError(422, "Unprocessable Entity", detail, pointer=pointer)


def bad_parameter(parameter: str, detail: str) -> AnnyError:
    return AnnyError(400, "Bad Request", detail, parameter=parameter)
