"""Crash harness helpers: the workflow under test and the child process that runs it."""
