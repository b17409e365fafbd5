"""Contract over every registered generated task: deterministic, token-exact, answer at the requested depth."""

import pytest

from longreach import tokens
from longreach.tasks import FAMILIES, TASKS, parse_task
from longreach.tasks.fitting import LengthFitError

GENERATED = [name for name in TASKS.names() if TASKS.get(name).family.generated]
FROM_FILES = {name for name in TASKS.names() if not TASKS.get(name).family.generated}
DEPTH = [name for name in GENERATED if TASKS.get(name).family.uses_depth]


def _depths(name: str) -> tuple[float, ...]:
    return (0.0, 0.5, 1.0) if name in DEPTH else (0.0,)


def test_every_variant_is_covered_by_this_contract():
    assert set(GENERATED) | FROM_FILES == set(TASKS.names())
    assert FROM_FILES == {"jsonl", "text", "longbench", "longbench_v2", "leval", "lveval", "infinitebench"}
    families = {TASKS.get(name).family.family for name in GENERATED}
    expected = {"passkey", "needle", "threading", "variables", "aggregation", "biographies", "database"}
    assert families >= expected | {"ordering", "confusers", "golden_thread", "longgenbench", "longins", "bestanswer"}


def test_every_family_states_its_place_on_the_taxonomy_grid():
    """Diffusion and scope (Goldman et al. 2024) are stated in each generated family's own class body; the families
    reading the user's files (jsonl, text, released benchmarks) state None."""
    for name, family in FAMILIES.items():
        if not family.generated:  # instances from the user's files: not ours to place on the grid
            assert family.diffusion is None and family.scope is None, name
            continue
        stated = {key: vars(family)[key] for key in ("diffusion", "scope") if key in vars(family)}
        assert set(stated) == {"diffusion", "scope"}, f"{name} does not state its diffusion and scope"
        assert set(stated.values()) <= {"low", "high"}, name


@pytest.mark.parametrize("name", GENERATED)
def test_generation_is_deterministic(tiny, name):
    task = parse_task(name).task
    first = task.generate(tiny.tokenizer, 900, 0.3, seed=7, index=2)
    again = task.generate(tiny.tokenizer, 900, 0.3, seed=7, index=2)
    assert first == again and first.prompt == again.prompt and first.meta == again.meta
    other = task.generate(tiny.tokenizer, 900, 0.3, seed=7, index=3)
    assert other.prompt != first.prompt
    reseeded = task.generate(tiny.tokenizer, 900, 0.3, seed=8, index=2)
    assert reseeded.prompt != first.prompt


@pytest.mark.parametrize("name", GENERATED)
@pytest.mark.parametrize("length", [900, 1001, 1536, 2047])
def test_length_is_exact_in_the_model_tokenizer(tiny, name, length):
    for depth in _depths(name):
        sample = parse_task(name).task.generate(tiny.tokenizer, length, depth, seed=0, index=0)
        assert tokens.count(tiny.tokenizer, sample.prompt) == length
        assert sample.meta["realized_tokens"] == length


@pytest.mark.parametrize("name", GENERATED)
@pytest.mark.parametrize("length", [4096, 8191])
def test_length_is_exact_with_a_real_49k_bpe(smollm2_tokenizer, name, length):
    sample = parse_task(name).task.generate(smollm2_tokenizer, length, 0.6, seed=1, index=4)
    assert tokens.count(smollm2_tokenizer, sample.prompt) == length


@pytest.mark.parametrize("name", DEPTH)
@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_answer_sits_at_the_requested_depth(tiny, name, depth):
    sample = parse_task(name).task.generate(tiny.tokenizer, 1800, depth, seed=3, index=1)
    evidence = sample.meta.get("evidence") or list(sample.answers)
    for item in evidence:
        assert item in sample.context, "the evidence is in the context, before the question"
    ids = tokens.encode(tiny.tokenizer, sample.prompt)
    first, last = sample.meta["needle_token_offsets"][0]
    needle_text = tiny.tokenizer.decode(ids[first:last])
    assert evidence[0] in needle_text, "the first offset is the needle holding the (first) answer"
    # Needles sit between whole filler units, so the realized depth is within about a unit of the request.
    assert abs(sample.meta["realized_depth"] - depth) <= 2.0 / sample.meta["filler_units"] + 0.01


@pytest.mark.parametrize("name", GENERATED)
def test_probe_is_the_same_at_every_length(tiny, name):
    task = parse_task(name).task
    short = task.generate(tiny.tokenizer, 800, 0.5, seed=0, index=5)
    long = task.generate(tiny.tokenizer, 2000, 0.5, seed=0, index=5)
    assert short.answers == long.answers
    assert short.question == long.question


@pytest.mark.parametrize("name", GENERATED)
def test_perfect_answer_scores_one_and_wrong_scores_zero(tiny, name):
    """The reference answer is built from the generator's own gold, so a wrong gold would pass here; that the
    gold is right is checked by the brute-force oracles of test_task_oracles.py."""
    task = parse_task(name).task
    for index in range(3):
        sample = task.generate(tiny.tokenizer, 1000, 0.5, seed=0, index=index)
        assert task.score(sample, task.reference_answer(sample)) == 1.0
        assert task.score(sample, " 0000000 nothing-here") == 0.0
        assert task.score(sample, "") == 0.0
        assert task.score(sample, "1" + sample.answers[0] + "1") == 0.0, "digits glued on either side do not count"


@pytest.mark.parametrize("name", GENERATED)
def test_a_random_baseline_is_recorded(tiny, name):
    sample = parse_task(name).task.generate(tiny.tokenizer, 1000, 0.5, seed=0, index=0)
    baseline = sample.meta["random_baseline"]
    assert isinstance(baseline, float) and 0.0 <= baseline <= 1.0


@pytest.mark.parametrize("name", GENERATED)
def test_length_below_the_fixed_part_raises(tiny, name):
    with pytest.raises(LengthFitError, match="smaller than the prompt's fixed part"):
        parse_task(name).task.generate(tiny.tokenizer, 40, 0.5, seed=0, index=0)


def test_task_knobs_parse_validate_and_canonicalise():
    parsed = parse_task("niah_multikey_1:haystack=noise")
    assert parsed.spec == "niah_multikey_1:haystack=noise"
    assert parsed.task.num_keys == 4 and parsed.task.haystack == "noise"
    assert parse_task("niah_multikey_1:num_keys=4").spec == "niah_multikey_1"
    with pytest.raises(Exception, match="num_queries .* must be <= num_keys"):
        parse_task("needle:num_queries=3")
    with pytest.raises(Exception, match="did you mean 'haystack'"):
        parse_task("needle:haystak=noise")


def test_singular_template_matches_ruler():
    sample = parse_task("niah_single_2").task.generate(_tok(), 600, 0.5, seed=0, index=0)
    assert sample.context.startswith("A special magic number is hidden within the following text.")
    assert "I will quiz you about the number afterwards." in sample.context
    assert sample.question.startswith("\nWhat is the special magic number for ")
    assert sample.question.endswith("mentioned in the provided text?")
    assert sample.answer_prefix.startswith(" The special magic number for ")
    assert sample.answer_prefix.endswith("mentioned in the provided text is")


def test_plural_template_lists_every_queried_key():
    sample = parse_task("niah_multiquery").task.generate(_tok(), 900, 0.5, seed=0, index=0)
    keys = sample.meta["keys"]
    assert len(keys) == 4 and len(sample.answers) == 4
    assert f"{keys[0]}, {keys[1]}, {keys[2]}, and {keys[3]}" in sample.question
    assert sample.answer_prefix.endswith("mentioned in the provided text are")


def _tok():
    from longreach.models.tiny import tiny_tokenizer

    return tiny_tokenizer()
