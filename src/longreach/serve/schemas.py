"""The API's request bodies (OpenAI's and vLLM's shapes, strictly typed) and its error object.

Fields clients send that change nothing here (``user``, ``logit_bias``...) are ignored; fields whose non-default
values this server cannot honour (``n``, ``echo``, ``logprobs``, ``best_of``) are refused naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

Number = StrictInt | StrictFloat
TokenIds = Annotated[list[StrictInt], Field(min_length=1)]


class ApiError(Exception):
    """An answer with an OpenAI-style error object: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    include_usage: StrictBool = False


class Sampled(BaseModel):
    """What completions and chat share: decoding, stopping, streaming."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    temperature: Number = Field(default=1.0, ge=0.0, le=2.0)
    top_p: Number = Field(default=1.0, gt=0.0, le=1.0)
    seed: StrictInt | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=16)] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in stops if s)


class CompletionRequest(Sampled):
    """``POST /v1/completions``: a prompt as text or token ids, or a list of them (one choice each)."""

    prompt: (
        StrictStr
        | TokenIds
        | Annotated[list[StrictStr], Field(min_length=1)]
        | Annotated[list[TokenIds], Field(min_length=1)]
    )
    max_tokens: StrictInt = Field(default=16, ge=1)
    echo: Literal[False] = False
    logprobs: None = None
    best_of: Literal[1] | None = None


class TextPart(BaseModel):
    type: Literal["text"]
    text: StrictStr


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: StrictStr | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class ChatRequest(Sampled):
    """``POST /v1/chat/completions``; ``continue_final_message`` and ``add_generation_prompt`` as in vLLM."""

    messages: Annotated[list[Message], Field(min_length=1)]
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    continue_final_message: StrictBool = False
    add_generation_prompt: StrictBool = True
    logprobs: Literal[False] = False

    def limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 256


class TokenizeRequest(BaseModel):
    """``POST /tokenize`` (vLLM's shape): a prompt, or chat messages through the template."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    prompt: StrictStr | None = None
    messages: list[Message] | None = None
    add_special_tokens: StrictBool = True
    add_generation_prompt: StrictBool = True
    continue_final_message: StrictBool = False


class DetokenizeRequest(BaseModel):
    """``POST /detokenize`` (vLLM's shape)."""

    model_config = ConfigDict(extra="ignore")

    model: StrictStr | None = None
    tokens: list[StrictInt]


FIELDS = frozenset(
    name
    for model in (CompletionRequest, ChatRequest, TokenizeRequest, DetokenizeRequest, Message, TextPart, StreamOptions)
    for name in model.model_fields
)
