"""Perplexity: token losses equal transformers' loss, sliding windows equal the recipe of transformers' perplexity
guide, text spans are exact and nested, and `longreach ppl` stores, reports and resumes like every run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from longreach import cli, tokens
from longreach.engine import Engine
from longreach.engine.losses import token_nll
from longreach.errors import LongreachError
from longreach.generation import LossRequest
from longreach.methods import parse_stack
from longreach.results import ResultsStore
from longreach.tasks import parse_task

# A plain text of varied words (tens of thousands of tokens); no corpus ships with the tests.
WORDS = "river stone market lantern orchard thunder copper violin harbor meadow ledger canyon".split()
TEXT = " ".join(f"{WORDS[i % 12]} {WORDS[(i * 7) % 12]} number {i}." for i in range(1500))


@pytest.fixture()
def text_file(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(TEXT)
    return path


def _ids(tiny, n: int) -> list[int]:
    return tokens.encode(tiny.tokenizer, TEXT)[:n]


def test_full_context_losses_equal_transformers_loss(tiny):
    ids = _ids(tiny, 300)
    with torch.no_grad():
        ours = token_nll(tiny.model, ids)
        reference = tiny.model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss
    assert ours.shape == (299,)
    assert float(ours.mean()) == pytest.approx(float(reference), rel=1e-5)


def test_sliding_windows_score_every_token_once_as_transformers_perplexity_guide_does(tiny):
    ids, window, stride = _ids(tiny, 300), 128, 48
    with torch.no_grad():
        ours = token_nll(tiny.model, ids, window, stride)
        # the guide's loop: windows of `window` tokens moving by `stride`; only the targets after the previous
        # window's end count (labels -100 elsewhere); the mean loss of a window times its scored targets
        total, scored, previous_end = 0.0, 0, 0
        for begin in range(0, len(ids), stride):
            end = min(begin + window, len(ids))
            chunk = torch.tensor([ids[begin:end]])
            labels = chunk.clone()
            labels[:, : -(end - previous_end)] = -100
            counted = int((labels[:, 1:] != -100).sum())
            total += float(tiny.model(input_ids=chunk, labels=labels).loss) * counted
            scored, previous_end = scored + counted, end
            if end == len(ids):
                break
    assert ours.shape == (len(ids) - 1,) and scored == len(ids) - 1
    assert float(ours.sum()) == pytest.approx(total, rel=1e-5)
    full = token_nll(tiny.model, ids)
    assert torch.allclose(ours[: window - 1], full[: window - 1], atol=1e-5), "the first window is the full read"
    assert not torch.allclose(ours, full, atol=1e-3), "later tokens lost their far context"


def test_position_methods_change_the_losses_and_cache_methods_and_readers_are_refused(tiny):
    engine = Engine(tiny)
    text = tiny.tokenizer.decode(_ids(tiny, 400)[1:])
    none = engine.losses(LossRequest(text), parse_stack("none"))
    yarn = engine.losses(LossRequest(text), parse_stack("yarn:factor=4"))
    assert none.tokens == tokens.count(tiny.tokenizer, text) and len(none.nll) == none.tokens - 1
    assert none.seconds > 0 and none.peak_rss_mb > 0
    assert max(abs(a - b) for a, b in zip(none.nll, yarn.nll, strict=True)) > 1e-3
    for spec in ("snapkv", "infiniretri"):
        with pytest.raises(LongreachError, match="perplexity cannot run"):
            engine.losses(LossRequest(text), parse_stack(spec))


@pytest.mark.parametrize("which", ["tiny", "smollm2"])
def test_text_spans_are_exact_nested_and_consecutive(tiny, smollm2_tokenizer, text_file, which):
    tokenizer = tiny.tokenizer if which == "tiny" else smollm2_tokenizer
    task = parse_task(f"text:path={text_file}").task
    short, long = (task.generate(tokenizer, n, 0.0, 0, 0) for n in (500, 1000))
    second = task.generate(tokenizer, 500, 0.0, 0, 1)
    assert [tokens.count(tokenizer, s.context) for s in (short, long, second)] == [500, 1000, 500]
    assert long.context.startswith(short.context), "a shorter length reads the start of the longer one"
    assert second.meta["first_token"] == 500 and second.context.strip() not in short.context
    assert task.generate(tokenizer, 500, 0.0, 7, 0) == short, "the same span whatever the seed"


def test_bad_text_input_fails_in_one_line(tiny, text_file, tmp_path):
    with pytest.raises(LongreachError, match="no such file"):
        parse_task(f"text:path={tmp_path / 'missing.txt'}")
    with pytest.raises(LongreachError, match="stride 64 is larger than the window 32"):
        parse_task(f"text:path={text_file}:mode=sliding:window=32:stride=64")
    task = parse_task(f"text:path={text_file}").task
    with pytest.raises(LongreachError, match="the file holds .* tokens"):
        task.generate(tiny.tokenizer, 200_000, 0.0, 0, 1)


def run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_ppl_command_stores_reports_and_resumes(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["ppl", "--model", "tiny-llama", "--text", str(text_file), "--lengths", "256,512", "--bucket", "64"]
    argv += ["--method", "none", "--method", "yarn:factor=4", "--samples", "2", "--out", str(out), "--quiet"]
    code, stdout, _ = run(argv, capsys)
    assert code == 0 and "Perplexity by length" in stdout and "8 cells run" in stdout
    with ResultsStore(out) as store:
        rows = store.rows()
    assert len(rows) == 8 and {r["prompt"] for r in rows} == {"raw"} and {r["status"] for r in rows} == {"ok"}
    for row in rows:
        assert row["perplexity"] == pytest.approx(math.exp(row["nll"])) and row["score"] is None
        assert len(row["series"]["loss_by_position"]) == math.ceil((row["context_length"] - 1) / 64)
    report = json.loads((out / "report.json").read_text())
    group = next(s for s in report["summary"] if s["row"] == "none" and s["context_length"] == 512)
    cells = [r["nll"] for r in rows if r["method"] == "none" and r["context_length"] == 512]
    assert group["metrics"]["perplexity"]["value"] == pytest.approx(math.exp(sum(cells) / 2))
    names = report["figures"]["perplexity"]
    assert (
        any(n.startswith("perplexity_") for n in names) and sum(n.startswith("loss_by_position_") for n in names) == 2
    )
    assert all((out / name).is_file() for name in names)
    code, _, err = run(argv, capsys)
    assert code == 2 and "--resume" in err, "a second run into the same folder must ask for --resume"
    code, stdout, _ = run(argv + ["--resume"], capsys)
    assert code == 0 and "0 cells run, 8 already done" in stdout, "resumed: nothing is read twice"


def test_ppl_sliding_mode_and_refusals(text_file, tmp_path, capsys):
    base = ["ppl", "--model", "tiny-llama", "--text", str(text_file), "--lengths", "512", "--quiet"]
    code, _, _ = run(
        base + ["--mode", "sliding", "--window", "128", "--stride", "64", "--out", str(tmp_path / "s")], capsys
    )
    assert code == 0
    with ResultsStore(tmp_path / "s") as store:
        (row,) = store.rows()
    assert (row["meta"]["window"], row["meta"]["stride"]) == (128, 64)
    code, _, err = run(base + ["--method", "snapkv", "--out", str(tmp_path / "c")], capsys)
    assert code == 2 and "perplexity cannot run snapkv" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(base + ["--mode", "diagonal", "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "diagonal" in err and len(err.strip().splitlines()) == 1
