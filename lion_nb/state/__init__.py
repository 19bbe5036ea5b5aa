"""State: node and instance state machines, storage backends, checkpoints."""

from typing import TYPE_CHECKING, Any

from ._checkpoint import CheckpointInfo, CheckpointManager
from ._file_storage import FileStorage, filename_to_key, key_to_filename
from ._machine import (InstanceState, NodeState, NodeStates, StateMachineManager,
                       check_instance_transition)
from ._records import EncodedRecord, RecordCodec, canonical_json
from ._sqlite_storage import SqliteStorage
from ._storage import MemoryStorage, Storage

if TYPE_CHECKING:
    from ._postgres_storage import PostgresStorage

__all__ = ["CheckpointInfo", "CheckpointManager", "EncodedRecord", "FileStorage",
           "InstanceState", "MemoryStorage", "NodeState", "NodeStates", "PostgresStorage",
           "RecordCodec", "SqliteStorage", "StateMachineManager", "Storage", "canonical_json",
           "check_instance_transition", "filename_to_key", "key_to_filename"]


def __getattr__(name: str) -> Any:
    # psycopg takes ~0.3-0.6 s to import (measured with -X importtime); a notebook on
    # SQLite or files never needs it, so it loads on the first use of PostgresStorage.
    if name == "PostgresStorage":
        from ._postgres_storage import PostgresStorage
        globals()[name] = PostgresStorage
        return PostgresStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # The public names; the modules behind them are private (old paths are shims).
    return sorted(set(__all__) | {n for n in globals() if n.startswith("__")})
