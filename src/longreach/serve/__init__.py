"""``longreach serve``: any method stack behind an OpenAI-compatible API.

:mod:`.stacks` (one model id per stack, its reach, KV cost, batching), :mod:`.schemas` (request bodies and the
error object), :mod:`.jobs` (one request's state and events), :mod:`.batch` (rows decoding together),
:mod:`.scheduler` (queue, admission by KV bytes, prefill and decode on one thread), :mod:`.metrics`
(Prometheus text), :mod:`.middleware` (body limit, request counts), :mod:`.app` (routes), :mod:`.server`
(configuration, loading, uvicorn).
"""

from longreach.serve.app import Service, build_app
from longreach.serve.server import ServeConfig, load_service, run_server

__all__ = ["ServeConfig", "Service", "build_app", "load_service", "run_server"]
