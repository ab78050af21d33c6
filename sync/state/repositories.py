"""One repository of each table over one set of tables, wired as they depend on each other."""

from __future__ import annotations

from dataclasses import dataclass, fields

from sync.state.budget import BudgetTable
from sync.state.events import ProcessedEvents
from sync.state.links import LinksTable
from sync.state.rooms import RoomsTable
from sync.state.rules import RulesTable
from sync.state.status import StatusTable
from sync.state.subscriptions import SubscriptionsTable
from sync.state.table import Tables


@dataclass(frozen=True)
class Repositories:
    rules: RulesTable
    links: LinksTable
    subscriptions: SubscriptionsTable
    rooms: RoomsTable
    status: StatusTable
    processed: ProcessedEvents
    budget_log: BudgetTable

    @classmethod
    def over(cls, tables: Tables) -> Repositories:
        rules = RulesTable(tables)
        return cls(rules, LinksTable(tables, rules), SubscriptionsTable(tables), RoomsTable(tables),
                   StatusTable(tables), ProcessedEvents(tables), BudgetTable(tables))

    def each(self) -> tuple[object, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))
