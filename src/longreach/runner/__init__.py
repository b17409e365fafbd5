"""Sweeps: plan the cells, run them into a resumable SQLite store, export instances."""

from longreach.runner.plan import SweepConfig, parse_depths, parse_lengths
from longreach.runner.sweep import SweepSummary, run_sweep

__all__ = ["SweepConfig", "SweepSummary", "parse_depths", "parse_lengths", "run_sweep"]
