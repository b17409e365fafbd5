"""Runs: plan the cells, run them through an executor into the results store, export instances."""

from longreach.runner.plan import Grid, RunConfig, parse_depths, parse_lengths
from longreach.runner.run import RunSummary, run_sweep

__all__ = ["Grid", "RunConfig", "RunSummary", "parse_depths", "parse_lengths", "run_sweep"]
