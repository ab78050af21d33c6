"""How Graph's answers become the app's typed errors (no I/O)."""

from __future__ import annotations

import pytest

from sync.errors import RemoteError, error_for_status
from sync.graph import GRAPH_DEFAULT_RETRY_AFTER_S, GraphFailure, _mapped, sync_state_lost


@pytest.mark.parametrize(("status", "code", "lost"), [
    (410, "syncStateNotFound", True), (400, "SyncStateInvalid", True), (400, "resyncRequired", True),
    (404, "ErrorItemNotFound", False), (400, "BadRequest", False)])
def test_an_expired_delta_token_is_recognised_in_its_several_forms(status: int, code: str, lost: bool) -> None:
    assert sync_state_lost(error_for_status(status)("Graph answered", status=status, code=code)) is lost


@pytest.mark.parametrize(("status", "headers", "wait"), [
    (503, {"Retry-After": "120"}, 120.0),  # an outage that says how long: the put-back waits that
    (503, {}, 0.0),  # says nothing: the worker's own growing wait
    (500, {"retry-after": "7"}, 7.0),
    (429, {}, GRAPH_DEFAULT_RETRY_AFTER_S),  # a 429 always waits (a default when Graph says nothing)
])
def test_what_graph_asks_to_wait_travels_with_the_error(status: int, headers: dict, wait: float) -> None:
    error = _mapped(GraphFailure(status, "code", "message", headers))
    assert isinstance(error, RemoteError) and error.retry_after_s == wait
