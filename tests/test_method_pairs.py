"""Every pair of registered methods either composes, and then runs on tiny-llama through the engine, or is refused
when the stack is parsed, with the reason in the error. Methods of one kind never stack."""

from __future__ import annotations

import itertools
import re

import pytest
import torch

from longreach.engine import Engine
from longreach.errors import LongreachError
from longreach.generation import Request
from longreach.methods import METHODS, parse_stack
from longreach.models import adapter
from longreach.tasks import parse_task

SPECS = {name: cls.example or name for name, cls in METHODS.items() if cls.kind != "none"}
PAIRS = [(a, b) for a, b in itertools.combinations(sorted(SPECS), 2) if METHODS.get(a).kind != METHODS.get(b).kind]
SAME_KIND = [(a, b) for a, b in itertools.combinations(sorted(SPECS), 2) if METHODS.get(a).kind == METHODS.get(b).kind]


@pytest.fixture(scope="module")
def engine(tiny):
    return Engine(tiny)


@pytest.fixture(scope="module")
def request_(tiny):
    sample = parse_task("passkey").task.generate(tiny.tokenizer, 800, 0.5, seed=0, index=0)
    return Request(sample.prompt, 3, sample.stop, sample.question_offset)


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[f"{a}+{b}" for a, b in PAIRS])
def test_every_pair_of_kinds_runs_or_is_refused_with_a_reason(engine, request_, first, second):
    try:
        stack = parse_stack(f"{SPECS[first]}+{SPECS[second]}")
    except LongreachError as exc:
        assert re.search(r"cannot be stacked with \w+: \w.{15,}", str(exc)), f"no reason given: {exc}"
        return
    generation = engine.generate(request_, stack)
    assert generation.prompt_tokens >= 800 and 0 < generation.new_tokens <= 3 and generation.seconds > 0
    assert not any("_longreach_hooks" in vars(m) for m in adapter.attention_modules(engine.loaded.model))


def test_the_accepted_pairs_cover_every_composable_kind_pair():
    accepted = set()
    for first, second in PAIRS:
        try:
            parse_stack(f"{SPECS[first]}+{SPECS[second]}")
        except LongreachError:
            continue
        accepted.add(tuple(sorted((METHODS.get(first).kind, METHODS.get(second).kind))))
    assert accepted >= {("attention", "position"), ("cache", "position"), ("position", "reader")}
    assert ("attention", "reader") in accepted, "infiniretri reads over an attention method"


@pytest.mark.parametrize(("first", "second"), SAME_KIND[:12], ids=[f"{a}+{b}" for a, b in SAME_KIND[:12]])
def test_two_methods_of_one_kind_are_refused(first, second):
    with pytest.raises(LongreachError, match="at most one"):
        parse_stack(f"{SPECS[first]}+{SPECS[second]}")


def test_nested_kernels_compose_and_leave_the_model_as_it_was(tiny):
    """An outer kernel hands some layers to the inner one; on exit the model computes exactly as before."""
    ids = torch.tensor([tiny.tokenizer("a b c d e f g h i j k l m n o p")["input_ids"]])
    before = adapter.forward(tiny.model, ids, logits_to_keep=ids.shape[1])[0]
    seen = []

    def inner(call, below):
        seen.append(("inner", call.layer))
        return below(call)

    def outer(call, below):
        seen.append(("outer", call.layer))
        return below(call)

    with adapter.attention_kernel(tiny.model, inner), adapter.attention_kernel(tiny.model, outer):
        within = adapter.forward(tiny.model, ids, logits_to_keep=ids.shape[1])[0]
    after = adapter.forward(tiny.model, ids, logits_to_keep=ids.shape[1])[0]
    assert seen == [("outer", 0), ("inner", 0), ("outer", 1), ("inner", 1)]
    torch.testing.assert_close(within, before, atol=1e-5, rtol=1e-5)
    assert torch.equal(after, before)
    assert not any("_longreach_hooks" in vars(m) for m in adapter.attention_modules(tiny.model))
