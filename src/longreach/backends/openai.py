"""The ``openai`` backend: any OpenAI-compatible server (vLLM, SGLang, llama.cpp, ...), over plain HTTP.

Spec: ``openai:base_url=http://127.0.0.1:8000/v1[:api=chat][:tokenizer=NAME][:concurrency=4][:timeout=600]
[:retries=4][:api_key=KEY]``; ``--model`` names the served model.

``api="completions"`` sends the prompt text as is to ``/v1/completions`` (raw or already chat-templated: the
prompt ends in the answer prefix). ``api="chat"`` sends a chat-formatted prompt (``--prompt chat``) as messages
to ``/v1/chat/completions``: the user turn, and the answer prefix as the start of the assistant turn with
``continue_final_message`` (vLLM's and SGLang's extension), so the server's template rebuilds exactly the prompt
the tokens were counted on; the server's ``usage.prompt_tokens`` is checked against that count by the runner,
and a server whose template differs fails the cell saying so. Decoding is greedy (temperature 0).
At most ``concurrency`` requests are in flight; each has a ``timeout``; 429, 5xx answers,
timeouts and refused connections are retried ``retries`` times with exponential backoff. When a server
stays unreachable, :class:`BackendUnavailable` stops the sweep (finished cells are already stored, and
``--resume`` finishes it); a request the server rejects (another 4xx) fails only its own cell.

Exact lengths need the server's tokenizer: :class:`RemoteTokenizer` calls the server's tokenize endpoint
(vLLM and SGLang ``/tokenize``, llama.cpp's Python server ``/extras/tokenize``); a local tokenizer can be
given instead. Methods cannot be applied to a remote model: a stack other than ``none`` runs only where the server
serves it under its own model id, ``MODEL+STACK`` (``longreach serve --method STACK`` does), which then names the
model of those requests. The server's memory is not visible from here: ``peak_rss_mb`` and ``kv_cache_bytes`` are
0, and ``prefill_seconds`` is the whole request's time.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from longreach.backends.base import BackendSpec, ModelSettings, Preparation, register_backend
from longreach.errors import LongreachError
from longreach.generation import Generation, Request, cut_at_stop
from longreach.methods import MethodStack
from longreach.models import ZOO, load_tokenizer, resolve

Api = Literal["completions", "chat"]


class BackendUnavailable(LongreachError):
    """The server could not be reached (or kept failing) after every retry: the sweep must stop."""


class RequestRejected(LongreachError):
    """The server answered this one request with an error that retrying cannot fix (a 4xx other than 429)."""


class _Client:
    """JSON over HTTP with retries, backoff and a limit on requests in flight."""

    def __init__(self, base_url: str, *, timeout: float, retries: int, backoff: float, api_key: str, limit: int):
        self.base_url = base_url.rstrip("/")
        self.timeout, self.retries, self.backoff, self.api_key = timeout, retries, backoff, api_key
        self._slots = threading.BoundedSemaphore(limit)

    def get(self, url: str) -> dict[str, Any]:
        return self._send(url, None)

    def post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._send(url, json.dumps(body).encode())

    def _send(self, url: str, data: bytes | None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(30.0, self.backoff * 2 ** (attempt - 1)) * (0.5 + random.random()))
            try:
                with self._slots:
                    method = "GET" if data is None else "POST"
                    request = urllib.request.Request(url, data=data, headers=headers, method=method)
                    with urllib.request.urlopen(request, timeout=self.timeout) as response:
                        return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode(errors="replace")[:300]
                if exc.code != 429 and exc.code < 500:
                    raise RequestRejected(f"{url} answered {exc.code}: {detail}") from None
                last = f"HTTP {exc.code}: {detail}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        raise BackendUnavailable(f"the server at {url} did not answer after {self.retries + 1} tries ({last})")


class RemoteTokenizer:
    """Token counts from the server's own tokenize endpoint, with the interface the tasks use.

    ``tokenizer(text_or_texts, add_special_tokens=...)["input_ids"]`` and ``decode(ids)``. The special
    tokens the server adds (e.g. BOS) are those it adds to the empty string, and are dropped when
    ``add_special_tokens=False``.
    """

    is_fast = False

    def __init__(self, client: _Client, model: str) -> None:
        self.client, self.model = client, model
        self.kind = self._probe()
        self.specials = len(self._tokenize(""))

    def _probe(self) -> str:
        root = self.client.base_url.removesuffix("/v1")
        for kind, url in (("vllm", f"{root}/tokenize"), ("llama.cpp", f"{root}/extras/tokenize")):
            try:
                body = {"model": self.model, "prompt": "a"} if kind == "vllm" else {"model": self.model, "input": "a"}
                if "tokens" in self.client.post(url, body):
                    return kind
            except RequestRejected:
                continue
        raise LongreachError(
            f"{self.client.base_url} has no tokenize endpoint (tried /tokenize and /extras/tokenize); name a local "
            "tokenizer with --tokenizer (a zoo name, HF directory or .gguf file) so lengths can be exact"
        )

    def _tokenize(self, text: str) -> list[int]:
        root = self.client.base_url.removesuffix("/v1")
        if self.kind == "vllm":
            return self.client.post(f"{root}/tokenize", {"model": self.model, "prompt": text})["tokens"]
        return self.client.post(f"{root}/extras/tokenize", {"model": self.model, "input": text})["tokens"]

    def __call__(self, text: str | list[str], add_special_tokens: bool = True, **_: Any) -> dict[str, Any]:
        def one(item: str) -> list[int]:
            ids = self._tokenize(item)
            return ids if add_special_tokens else ids[self.specials :]

        if isinstance(text, str):
            return {"input_ids": one(text)}
        with ThreadPoolExecutor(8) as pool:
            return {"input_ids": list(pool.map(one, text))}

    def decode(self, ids: list[int], **_: Any) -> str:
        root = self.client.base_url.removesuffix("/v1")
        url = f"{root}/detokenize" if self.kind == "vllm" else f"{root}/extras/detokenize"
        body = {"model": self.model, "tokens": list(ids)}
        answer = self.client.post(url, body)
        return answer.get("prompt", answer.get("text", ""))


class OpenAIBackend:
    """Greedy generations from an OpenAI-compatible server; requests run ``concurrency`` at a time."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api: Api = "completions",
        tokenizer: Any = None,
        concurrency: int = 4,
        timeout: float = 600.0,
        retries: int = 4,
        backoff: float = 1.0,
        api_key: str = "",
    ) -> None:
        if api not in ("completions", "chat"):
            raise LongreachError(f"unknown api {api!r}; valid: completions, chat")
        if concurrency < 1:
            raise LongreachError(f"concurrency must be >= 1; got {concurrency}")
        if not base_url.startswith(("http://", "https://")):
            raise LongreachError(f"base url must start with http:// or https://; got {base_url!r}")
        self.client = _Client(
            base_url, timeout=timeout, retries=retries, backoff=backoff, api_key=api_key, limit=concurrency
        )
        self.model, self.api, self.concurrency = model, api, concurrency
        self.tokenizer = tokenizer if tokenizer is not None else RemoteTokenizer(self.client, model)
        self._served: set[str] | None = None

    def facts(self) -> dict[str, Any]:
        zoo = ZOO.get(self.model)
        return {
            "model": self.model,
            "model_source": f"{self.client.base_url} ({self.api})",
            "weights": "served (not visible from here)",
            "native_context_length": zoo.native_context_length if zoo else None,
            "dtype": "served",
            "device": "server",
        }

    def prepare(self, stacks: list[MethodStack], longest: dict[str, int], calibrated: dict[str, str]) -> Preparation:
        for stack in stacks:
            self.model_for(stack)
        return Preparation({stack.repr: stack for stack in stacks})

    def model_for(self, stack: MethodStack) -> str:
        """The served model id running ``stack``: the model for ``none``, else ``MODEL+STACK`` if the server has it."""
        if stack.repr == "none":
            return self.model
        wanted = f"{self.model}+{stack.repr}"
        if wanted not in self._served_models():
            raise LongreachError(
                f"the openai backend runs the served model as is; it cannot apply {stack.repr!r}, and the server does "
                f"not serve {wanted!r} (`longreach serve --model {self.model} --method {stack.repr}` would)"
            )
        return wanted

    def _served_models(self) -> set[str]:
        """The model ids the server lists at /v1/models (none when it cannot say)."""
        if self._served is None:
            try:
                listed = self.client.get(f"{self.client.base_url}/models").get("data") or []
            except LongreachError:
                listed = []
            self._served = {str(item.get("id")) for item in listed if isinstance(item, dict)}
        return self._served

    def generate(self, requests: list[Request], stack: MethodStack) -> list[Generation]:
        model = self.model_for(stack)
        if len(requests) == 1:
            return [self._one(requests[0], model)]
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda request: self._one(request, model), requests))

    def _one(self, request: Request, model: str) -> Generation:
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_new_tokens,
            "temperature": 0.0,
            "top_p": 1.0,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if self.api == "completions":
            body["prompt"] = request.prompt
        else:
            body.update(_chat_body(request))
        start = time.perf_counter()
        answer = self.client.post(f"{self.client.base_url}/{self.api.replace('chat', 'chat/completions')}", body)
        seconds = time.perf_counter() - start
        choice = (answer.get("choices") or [{}])[0]
        text = choice.get("text") if self.api == "completions" else (choice.get("message") or {}).get("content")
        if text is None:
            raise RequestRejected(f"the server's answer has no generated text: {json.dumps(answer)[:300]}")
        text = cut_at_stop(text, request.stop) or text
        usage = answer.get("usage") or {}
        return Generation(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            new_tokens=int(usage.get("completion_tokens") or 0),
            seconds=seconds,
            prefill_seconds=seconds,
            peak_rss_mb=0.0,
            kv_cache_bytes=0,
        )


def _chat_body(request: Request) -> dict[str, Any]:
    """The chat API's messages for a chat-formatted request: the user turn, and the answer prefix as the open start
    of the assistant turn (continue_final_message) so the server's template ends where the counted prompt ends."""
    if request.chat is None:
        raise RequestRejected(
            "openai:api=chat sends chat messages; run with --prompt chat (or auto with a chat-template tokenizer): "
            "this prompt is raw"
        )
    user, answer_prefix = request.chat
    if not answer_prefix:
        return {"messages": [{"role": "user", "content": user}]}
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer_prefix}],
        "continue_final_message": True,
        "add_generation_prompt": False,
    }


@register_backend
@dataclass(frozen=True)
class OpenAISpec(BackendSpec):
    """Any OpenAI-compatible server (vLLM, SGLang, llama.cpp, ``longreach serve``)."""

    base_url: str = field(default="", metadata={"help": "the server, e.g. http://127.0.0.1:8000/v1"})
    api: Api = field(default="completions", metadata={"help": "completions | chat"})
    tokenizer: str = field(default="", metadata={"help": "a local tokenizer when the server has no tokenize endpoint"})
    concurrency: int = field(default=4, metadata={"help": "requests in flight"})
    timeout: float = field(default=600.0, metadata={"help": "seconds per request"})
    retries: int = field(default=4, metadata={"help": "retries on 429 / 5xx / no answer, exponential backoff"})
    api_key: str = field(default="", metadata={"help": "sent as a Bearer token"})

    name: ClassVar[str] = "openai"
    summary: ClassVar[str] = "any OpenAI-compatible server; lengths exact through its tokenizer; stacks it serves"
    transport: ClassVar[tuple[str, ...]] = ("concurrency", "timeout", "retries", "api_key")

    def __post_init__(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise LongreachError(
                f"openai: base_url must start with http:// or https://; got {self.base_url!r} "
                "(e.g. --backend openai:base_url=http://127.0.0.1:8000/v1)"
            )
        if self.concurrency < 1 or self.retries < 0 or self.timeout <= 0:
            raise LongreachError(
                f"openai: need concurrency >= 1, retries >= 0 and timeout > 0; got {self.concurrency}, "
                f"{self.retries}, {self.timeout}"
            )

    def load_tokenizer(self, settings: ModelSettings) -> Any:
        return self.build(settings).tokenizer

    def build(self, settings: ModelSettings) -> OpenAIBackend:
        local = load_tokenizer(resolve(self.tokenizer)) if self.tokenizer else None
        return OpenAIBackend(
            self.base_url,
            settings.model,
            api=self.api,
            tokenizer=local,
            concurrency=self.concurrency,
            timeout=self.timeout,
            retries=self.retries,
            api_key=self.api_key,
        )
