"""A hung emulator fails the test it hangs in, with where its thread is stuck, and the shared
emulators are replaced so the tests after it run (CI once turned one hang into 170 errors)."""

from __future__ import annotations

import threading

import pytest

import sandbox.anny.emulator
from devhost.stack import Emulators


def test_a_hung_anny_emulator_says_where_it_is_stuck_and_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox.anny.emulator, "CALL_TIMEOUT_S", 0.5)
    emulators = Emulators.start()
    hung = emulators.anny_server
    release = threading.Event()
    try:
        hung.call_soon(release.wait)  # a synchronous wait on the emulator's loop thread
        with pytest.raises(TimeoutError, match=r"(?s)did not run add_resource within 0.5 s.*in wait"):
            emulators.anny.add_resource("Room Alpha")
        replaced = emulators.replace_unresponsive(0.5)
        assert len(replaced) == 1 and replaced[0].startswith("anny emulator unresponsive")
        assert emulators.anny_server is not hung and emulators.graph_server.responsive()
        assert emulators.anny.add_resource("Room Beta")["name"] == "Room Beta"
        assert emulators.replace_unresponsive(0.5) == []
    finally:
        release.set()
        emulators.stop()
    hung._thread.join(10)  # released, the abandoned server closes itself and stops
    assert not hung._thread.is_alive()
    hung.loop.close()


def test_reset_replaces_a_hung_emulator_with_a_warning() -> None:
    emulators = Emulators.start()
    hung = emulators.graph_server
    release = threading.Event()
    try:
        hung.call_soon(release.wait)
        with pytest.warns(RuntimeWarning, match=r"(?s)replaced a hung emulator: graph emulator unresponsive.*in wait"):
            emulators.reset()
        assert emulators.graph_server is not hung
        emulators.graph.add_room("room.alpha@contoso.example", "Room Alpha")  # the new one answers
    finally:
        release.set()
        emulators.stop()
    hung._thread.join(10)
    hung.loop.close()
