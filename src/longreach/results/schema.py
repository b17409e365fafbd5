"""The declared result schema: the axes that place a cell and the metrics measured in it.

Every result is one record: the axes (task, method, backend, length, depth, sample index, question mode, prompt
format), the declared metrics (each with its unit, how cells aggregate, which direction is better and which
confidence interval its mean or median carries), the prediction and gold answers, and a reference to the
provenance the cell ran under. The store's columns and the report's tables both come from this declaration, so
nothing a report should show lives in an untyped blob (``meta`` keeps only the generator's details).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Aggregation = Literal["mean", "median", "max", "geomean"]
Better = Literal["higher", "lower", "none"]
Interval = Literal["wilson", "bootstrap", "none"]


@dataclass(frozen=True)
class Axis:
    """A coordinate of a cell. ``default``: the value most runs have; the cell key leaves it out (so keys of
    stores written before the axis existed stay valid)."""

    name: str
    sql: str
    doc: str
    default: Any = None
    column: str = ""  # the store's column name when it differs from ``name`` (``index`` is an SQL keyword)

    @property
    def sql_column(self) -> str:
        return self.column or self.name


@dataclass(frozen=True)
class Metric:
    """A measured quantity: its unit, how cells aggregate, which direction is better and the interval reported."""

    name: str
    unit: str
    aggregation: Aggregation
    better: Better
    interval: Interval
    doc: str
    sql: str = "REAL"


AXES: tuple[Axis, ...] = (
    Axis("task", "TEXT NOT NULL", "the task spec"),
    Axis("method", "TEXT NOT NULL", "the method stack spec"),
    Axis("context_length", "INTEGER NOT NULL", "tokens of the whole prompt as the backend reads it"),
    Axis("depth", "REAL", "where the (first) needle is, 0 = start of the context; none for tasks without depth"),
    Axis("index", "INTEGER NOT NULL", "the sample's index at its coordinates", column="idx"),
    Axis("mode", "TEXT NOT NULL DEFAULT 'aware'", "question read before or after compression", "aware"),
    Axis("backend", "TEXT NOT NULL DEFAULT 'hf'", "the backend that ran the cell (hf, openai, kvpress)", "hf"),
    Axis("prompt", "TEXT NOT NULL DEFAULT 'raw'", "the prompt format: raw or the chat template", "raw"),
)

METRICS: tuple[Metric, ...] = (
    Metric("score", "", "mean", "higher", "wilson", "the task's score in [0, 1]"),
    Metric("seconds", "s", "median", "lower", "bootstrap", "wall time of the request (prefill + decode)"),
    Metric("prefill_seconds", "s", "median", "lower", "bootstrap", "the prompt pass, after the device finished"),
    Metric("decode_seconds", "s", "median", "lower", "bootstrap", "the single-token steps after the first token"),
    Metric("decode_tok_s", "tok/s", "median", "higher", "bootstrap", "decode steps per second of decoding"),
    Metric("peak_rss_mb", "MiB", "max", "lower", "none", "peak resident memory of the process during the cell"),
    Metric("peak_gpu_mb", "MiB", "max", "lower", "none", "peak memory torch allocated on the GPU (0 on a CPU)"),
    Metric("kv_cache_bytes", "B", "median", "lower", "none", "physical bytes of the KV cache at its largest"),
    Metric("compressed_kv_bytes", "B", "median", "lower", "none", "cache bytes once the compressed part is read"),
    Metric("realized_tokens", "tokens", "median", "none", "none", "prompt tokens actually read", "INTEGER"),
    Metric("reused_tokens", "tokens", "median", "none", "none", "prompt tokens taken from a kept read", "INTEGER"),
    Metric("new_tokens", "tokens", "median", "none", "none", "tokens generated", "INTEGER"),
    Metric("decode_steps", "steps", "median", "none", "none", "single-token forwards while decoding", "INTEGER"),
    Metric("realized_depth", "", "mean", "none", "none", "the needle's depth in tokens, as placed"),
    Metric("random_baseline", "", "mean", "none", "none", "the expected score of the family's stated guess"),
    Metric("nll", "nats/token", "mean", "lower", "bootstrap", "mean next-token loss over the text's tokens"),
    Metric("perplexity", "", "geomean", "lower", "bootstrap", "exp(nll); cells aggregate to exp(mean nll)"),
)

SERIES: dict[str, str] = {  # per-cell curves (name -> what each point is), stored as JSON beside the metrics
    "loss_by_position": "mean next-token loss (nats) of the targets in each bucket of positions, from the start",
}

AXIS = {axis.name: axis for axis in AXES}
METRIC = {metric.name: metric for metric in METRICS}


@dataclass(frozen=True, order=True)
class Cell:
    """The coordinates of one measurement (see :data:`AXES`)."""

    task: str
    method: str
    context_length: int
    depth: float | None
    index: int
    mode: str = "aware"
    backend: str = "hf"
    prompt: str = "raw"

    @property
    def key(self) -> str:
        """``task|method|length|depth|index``, then ``|axis=value`` for the later axes that differ from their
        default (the question mode keeps its older bare ``|agnostic`` form)."""
        depth = "-" if self.depth is None else repr(self.depth)
        key = f"{self.task}|{self.method}|{self.context_length}|{depth}|{self.index}"
        if self.mode != "aware":
            key += f"|{self.mode}"
        for name in ("backend", "prompt"):
            if getattr(self, name) != AXIS[name].default:
                key += f"|{name}={getattr(self, name)}"
        return key

    def axes(self) -> dict[str, Any]:
        return {axis.name: getattr(self, axis.name) for axis in AXES}


@dataclass(frozen=True)
class Record:
    """A finished cell: its coordinates, declared metrics, prediction and answers (status ``error``: the message)."""

    cell: Cell
    status: Literal["ok", "error"]
    metrics: dict[str, float | int | None] = field(default_factory=dict)
    prediction: str | None = None
    answers: list[str] = field(default_factory=list)
    error: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # the generator's details (needle offsets, ...)
    series: dict[str, list[float]] = field(default_factory=dict)  # declared curves (see SERIES)

    def __post_init__(self) -> None:
        unknown = (set(self.metrics) - set(METRIC)) | (set(self.series) - set(SERIES))
        if unknown:
            raise ValueError(f"undeclared metrics or series {sorted(unknown)}; declare them in results.schema")
