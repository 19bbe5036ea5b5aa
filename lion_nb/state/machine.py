"""Deprecated: import these names from ``lion_nb.state``."""

import warnings

from ._machine import (CODE, INSTANCE_TERMINAL, InstanceState, LEGAL, NODE_ORDER, NodeState,
                       NodeStates, StateMachineManager, check_instance_transition)

__all__ = ["CODE", "INSTANCE_TERMINAL", "InstanceState", "LEGAL", "NODE_ORDER", "NodeState",
           "NodeStates", "StateMachineManager", "check_instance_transition"]
warnings.warn("lion_nb.state.machine is deprecated: import from lion_nb.state",
              DeprecationWarning, stacklevel=2)
