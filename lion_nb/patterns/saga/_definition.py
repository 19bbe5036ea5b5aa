"""Saga definitions: stages of steps, and the builder that checks them.

A saga is a sequence of *stages*; a stage is one step, or several steps that
run in parallel (``add_parallel``). Every step names the service that does
its work and may carry a compensation. A step without compensation is a
*pivot*: once it succeeded the saga can only go forward.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping

from ... import _display
from ...errors import SagaDefinitionError
from ._step import SagaStep

__all__ = ["SagaDefinition", "SagaDefinitionBuilder"]


class SagaDefinition:
    """A validated saga: stages of steps in order. Built by :class:`SagaDefinitionBuilder`."""

    _display_kind = "saga_definition"

    def __init__(self, id: str, name: str,  # noqa: A002 - the seed's field name
                 stages: Iterable[Iterable[SagaStep]], description: str = "") -> None:
        self.id = id
        self.name = name
        self.description = description
        self.stages: tuple[tuple[SagaStep, ...], ...] = tuple(tuple(s) for s in stages)
        #: Every step in execution order (parallel siblings in declaration order).
        self.steps: tuple[SagaStep, ...] = tuple(s for stage in self.stages for s in stage)
        self._by_id = {s.id: s for s in self.steps}
        self._index = {s.id: i for i, s in enumerate(self.steps)}
        self._stage_of = {s.id: k for k, stage in enumerate(self.stages) for s in stage}
        self._pivots = tuple(s.id for s in self.steps if s.pivot)
        self._digest: str | None = None

    def step(self, step_id: str) -> SagaStep:
        """The step with id ``step_id``; SagaDefinitionError if there is none."""
        try:
            return self._by_id[step_id]
        except KeyError:
            raise SagaDefinitionError(f"saga {self.id!r} has no step {step_id!r}",
                                      saga=self.id, step=step_id) from None

    def index(self, step_id: str) -> int:
        """Position of ``step_id`` in :attr:`steps`."""
        return self._index[step_id]

    def stage_of(self, step_id: str) -> int:
        """Position in :attr:`stages` of the stage holding ``step_id``."""
        return self._stage_of[step_id]

    @property
    def pivots(self) -> tuple[str, ...]:
        """Ids of the steps without compensation."""
        return self._pivots

    def to_dict(self) -> dict[str, Any]:
        """The definition as JSON-able data (what the saga log stores)."""
        return {"id": self.id, "name": self.name, "description": self.description,
                "stages": [[s.to_dict() for s in stage] for stage in self.stages]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SagaDefinition":
        """Rebuild (and re-check) a definition from :meth:`to_dict` output."""
        builder = SagaDefinitionBuilder(data["id"], data["name"])
        builder.with_description(data.get("description", ""))
        for stage in data["stages"]:
            steps = [SagaStep.from_dict(s) for s in stage]
            if len(steps) == 1:
                builder.add_step(steps[0])
            else:
                builder.add_parallel(*steps)
        return builder.build()

    @property
    def digest(self) -> str:
        """A short hash of the definition: instances remember which version they ran."""
        if self._digest is None:
            text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
            self._digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self._digest

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return _display.mimebundle(self, include, exclude)

    def __repr__(self) -> str:
        return (f"<SagaDefinition {self.id!r} ({self.name}) steps="
                f"{[s.id for s in self.steps]}>")


class SagaDefinitionBuilder:
    """Builds a :class:`SagaDefinition`; each call checks its input and returns the builder."""

    def __init__(self, id: str, name: str) -> None:  # noqa: A002 - the seed's field name
        if not isinstance(id, str) or not id.strip() or "/" in id:
            raise SagaDefinitionError(f"saga id must be a non-empty string without '/', "
                                      f"got {id!r}", saga=id, step=None)
        if not isinstance(name, str):
            raise SagaDefinitionError(f"name of saga {id!r} must be a str", saga=id, step=None)
        self._id = id
        self._name = name
        self._description = ""
        self._stages: list[tuple[SagaStep, ...]] = []
        self._ids: set[str] = set()

    def _take(self, step: Any) -> SagaStep:
        if not isinstance(step, SagaStep):
            raise SagaDefinitionError(f"saga {self._id!r} takes SagaStep objects, got "
                                      f"{type(step).__name__}", saga=self._id, step=None)
        if step.id in self._ids:
            raise SagaDefinitionError(f"duplicate step id {step.id!r} in saga {self._id!r}",
                                      saga=self._id, step=step.id)
        return step

    def add_step(self, step: SagaStep) -> "SagaDefinitionBuilder":
        """Append a step that runs after every step added before it."""
        self._ids.add(self._take(step).id)
        self._stages.append((step,))
        return self

    def add_parallel(self, *steps: SagaStep) -> "SagaDefinitionBuilder":
        """Append steps that run at the same time, after every step added before them.

        Pivots (steps without compensation) cannot be parallel: if a sibling
        failed after the pivot succeeded, the saga could go neither way.
        """
        if len(steps) < 2:
            raise SagaDefinitionError(f"add_parallel in saga {self._id!r} needs at least two "
                                      "steps; use add_step for one", saga=self._id, step=None)
        seen: set[str] = set()
        for step in steps:
            self._take(step)
            if step.id in seen:
                raise SagaDefinitionError(f"duplicate step id {step.id!r} in saga {self._id!r}",
                                          saga=self._id, step=step.id)
            if step.pivot:
                raise SagaDefinitionError(
                    f"step {step.id!r} in saga {self._id!r} has no compensation (a pivot) and "
                    "cannot run in parallel; give it a compensation or add it with add_step",
                    saga=self._id, step=step.id)
            seen.add(step.id)
        self._ids |= seen
        self._stages.append(tuple(steps))
        return self

    def with_description(self, text: str) -> "SagaDefinitionBuilder":
        """Attach a free-text description."""
        self._description = str(text)
        return self

    def build(self) -> SagaDefinition:
        """The finished definition; SagaDefinitionError if it has no steps."""
        if not self._stages:
            raise SagaDefinitionError(f"saga {self._id!r} has no steps", saga=self._id,
                                      step=None)
        return SagaDefinition(self._id, self._name, self._stages, self._description)
