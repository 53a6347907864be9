"""Executor plugin (being written)."""
