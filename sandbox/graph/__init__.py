"""A Microsoft Graph emulator for the sync's tests, benchmarks and local runs.

See docs/emulators.md ("Graph emulator") for the routes, the control API and the seed format.
"""

from .emulator import GraphEmulator, running_graph_emulator, start_graph_emulator
from .limits import Fault
from .person import recurrence
from .state import GraphConfig

__all__ = ["Fault", "GraphConfig", "GraphEmulator", "recurrence", "running_graph_emulator", "start_graph_emulator"]
