"""State: node and instance state machines, storage backends, checkpoints."""

from .machine import InstanceState, NodeState, StateMachineManager
from .storage import MemoryStorage, Storage

__all__ = ["InstanceState", "NodeState", "StateMachineManager", "MemoryStorage", "Storage"]
