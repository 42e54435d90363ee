"""Dagster code location of engage. The Definitions live in orchestration.definitions."""
