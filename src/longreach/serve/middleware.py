"""ASGI middleware: a cap on request bodies (413 before the app reads them) and a count of answers by route and
status code for ``/metrics``."""

from __future__ import annotations

import json
from typing import Any

from longreach.serve.metrics import Metrics

Scope = dict[str, Any]
Message = dict[str, Any]

ROUTES = frozenset(
    {"/v1/models", "/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize", "/health", "/metrics"}
)


class BodyLimit:
    """Reads a request body up to ``limit`` bytes, answers 413 with an error object past it, and hands the body
    on in one piece (later receives still report a client that disconnects)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(send, self.limit)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.limit:
                await _too_large(send, self.limit)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _too_large(send: Any, limit: int) -> None:
    message = f"the request body is larger than the server's limit of {limit} bytes"
    error = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "body_too_large"}}
    data = json.dumps(error).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class CountRequests:
    """Counts each answer as ``longreach_requests_total{route, code}`` (unknown paths as ``other``)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = scope["path"] if scope["path"] in ROUTES else "other"

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.add("longreach_requests_total", route=route, code=str(message["status"]))
            await send(message)

        await self.app(scope, receive, counting_send)
