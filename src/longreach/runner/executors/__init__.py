"""Executors as a registry of typed specs (see :mod:`.base`)."""

from longreach.runner.executors.base import EXECUTORS, ExecutorSpec, parse_executor, register_executor

__all__ = ["EXECUTORS", "ExecutorSpec", "parse_executor", "register_executor"]
