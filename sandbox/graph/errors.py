"""Graph's error shape: `{"error": {"code", "message", "innerError"}}` raised as one exception."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime


class GraphError(Exception):
    """An error answer: HTTP status, Graph error code, message and extra headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> dict:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    request_id = str(uuid.uuid4())
    inner = {"date": now, "request-id": request_id, "client-request-id": request_id}
    return {"error": {"code": code, "message": message, "innerError": inner}}


def bad_request(message: str, code: str = "BadRequest") -> GraphError:
    return GraphError(400, code, message)


def invalid_request(message: str) -> GraphError:
    return GraphError(400, "ErrorInvalidRequest", message)


def item_not_found(message: str = "The specified object was not found in the store.") -> GraphError:
    return GraphError(404, "ErrorItemNotFound", message)


def throttled(code: str, message: str, retry_after: int | None) -> GraphError:
    headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
    return GraphError(429, code, message, headers)
