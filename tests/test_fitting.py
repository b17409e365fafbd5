"""The fast exact-length fitter and the one-pass (optionally chunked) encoding it verifies with."""

import random

import pytest

from longreach import tokens
from longreach.tasks import fitting, parse_task
from longreach.tasks.filler import prose_units


def _text(chars: int) -> str:
    unit = prose_units(random.Random(0))
    parts, size, i = ["Head line\n"], 0, 0
    while size < chars:
        parts.append(unit(i))
        size += len(parts[-1]) + 1
        i += 1
    return " ".join(parts) + "\nWhat is the key? The key is"


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_chunked_encoding_equals_one_call(which, tiny, smollm2_tokenizer):
    tokenizer = tiny.tokenizer if which == "tiny" else smollm2_tokenizer
    text = _text(tokens._PARALLEL_CHARS + 50_000)
    encoding = tokens.encode_with_offsets(tokenizer, text)
    assert len(encoding.parts) == tokens._CHUNKS, "the long text was split"
    whole = tokenizer.backend_tokenizer.encode(text, add_special_tokens=True)
    assert encoding.ids == whole.ids == tokens.encode(tokenizer, text)
    chars = [0, 9, 10, 1000, len(text) // 2, len(text) // 2 + 3, len(text) - 4]
    assert encoding.token_indices_of_chars(chars) == [whole.char_to_token(c) for c in chars]


def test_a_key_value_haystack_is_chunked_too(smollm2_tokenizer):
    """JSON-like text (quoted UUIDs, no space before a letter) is cut at spaces between non-spaces."""
    import uuid

    rng = random.Random(1)
    pairs = [f'"{uuid.UUID(int=rng.getrandbits(128))}": "{uuid.UUID(int=rng.getrandbits(128))}"' for _ in range(6000)]
    text = "{" + ", ".join(pairs) + "}\nWhich value?"
    assert len(text) > tokens._PARALLEL_CHARS
    encoding = tokens.encode_with_offsets(smollm2_tokenizer, text)
    assert len(encoding.parts) == tokens._CHUNKS
    assert encoding.ids == tokens.encode(smollm2_tokenizer, text)


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_an_edited_end_reencodes_only_the_last_chunk(which, tiny, smollm2_tokenizer):
    tokenizer = tiny.tokenizer if which == "tiny" else smollm2_tokenizer
    text = _text(tokens._PARALLEL_CHARS + 50_000)
    first = tokens.encode_with_offsets(tokenizer, text)
    edited = text[:-200] + " and so on to the end of the day\nWhat is the key? The key is"
    again = tokens.encode_with_offsets(tokenizer, edited, previous=first)
    assert again.reused_chars > 0.9 * len(text)
    whole = tokenizer.backend_tokenizer.encode(edited, add_special_tokens=True)
    assert again.ids == whole.ids
    chars = [0, 1000, len(edited) // 2, len(edited) - 100, len(edited) - 3]
    assert again.token_indices_of_chars(chars) == [whole.char_to_token(c) for c in chars]
    early = "Changed" + text[7:]
    redone = tokens.encode_with_offsets(tokenizer, early, previous=first)
    assert redone.reused_chars == 0 and redone.ids == tokens.encode(tokenizer, early)


def test_the_fast_path_verifies_once_on_typical_prompts(smollm2_tokenizer):
    counts = []
    for name in ("passkey", "niah_single_2", "nt_single", "vt", "bio_retrieve", "db_count"):
        for length in (3000, 5000, 7001):
            sample = parse_task(name).task.generate(smollm2_tokenizer, length, 0.4, seed=0, index=1)
            assert sample.meta["realized_tokens"] == length
            counts.append(sample.meta["fit_full_tokenizations"])
    assert max(counts) <= 3 and sorted(counts)[len(counts) // 2] == 1, counts


@pytest.mark.parametrize("name", ["passkey", "niah_single_2", "nt_single"])
def test_a_128k_prompt_is_exact(smollm2_tokenizer, name):
    sample = parse_task(name).task.generate(smollm2_tokenizer, 131072, 0.5, seed=0, index=0)
    assert tokens.count(smollm2_tokenizer, sample.prompt) == 131072 == sample.meta["realized_tokens"]


def test_local_correction_handles_a_glue_that_costs_a_token(tiny):
    """A JSON-like haystack glued by newlines: a one-token deficit cannot be filled after a newline, so
    the fitter steps back a unit; the result is still exact."""
    for length in range(990, 1010):
        sample = parse_task("nt_conditional").task.generate(tiny.tokenizer, length, 0.0, seed=0, index=0)
        assert tokens.count(tiny.tokenizer, sample.prompt) == length


def test_needles_sharing_a_slot_keep_their_rank_order(tiny):
    needles = [
        fitting.Needle("third", 0.5, rank=2),
        fitting.Needle("first", 0.5, rank=0),
        fitting.Needle("second", 0.5, rank=1),
    ]
    fitted = fitting.fit_haystack(
        tiny.tokenizer, 300, head="H\n", question="\nQ?", needles=needles, unit=lambda i: "The sky is blue."
    )
    assert fitted.context.index("first") < fitted.context.index("second") < fitted.context.index("third")


def test_distractor_haystack_outlasts_the_key_space(tiny, monkeypatch):
    """A haystack with more distractor needles than distinct keys still fits (1M tokens of niah_multikey_2 hold
    more distractors than there are adjective-noun pairs); no distractor reuses the asked key."""
    from longreach.tasks import parse_task, words

    few = ["red-fox", "blue-owl", "grey-cat", "tan-elk"]
    monkeypatch.setitem(words.VALUE_MAKERS, "words", lambda rng: rng.choice(few))
    task = parse_task("niah_multikey_2").task
    sample = task.generate(tiny.tokenizer, 1024, 0.5, seed=0, index=0)
    asked = [key for key in few if f"for {key} mentioned" in sample.question]
    assert len(asked) == 1
    assert sample.context.count(f"for {asked[0]} is:") == 1
    assert sample.context.count("One of the special magic") > len(few)


def test_prose_draws_the_words_random_choice_would(monkeypatch):
    """The inlined word draw consumes the RNG exactly as ``random.Random.choice`` (same sentences as before)."""
    from longreach.tasks import filler

    rng_ref = random.Random(11)
    monkeypatch.setattr(filler, "_choice", lambda bits, seq: rng_ref.choice(seq))
    reference = [filler.prose_sentence(rng_ref) for _ in range(3000)]
    monkeypatch.undo()
    rng = random.Random(11)
    assert [filler.prose_sentence(rng) for _ in range(3000)] == reference
