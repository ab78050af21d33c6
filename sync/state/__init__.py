"""The app's state in Azure Table Storage, one repository per table over one shared helper.

`table.Tables` owns the clients, ETags, size checks and request counts; each repository works
on one table: `RulesTable`, `LinksTable`, `SubscriptionsTable`, `RoomsTable`, `StatusTable`,
`ProcessedEvents`, `BudgetTable` (`Repositories` builds one of each). Callers are given the
repositories they use (`sync.services`).
The records they store are dataclasses (`records`).
"""

from sync.state.budget import BudgetTable
from sync.state.events import ProcessedEvents
from sync.state.links import LinksTable
from sync.state.records import (
    KEPT_RUNS,
    MAX_RUN_ITEMS,
    BudgetRecord,
    FallbackRecord,
    IntegrationStatus,
    Link,
    Progress,
    RoomState,
    Rule,
    RunRecord,
    Subscription,
    time_key,
    utcnow,
)
from sync.state.repositories import Repositories
from sync.state.rooms import RoomsTable
from sync.state.rules import RulesTable
from sync.state.status import StatusTable
from sync.state.subscriptions import SubscriptionsTable
from sync.state.table import TABLES, Tables, check_entity_size

__all__ = [
    "KEPT_RUNS", "MAX_RUN_ITEMS", "TABLES", "BudgetRecord", "BudgetTable", "FallbackRecord", "IntegrationStatus",
    "Link", "LinksTable", "ProcessedEvents", "Progress", "Repositories", "RoomState", "RoomsTable", "Rule",
    "RulesTable", "RunRecord", "StatusTable", "Subscription", "SubscriptionsTable", "Tables", "check_entity_size",
    "time_key", "utcnow",
]
