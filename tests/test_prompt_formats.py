"""Prompt formats in every task: the whole formatted prompt (chat template included) is exactly N tokens."""

import json

import pytest

from longreach import tokens
from longreach.prompts import RAW, chat_format
from longreach.tasks import TASKS, Sample, parse_task
from longreach.tasks.fitting import Fitted

GENERATED = [name for name in TASKS.names() if TASKS.get(name).family.generated]


@pytest.fixture(scope="module")
def smollm2_chat(smollm2_tokenizer):
    return chat_format(smollm2_tokenizer)


@pytest.fixture(scope="module")
def bos_tokenizer():
    """The tiny BPE with a BOS it adds by itself and a chat template that writes ``{{ bos_token }}`` too."""
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    from longreach.models.tiny import tiny_tokenizer

    backend = Tokenizer.from_str(tiny_tokenizer().backend_tokenizer.to_str())
    backend.add_special_tokens(["<s>"])
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    tokenizer.chat_template = "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    return tokenizer


@pytest.mark.parametrize("name", GENERATED)
def test_chat_prompt_is_exact_and_wraps_the_parts(smollm2_tokenizer, smollm2_chat, name):
    task = parse_task(name).task
    for length in (1024, 2047):
        sample = task.generate(smollm2_tokenizer, length, 0.5, seed=0, index=1, frame=smollm2_chat)
        assert tokens.count(smollm2_tokenizer, sample.prompt) == length == sample.meta["realized_tokens"]
        assert sample.frame == smollm2_chat
        assert sample.answer_prefix, "every family splits off the text the model continues from"
        assert sample.prompt.startswith(smollm2_chat.prefix + sample.context)
        assert sample.prompt.endswith(sample.question + smollm2_chat.suffix + sample.answer_prefix.lstrip())
        assert sample.prompt[: sample.question_offset] == smollm2_chat.prefix + sample.context
        assert sample.prompt[sample.question_offset :].startswith(sample.question)


@pytest.mark.parametrize("name", GENERATED)
def test_raw_prompt_is_the_parts_joined(tiny, name):
    sample = parse_task(name).task.generate(tiny.tokenizer, 1000, 0.5, seed=0, index=0)
    assert sample.frame == RAW
    assert sample.prompt == sample.context + sample.question + sample.answer_prefix
    assert sample.question_offset == len(sample.context)
    assert not sample.question.endswith(sample.answer_prefix), "the question no longer carries the answer prefix"


def test_chat_keeps_the_needle_offsets_and_the_probe(smollm2_tokenizer, smollm2_chat):
    task = parse_task("niah_multikey_1").task
    raw = task.generate(smollm2_tokenizer, 1500, 0.3, seed=2, index=0)
    chat = task.generate(smollm2_tokenizer, 1500, 0.3, seed=2, index=0, frame=smollm2_chat)
    assert (chat.question, chat.answer_prefix, chat.answers) == (raw.question, raw.answer_prefix, raw.answers)
    ids = tokens.encode(smollm2_tokenizer, chat.prompt)
    first, last = chat.meta["needle_token_offsets"][0]
    assert chat.answers[0] in smollm2_tokenizer.decode(ids[first:last])


def test_a_template_that_writes_the_bos_the_tokenizer_adds(bos_tokenizer):
    frame = chat_format(bos_tokenizer)
    assert frame.prefix == "[INST] ", "the BOS text is left to the tokenizer"
    for name in ("passkey", "niah_single_2", "nt_single"):
        sample = parse_task(name).task.generate(bos_tokenizer, 700, 0.5, seed=0, index=0, frame=frame)
        ids = tokens.encode(bos_tokenizer, sample.prompt)
        assert len(ids) == 700 and ids.count(bos_tokenizer.bos_token_id) == 1 and ids[0] == bos_tokenizer.bos_token_id


def test_from_fit_carries_the_answer_prefix_and_frame(smollm2_chat):
    fitted = Fitted("ctx", "\nQ?", 9, 0, [], [], answer_prefix=" A:", frame=smollm2_chat)
    sample = Sample.from_fit(fitted, task="t", answers=("a",), max_new_tokens=4)
    assert sample.prompt == fitted.prompt == smollm2_chat.prefix + "ctx\nQ?" + smollm2_chat.suffix + "A:"
    assert Sample("t", "ctx", "\nQ?", ("a",), 4, answer_prefix=" A:").prompt == "ctx\nQ? A:"


def test_jsonl_answer_prefix_and_chat_frame_fit_by_cutting_the_middle(smollm2_tokenizer, smollm2_chat, tmp_path):
    context = " ".join(f"word{i}" for i in range(3000))
    line = {"context": context, "question": "Which word is last?", "answers": ["word2999"], "answer_prefix": " It is"}
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps(line) + "\n")
    task = parse_task(f"jsonl:{path}").task
    raw = task.generate(smollm2_tokenizer, 100_000, 0.0, seed=0, index=0)
    assert raw.prompt == context + "\n\nWhich word is last? It is" and raw.meta["truncated_tokens"] == 0
    chat = task.generate(smollm2_tokenizer, 512, 0.0, seed=0, index=0, frame=smollm2_chat)
    assert tokens.count(smollm2_tokenizer, chat.prompt) == 512 == chat.meta["realized_tokens"]
    assert chat.meta["truncated_tokens"] > 0 and chat.context.startswith("word0 word1")
    assert chat.prompt.endswith("Which word is last?" + smollm2_chat.suffix + "It is")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({**line, "answer_prefix": 3}) + "\n")
    with pytest.raises(Exception, match="'answer_prefix' must be a string"):
        parse_task(f"jsonl:{bad}")
