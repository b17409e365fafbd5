import pytest
import torch

from longreach import params
from longreach.errors import LongreachError
from longreach.methods import METHODS, MethodStack, parse_stack


def test_none_is_the_empty_stack():
    stack = parse_stack("none")
    assert stack == MethodStack(())
    assert stack.repr == "none"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nonee", r"unknown method 'nonee': did you mean 'none'"),
        ("none+none", r"'none' stands alone"),
        ("none+", r"empty method"),
        ("none:factor=2", r"none: unknown parameter 'factor'"),
    ],
)
def test_bad_specs_fail_with_a_reason(spec, message):
    with pytest.raises(LongreachError, match=message):
        parse_stack(spec)


@pytest.mark.parametrize("name", METHODS.names())
def test_contract_every_method_builds_from_defaults_and_round_trips_its_repr(name):
    cls = METHODS.get(name)
    assert cls.summary, f"{name} needs a one-line summary for `longreach methods`"
    assert cls.kind in ("none", "position", "attention", "cache", "reader")
    for field_name, _, help_text in params.describe_fields(cls):
        assert help_text, f"{name}.{field_name} needs a help text"
    stack = parse_stack(cls.example or name)
    assert parse_stack(stack.repr) == stack


@pytest.mark.parametrize("name", METHODS.names())
def test_contract_applying_a_method_restores_the_model(tiny, name):
    """Whatever a method patches, the model computes exactly as before once the block exits."""
    ids = torch.arange(5, 69).unsqueeze(0)
    stack = parse_stack(METHODS.get(name).example or name)
    with torch.no_grad():
        before = tiny.model(ids).logits
        if name == "auto":  # resolved by calibration before a sweep runs; unresolved, it refuses to apply
            with pytest.raises(LongreachError, match="resolved by calibration"), stack.applied(tiny):
                pass
        else:
            with stack.applied(tiny):
                tiny.model(ids)
        after = tiny.model(ids).logits
    assert torch.equal(before, after)


def test_stack_restores_even_when_the_body_raises(tiny):
    with pytest.raises(RuntimeError), parse_stack("none").applied(tiny):
        raise RuntimeError("boom")
