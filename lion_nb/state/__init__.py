"""State: node and instance state machines, storage backends, checkpoints."""

from ._postgres_storage import PostgresStorage
from .checkpoint import CheckpointInfo, CheckpointManager
from .file_storage import FileStorage
from .machine import InstanceState, NodeState, StateMachineManager
from .records import RecordCodec
from .sqlite_storage import SqliteStorage
from .storage import MemoryStorage, Storage

__all__ = ["CheckpointInfo", "CheckpointManager", "FileStorage", "InstanceState",
           "MemoryStorage", "NodeState", "PostgresStorage", "RecordCodec", "SqliteStorage",
           "StateMachineManager", "Storage"]
