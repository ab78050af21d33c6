"""Shared fixtures: one Azurite for the whole run, fresh tables per test."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator

import pytest

from devhost.azurite import Azurite, start_azurite
from sync.settings import StorageSettings
from tests.state_tables import AllTables

_prefixes = itertools.count(1)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Azurite]:
    server = start_azurite()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def table_prefix() -> str:
    """A table-name prefix of its own, so every test starts with empty tables."""
    return f"t{next(_prefixes)}x"


@pytest.fixture
def storage(azurite: Azurite) -> StorageSettings:
    return StorageSettings(connection_string=azurite.connection_string)


@pytest.fixture
async def store(storage: StorageSettings, table_prefix: str) -> AsyncIterator[AllTables]:
    async with AllTables(storage, table_prefix) as state:
        yield state


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The model-based test's size and time (examples run, seconds), for the CI log."""
    import sys

    model = sys.modules.get("tests.e2e.test_model")
    for line in getattr(model, "REPORT", []):
        terminalreporter.write_line(line)
