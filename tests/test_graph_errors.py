"""How Graph's answers become the app's typed errors (no I/O)."""

from __future__ import annotations

import pytest

from sync.errors import error_for_status
from sync.graph import sync_state_lost


@pytest.mark.parametrize(("status", "code", "lost"), [
    (410, "syncStateNotFound", True), (400, "SyncStateInvalid", True), (400, "resyncRequired", True),
    (404, "ErrorItemNotFound", False), (400, "BadRequest", False)])
def test_an_expired_delta_token_is_recognised_in_its_several_forms(status: int, code: str, lost: bool) -> None:
    assert sync_state_lost(error_for_status(status)("Graph answered", status=status, code=code)) is lost
