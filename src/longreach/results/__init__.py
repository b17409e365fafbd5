"""Results: the declared schema (axes, metrics), per-cell provenance and the SQLite store. Written by the runner,
read by the report and studies; imports neither."""

from longreach.results.schema import AXES, AXIS, METRIC, METRICS, SERIES, Axis, Cell, Metric, Record
from longreach.results.store import STORE_NAME, ResultsStore, cell_of

__all__ = [
    "AXES",
    "AXIS",
    "METRIC",
    "METRICS",
    "SERIES",
    "STORE_NAME",
    "Axis",
    "Cell",
    "Metric",
    "Record",
    "ResultsStore",
    "cell_of",
]
