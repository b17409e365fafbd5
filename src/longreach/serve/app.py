"""The HTTP API (FastAPI): OpenAI's ``/v1/models``, ``/v1/completions`` and ``/v1/chat/completions`` (with
server-sent events), vLLM's ``/tokenize`` and ``/detokenize``, ``/health`` and Prometheus ``/metrics``.

Every refusal is a 4xx with an OpenAI-style error object naming the field; a request is checked whole (model,
prompt, reach, KV budget) before it is queued, so a streamed answer starts only once it will run.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException

from longreach import prompts, tokens
from longreach.engine import Engine
from longreach.errors import LongreachError
from longreach.serve.jobs import Delta, Failed, Finished, Job, Sampling
from longreach.serve.metrics import Metrics
from longreach.serve.middleware import BodyLimit, CountRequests
from longreach.serve.scheduler import Scheduler
from longreach.serve.schemas import (
    FIELDS,
    ApiError,
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    Sampled,
    TokenizeRequest,
)
from longreach.serve.stacks import ServedStack

POLL_SECONDS = 0.25  # how often a waiting answer checks that its client is still there


@dataclass
class Service:
    """What the routes serve: the engine, the stacks by model id, the scheduler and the settings of the API."""

    engine: Engine
    model: str  # the model's name; /tokenize and /detokenize accept it whatever stacks are served
    stacks: dict[str, ServedStack]
    scheduler: Scheduler
    metrics: Metrics
    chat: Literal["template", "raw"]
    api_key: str
    timeout: float
    max_body_bytes: int
    seed: int

    def stack_for(self, model: str | None) -> ServedStack:
        """The stack a request's ``model`` names (the first stack when it names none)."""
        if model is None:
            return next(iter(self.stacks.values()))
        if model not in self.stacks:
            raise ApiError(
                404,
                f"unknown model {model!r}; this server has: {', '.join(self.stacks)}",
                param="model",
                code="model_not_found",
            )
        return self.stacks[model]

    def job(self, served: ServedStack, prompt: str, ids: list[int], sampling: Sampling) -> Job:
        """A checked, queued job: refused (400) when the prompt is empty, beyond the stack's reach or when the
        KV budget could never hold it; 429 when the queue is full."""
        if not ids:
            raise ApiError(400, "the prompt is empty", param="prompt")
        if len(ids) > served.reach:
            raise ApiError(
                400,
                f"the prompt has {len(ids)} tokens; {served.model_id} reads at most {served.reach}",
                param="prompt",
                code="context_length_exceeded",
            )
        fit = self.scheduler.tokens_fit(served.kv_bytes_per_token)
        if len(ids) + sampling.max_tokens > fit:
            raise ApiError(
                400,
                f"prompt ({len(ids)} tokens) + max_tokens ({sampling.max_tokens}) can never fit: under "
                f"{served.model_id} the KV budget holds {fit} tokens per request",
                param="max_tokens",
                code="context_length_exceeded",
            )
        loop = asyncio.get_running_loop()
        job = Job(served, prompt, ids, sampling, loop, time.monotonic() + self.timeout)
        self.scheduler.submit(job)
        return job

    def sampling(self, body: Sampled, max_tokens: int, served: ServedStack) -> Sampling:
        if body.temperature > 0 and served.stack.of_kind("reader") is not None:
            raise ApiError(
                400, f"{served.model_id} decodes greedily (a reader stack): use temperature 0", "temperature"
            )
        seed = self.seed if body.seed is None else body.seed
        return Sampling(max_tokens, body.stops(), float(body.temperature), float(body.top_p), seed)

    def prompt_ids(self, prompt: str | list[int]) -> tuple[str, list[int]]:
        """(text, ids) of a prompt given as text (encoded as the engine encodes) or as token ids (checked)."""
        tokenizer = self.engine.tokenizer
        if isinstance(prompt, str):
            if not prompt:
                raise ApiError(400, "the prompt is empty", param="prompt")
            return prompt, tokens.encode(tokenizer, prompt)
        vocab = len(tokenizer)
        if any(not 0 <= i < vocab for i in prompt):
            raise ApiError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
        return tokenizer.decode(prompt), list(prompt)

    def chat_text(self, messages: list[Any], add_generation_prompt: bool, continue_final_message: bool) -> str:
        """The prompt of chat ``messages``: through the model's template, or their contents joined (``raw``)."""
        turns = [{"role": m.role, "content": m.text()} for m in messages]
        if self.chat == "raw":
            return "".join(turn["content"] for turn in turns)
        try:
            return prompts.render_chat(
                self.engine.tokenizer, turns, add_generation_prompt and not continue_final_message,
                continue_final_message,
            )  # fmt: skip
        except LongreachError as exc:
            raise ApiError(400, str(exc), param="messages") from None


def build_app(service: Service) -> FastAPI:
    """The FastAPI app over ``service`` (the scheduler runs while the app does)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.scheduler.start()
        yield
        service.scheduler.stop()

    app = FastAPI(title="longreach serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=service.max_body_bytes)
    app.add_middleware(CountRequests, metrics=service.metrics)
    _add_error_handlers(app)
    app.include_router(_open_routes(service))
    app.include_router(_api_routes(service), dependencies=[Depends(_key_check(service.api_key))])
    return app


def _key_check(api_key: str) -> Any:
    async def check(request: HttpRequest) -> None:
        if api_key and request.headers.get("authorization") != f"Bearer {api_key}":
            raise ApiError(401, "missing or wrong API key (send Authorization: Bearer KEY)", code="invalid_api_key",
                           kind="authentication_error")  # fmt: skip

    return check


def _open_routes(service: Service) -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.metrics.render(), media_type="text/plain; version=0.0.4")

    return router


def _api_routes(service: Service) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(service, served) for served in service.stacks.values()]}

    @router.post("/v1/completions", response_model=None)
    async def completions(body: CompletionRequest, request: HttpRequest) -> Any:
        served = service.stack_for(body.model)
        sampling = service.sampling(body, body.max_tokens, served)
        items = body.prompt if isinstance(body.prompt, list) and not isinstance(body.prompt[0], int) else [body.prompt]
        if body.stream and len(items) > 1:
            raise ApiError(400, "stream takes a single prompt", param="prompt")
        read = [service.prompt_ids(item) for item in items]
        jobs = _queue_all(service, served, read, sampling)
        answer = _Answer("cmpl", "text_completion", served.model_id)
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return _sse(answer.stream(jobs[0], request, chat=False, usage=usage))
        results = await asyncio.gather(*(_collect(job, request) for job in jobs))
        return answer.whole(results, chat=False)

    @router.post("/v1/chat/completions", response_model=None)
    async def chat(body: ChatRequest, request: HttpRequest) -> Any:
        served = service.stack_for(body.model)
        sampling = service.sampling(body, body.limit(), served)
        text = service.chat_text(body.messages, body.add_generation_prompt, body.continue_final_message)
        jobs = _queue_all(service, served, [(text, tokens.encode(service.engine.tokenizer, text))], sampling)
        answer = _Answer("chatcmpl", "chat.completion", served.model_id)
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return _sse(answer.stream(jobs[0], request, chat=True, usage=usage))
        return answer.whole([await _collect(jobs[0], request)], chat=True)

    @router.post("/tokenize")
    async def tokenize(body: TokenizeRequest) -> dict[str, Any]:
        served = _tokenizer_stack(service, body.model)
        if (body.prompt is None) == (body.messages is None):
            raise ApiError(400, "give exactly one of prompt and messages", param="prompt")
        text = body.prompt
        if text is None:
            text = service.chat_text(body.messages, body.add_generation_prompt, body.continue_final_message)
        ids = service.engine.tokenizer(text, add_special_tokens=body.add_special_tokens)["input_ids"]
        return {"count": len(ids), "max_model_len": served.reach, "tokens": ids}

    @router.post("/detokenize")
    async def detokenize(body: DetokenizeRequest) -> dict[str, Any]:
        _tokenizer_stack(service, body.model)
        vocab = len(service.engine.tokenizer)
        if any(not 0 <= i < vocab for i in body.tokens):
            raise ApiError(400, f"token ids must be in [0, {vocab})", param="tokens")
        return {"prompt": service.engine.tokenizer.decode(body.tokens)}

    return router


def _tokenizer_stack(service: Service, model: str | None) -> ServedStack:
    """Tokenizing is the same under every stack: the bare model name is accepted too."""
    return service.stack_for(None if model == service.model else model)


def _model_card(service: Service, served: ServedStack) -> dict[str, Any]:
    fit = service.scheduler.tokens_fit(served.kv_bytes_per_token)
    return {
        "id": served.model_id,
        "object": "model",
        "created": 0,
        "owned_by": "longreach",
        "max_model_len": served.reach,
        "longreach": {
            "model": service.model,
            "stack": served.stack.repr,
            "batched": served.batched,
            "serial_reason": served.serial,
            "kv_bytes_per_token": served.kv_bytes_per_token,
            "tokens_fit_in_kv_budget": fit,
        },
    }


def _queue_all(
    service: Service, served: ServedStack, read: list[tuple[str, list[int]]], sampling: Sampling
) -> list[Job]:
    """Queue one job per prompt; if one is refused, the ones already queued are cancelled."""
    jobs: list[Job] = []
    try:
        for text, ids in read:
            jobs.append(service.job(served, text, ids, sampling))
    except ApiError:
        for job in jobs:
            job.cancel()
        raise
    return jobs


async def _events(job: Job, request: HttpRequest) -> AsyncIterator[Delta | Finished | Failed]:
    """The job's events until its end; a client that disconnects cancels the job (also when this is closed)."""
    ended = False
    try:
        while not ended:
            try:
                event = await asyncio.wait_for(job.events.get(), POLL_SECONDS)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                continue
            ended = not isinstance(event, Delta)
            yield event
    finally:
        if not ended:
            job.cancel()


async def _collect(job: Job, request: HttpRequest) -> tuple[str, Finished]:
    """The whole answer of ``job``: its text and its end (a failure raises its error)."""
    parts: list[str] = []
    async for event in _events(job, request):
        if isinstance(event, Delta):
            parts.append(event.text)
        elif isinstance(event, Finished):
            return "".join(parts), event
        else:
            raise event.error
    raise ApiError(499, "the client closed the request", code="client_closed")


class _Answer:
    """Builds OpenAI's response bodies and stream chunks for one request."""

    def __init__(self, prefix: str, kind: str, model: str) -> None:
        self.id, self.object, self.model = f"{prefix}-{uuid.uuid4().hex}", kind, model
        self.created = int(time.time())

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def whole(self, results: list[tuple[str, Finished]], chat: bool) -> dict[str, Any]:
        choices = []
        for index, (text, end) in enumerate(results):
            choice: dict[str, Any] = {"index": index, "finish_reason": end.reason, "logprobs": None}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            choices.append(choice)
        prompt = sum(end.prompt_tokens for _, end in results)
        completion = sum(end.completion_tokens for _, end in results)
        return {**self._head(self.object), "choices": choices, "usage": _usage(prompt, completion)}

    def _chunk(self, chat: bool, text: str | None, reason: str | None) -> dict[str, Any]:
        if chat:
            delta = {} if text is None else {"content": text}
            choice = {"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}
            return {**self._head("chat.completion.chunk"), "choices": [choice]}
        choice = {"index": 0, "text": text or "", "finish_reason": reason, "logprobs": None}
        return {**self._head(self.object), "choices": [choice]}

    async def stream(self, job: Job, request: HttpRequest, chat: bool, usage: bool) -> AsyncIterator[dict[str, Any]]:
        if chat:
            first = self._chunk(chat, "", None)
            first["choices"][0]["delta"]["role"] = "assistant"
            yield first
        async for event in _events(job, request):
            if isinstance(event, Delta):
                yield self._chunk(chat, event.text, None)
            elif isinstance(event, Finished):
                yield self._chunk(chat, None, event.reason)
                if usage:
                    head = self._head("chat.completion.chunk" if chat else self.object)
                    yield {**head, "choices": [], "usage": _usage(event.prompt_tokens, event.completion_tokens)}
            else:
                yield event.error.body()


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _sse(chunks: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        async for chunk in chunks:
            yield f"data: {json.dumps(chunk)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: HttpRequest, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: HttpRequest, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_validation_error(exc).body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(_: HttpRequest, exc: HTTPException) -> JSONResponse:
        error = ApiError(exc.status_code, str(exc.detail), code="not_found" if exc.status_code == 404 else None)
        return JSONResponse(error.body(), status_code=exc.status_code, headers=exc.headers)


def _validation_error(exc: RequestValidationError) -> ApiError:
    """The first validation problem as an error object naming its field (``messages.0.content``)."""
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return ApiError(400, f"the request body is not valid JSON ({first.get('ctx', {}).get('error', '')})")
    location = [str(part) for part in first["loc"][1:] if isinstance(part, int) or part in FIELDS]
    param = ".".join(location) or None
    if param is None and first["type"] in ("missing", "model_attributes_type", "dict_type"):
        return ApiError(400, "the request body must be a JSON object (Content-Type: application/json)")
    return ApiError(400, f"{param}: {first['msg']}" if param else first["msg"], param=param, code=first["type"])
