"""Deprecated: import these names from ``lion_nb.engine``."""

import warnings

from ._durable import (HEADER_PREFIX, StoredInstance, definition_key, from_ranges, header_key,
                       lease_key, new_header, new_owner_id, node_key, node_prefix, node_record,
                       owner_is_dead, read_instance, start_record, started_nodes, to_ranges,
                       verify_sequence)

__all__ = ["HEADER_PREFIX", "StoredInstance", "definition_key", "from_ranges", "header_key",
           "lease_key", "new_header", "new_owner_id", "node_key", "node_prefix", "node_record",
           "owner_is_dead", "read_instance", "start_record", "started_nodes", "to_ranges",
           "verify_sequence"]
warnings.warn("lion_nb.engine.durable is deprecated: import from lion_nb.engine",
              DeprecationWarning, stacklevel=2)
