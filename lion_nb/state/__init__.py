"""State: node and instance state machines, storage backends, checkpoints."""

from typing import TYPE_CHECKING, Any

from .checkpoint import CheckpointInfo, CheckpointManager
from .file_storage import FileStorage
from .machine import InstanceState, NodeState, StateMachineManager
from .records import RecordCodec
from .sqlite_storage import SqliteStorage
from .storage import MemoryStorage, Storage

if TYPE_CHECKING:
    from ._postgres_storage import PostgresStorage

__all__ = ["CheckpointInfo", "CheckpointManager", "FileStorage", "InstanceState",
           "MemoryStorage", "NodeState", "PostgresStorage", "RecordCodec", "SqliteStorage",
           "StateMachineManager", "Storage"]


def __getattr__(name: str) -> Any:
    # psycopg takes ~0.3-0.6 s to import (measured with -X importtime); a notebook on
    # SQLite or files never needs it, so it loads on the first use of PostgresStorage.
    if name == "PostgresStorage":
        from ._postgres_storage import PostgresStorage
        globals()[name] = PostgresStorage
        return PostgresStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
