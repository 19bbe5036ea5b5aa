"""Shared fixtures: an executor started on the test's loop and stopped afterwards."""

from __future__ import annotations

import os

import pytest
from pg_server import pg_dsn, pg_server  # noqa: F401  (throwaway PostgreSQL server)
from widget_frontend import frontend  # noqa: F401  (shared fixture: widgets without a browser)

from lion_nb.engine import ExecutorConfig, WorkflowExecutor
from lion_nb.engine import SchedulerConfig, WorkflowScheduler

# Child processes (scripts, kernels, workers) refuse lion_nb's deprecated paths too, as
# pyproject's filterwarnings makes this one do; -W matches a message by its literal start.
os.environ["PYTHONWARNINGS"] = ",".join(filter(None, (
    os.environ.get("PYTHONWARNINGS"), "error:lion_nb.:DeprecationWarning",
    "error:RetryBackoff is deprecated:DeprecationWarning")))


@pytest.fixture
async def executor():
    """A started WorkflowExecutor with default settings."""
    ex = WorkflowExecutor(WorkflowScheduler(SchedulerConfig()), config=ExecutorConfig())
    await ex.start()
    yield ex
    await ex.stop()
