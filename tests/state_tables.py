"""Tests only: every repository of one set of tables behind one object, so a test can set up and
inspect any table (the app's code is given the one repository it uses: `sync.services`)."""

from __future__ import annotations

from typing import Any

from sync.settings import StorageSettings
from sync.state import Repositories, Tables


class AllTables:
    def __init__(self, storage: StorageSettings, prefix: str = "annysync", *, retry_total: int | None = None) -> None:
        self.tables = Tables(storage, prefix, retry_total=retry_total)
        made = Repositories.over(self.tables)
        self.rules, self.links = made.rules, made.links
        self._repositories = made.each()

    async def __aenter__(self) -> AllTables:
        await self.tables.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.tables.close()

    async def open(self, create_tables: bool = True) -> None:
        await self.tables.open(create_tables)

    async def close(self) -> None:
        await self.tables.close()

    @property
    def operations(self) -> int:
        return self.tables.operations

    async def clear_all(self) -> int:
        self.rules.forget()
        return await self.tables.clear_all()

    def __getattr__(self, name: str) -> Any:
        for repository in self._repositories:
            if hasattr(repository, name):
                return getattr(repository, name)
        raise AttributeError(name)
