"""Saga tests: definitions, execution, compensation, durability, capabilities, visibility."""
