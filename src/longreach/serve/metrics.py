"""The server's counters and gauges, rendered as Prometheus text (``GET /metrics``)."""

from __future__ import annotations

import threading
from collections import defaultdict

_HELP = {
    "longreach_requests_total": ("counter", "HTTP requests answered, by route and status code"),
    "longreach_prompt_tokens_total": ("counter", "prompt tokens prefilled"),
    "longreach_generation_tokens_total": ("counter", "tokens generated"),
    "longreach_prefill_seconds_total": ("counter", "seconds spent in prefills"),
    "longreach_decode_seconds_total": ("counter", "seconds spent in decode steps"),
    "longreach_decode_steps_total": ("counter", "decode forwards (one batched step counts once)"),
    "longreach_queue_depth": ("gauge", "requests waiting for admission"),
    "longreach_running_requests": ("gauge", "requests admitted and not finished"),
    "longreach_kv_bytes_in_use": ("gauge", "physical bytes of the KV caches of running requests"),
    "longreach_kv_bytes_reserved": ("gauge", "KV bytes admission holds for running requests"),
    "longreach_kv_budget_bytes": ("gauge", "the KV budget admission keeps within"),
}


class Metrics:
    """Thread-safe named values with optional labels."""

    def __init__(self) -> None:
        self._values: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self._lock = threading.Lock()
        for name, (kind, _) in _HELP.items():
            if kind == "gauge":
                self._values[name][()] = 0.0

    def add(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[name][key] = self._values[name].get(key, 0.0) + amount

    def set(self, name: str, value: float, **labels: str) -> None:
        with self._lock:
            self._values[name][tuple(sorted(labels.items()))] = value

    def get(self, name: str, **labels: str) -> float:
        with self._lock:
            return self._values[name].get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> str:
        """Prometheus text exposition format 0.0.4."""
        lines = []
        with self._lock:
            for name, (kind, help_text) in _HELP.items():
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
                for labels, value in sorted(self._values.get(name, {}).items()):
                    tags = ",".join(f'{k}="{v}"' for k, v in labels) if labels else ""
                    lines.append(f"{name}{{{tags}}} {value:.17g}" if tags else f"{name} {value:.17g}")
        return "\n".join(lines) + "\n"
