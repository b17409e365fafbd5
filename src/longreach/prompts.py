"""Prompt formats: how a sample's parts become the text a model reads (``raw``) or its chat template (``chat``).

A sample has four parts: the context, the question, and the answer prefix the model continues from (``The pass
key is``), plus the instruction-free answer itself. The ``raw`` format joins them as they are:

    context + question + answer_prefix

The ``chat`` format wraps the user turn (context + question) in the tokenizer's chat template, with its system
turn and special tokens, and puts the answer prefix at the start of the assistant turn:

    prefix + context + question + suffix + answer_prefix.lstrip()

``prefix`` and ``suffix`` are what the template writes before and after one user message (with the generation
prompt), found by rendering the template around a sentinel. Task generators fit the whole formatted text to the
exact requested length, so the guarantee covers the template too. A BOS token that the tokenizer adds by itself
is left out of ``prefix``: :func:`longreach.tokens.encode` (special tokens on) adds it back, so one encoding rule
holds for both formats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from jinja2 import TemplateError

from longreach.errors import LongreachError

PromptChoice = Literal["auto", "raw", "chat"]
PROMPT_CHOICES: tuple[str, ...] = ("auto", "raw", "chat")
_SENTINEL = "\u2063LONGREACH-USER-MESSAGE\u2063"


@dataclass(frozen=True)
class PromptFormat:
    """``raw`` (no template) or ``chat`` (the user turn wrapped in ``prefix`` .. ``suffix``)."""

    name: Literal["raw", "chat"] = "raw"
    prefix: str = ""
    suffix: str = ""

    def answer_prefix(self, answer_prefix: str) -> str:
        """The answer prefix as it opens the model's turn (a chat turn starts without a leading space)."""
        return answer_prefix.lstrip() if self.name == "chat" else answer_prefix

    def head(self, context_head: str) -> str:
        """What precedes the context's first character in the formatted prompt, plus ``context_head``."""
        return self.prefix + context_head

    def tail(self, question: str, answer_prefix: str) -> str:
        """What follows the context: the question, the end of the user turn, the answer prefix."""
        return question + self.suffix + self.answer_prefix(answer_prefix)

    def render(self, context: str, question: str, answer_prefix: str) -> str:
        """The whole text the model reads."""
        return self.head(context) + self.tail(question, answer_prefix)


RAW = PromptFormat()


def chat_format(tokenizer: Any) -> PromptFormat:
    """The ``chat`` format of ``tokenizer``'s chat template; raises when it has none or it does not wrap a
    single user message."""
    template = getattr(tokenizer, "chat_template", None)
    if not template:
        raise LongreachError("--prompt chat: this model's tokenizer has no chat template; use --prompt raw")
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": _SENTINEL}], tokenize=False, add_generation_prompt=True
        )
    except (TemplateError, ValueError, TypeError, KeyError) as exc:
        raise LongreachError(f"--prompt chat: the chat template failed to render ({exc})") from None
    if text.count(_SENTINEL) != 1:
        raise LongreachError("--prompt chat: the chat template does not place the user message once; use --prompt raw")
    prefix, suffix = text.split(_SENTINEL)
    return PromptFormat("chat", _without_added_bos(tokenizer, prefix), suffix)


def _without_added_bos(tokenizer: Any, text: str) -> str:
    """``text`` without a leading BOS string when the tokenizer adds BOS by itself (encoding adds it back)."""
    bos = getattr(tokenizer, "bos_token", None)
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    adds_bos = bos is not None and ids[:1] == [getattr(tokenizer, "bos_token_id", None)]
    return text[len(bos) :] if adds_bos and text.startswith(bos) else text


def render_chat(
    tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool, continue_final_message: bool
) -> str:
    """The text a model reads for chat ``messages`` through its template (an added BOS left to encoding, as in
    :func:`chat_format`); raises LongreachError when there is no template or it refuses the messages."""
    if not getattr(tokenizer, "chat_template", None):
        raise LongreachError("this model's tokenizer has no chat template")
    try:
        text = tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
        )
    except (TemplateError, ValueError, TypeError, KeyError) as exc:
        raise LongreachError(f"the chat template refused these messages ({exc})") from None
    return _without_added_bos(tokenizer, text)


def resolve_format(tokenizer: Any, choice: str) -> PromptFormat:
    """``auto`` -> ``chat`` when the tokenizer has a chat template, else ``raw``; ``raw`` and ``chat`` as named."""
    if choice not in PROMPT_CHOICES:
        raise LongreachError(f"unknown prompt format {choice!r}; valid: {', '.join(PROMPT_CHOICES)}")
    if choice == "raw" or (choice == "auto" and not getattr(tokenizer, "chat_template", None)):
        return RAW
    return chat_format(tokenizer)
