"""The training loop on tiny-llama: the saved folder loads in eval and stacks with position methods, LoRA keeps float32
adapters over the model's weights, checkpoints survive kill -9 and a resumed run reads the same data, train.json
records the run, and bad settings fail before the model loads."""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import longreach.cli as cli
from longreach.errors import LongreachError
from longreach.methods import parse_stack
from longreach.models import load_model
from longreach.models.tiny import tiny_llama, tiny_tokenizer
from longreach.prompts import RAW
from longreach.tasks import parse_task
from longreach.tasks.rng import stream
from longreach.train.data import TRAIN_SEED_OFFSET, open_documents, task_document
from longreach.train.loop import TrainConfig, parse_lora, train


def config(tmp_path: Path, **changes) -> TrainConfig:
    base = TrainConfig(
        "tiny-llama", "plain", "tasks:passkey", 128, 2, tmp_path / "run", batch_tokens=256, dtype="fp32", quiet=True
    )
    return dataclasses.replace(base, **changes)


def run_cli(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_a_trained_folder_loads_in_eval_and_stacks_with_a_position_method(tmp_path, capsys):
    summary = train(config(tmp_path, recipe="abf:theta=40000"))
    assert summary.model_dir == tmp_path / "run" / "model"
    loaded = load_model(str(summary.model_dir), "fp32")
    assert loaded.weights == (
        "random tiny Llama in fp32, trained by longreach train (abf:theta=40000, LoRA r=16 merged), saved in "
        "fp32; read in fp32"
    ), "a result read from the folder says what its weights are"
    assert loaded.tokenizer.encode("The pass key is 12345.") == tiny_tokenizer().encode("The pass key is 12345.")
    ids = torch.tensor([tiny_tokenizer().encode("The grass is green. " * 20)])
    with parse_stack("yarn:factor=2").applied(loaded):
        logits = loaded.model(input_ids=ids).logits
    assert torch.isfinite(logits).all()
    argv = ["eval", "--model", str(summary.model_dir), "--task", "passkey", "--lengths", "256", "--depths", "0.5"]
    argv += ["--method", "yarn:factor=2", "--out", str(tmp_path / "eval"), "--dtype", "fp32", "--quiet"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    cells = json.loads((tmp_path / "eval" / "report.json").read_text())["cells"]
    assert [c["method"] for c in cells] == ["yarn"]  # factor=2 is its default
    assert "0 failed" in out


def test_lora_trains_float32_adapters_over_bf16_weights_and_merges_them(tmp_path):
    summary = train(config(tmp_path, dtype="bf16", lr=1e-2, steps=3))
    trained = load_model(str(summary.model_dir), "bf16").model
    assert trained.dtype == torch.bfloat16
    base = tiny_llama(torch.bfloat16)
    changed = [n for n, p in trained.named_parameters() if not torch.equal(p, dict(base.named_parameters())[n])]
    assert any("q_proj" in n for n in changed) and any("down_proj" in n for n in changed)  # attention and MLP
    assert not any("embed_tokens" in n or "norm" in n for n in changed)  # only LoRA's targets move
    states = torch.load(next((tmp_path / "run" / "checkpoints").glob("step-*")) / "trainable.pt")
    assert states and all("lora_" in name and t.dtype == torch.float32 for name, t in states.items())


def test_full_fine_tuning_trains_every_weight(tmp_path):
    summary = train(config(tmp_path, lora="none", lr=1e-3, steps=1))
    trained = load_model(str(summary.model_dir), "fp32").model
    base = tiny_llama(torch.float32)
    assert not torch.equal(trained.model.norm.weight, base.model.norm.weight)


def test_train_json_records_throughput_memory_and_the_loss_curve(tmp_path):
    train(config(tmp_path, steps=3, batch_tokens=300))
    record = json.loads((tmp_path / "run" / "train.json").read_text())
    assert record["steps"] == 3 and len(record["losses"]) == 3
    assert record["step_tokens"] == [384, 384, 384]  # 300 tokens need 3 rows of 128: accumulation over rows
    assert record["tokens"] == 3 * 384 and record["tokens_per_s"] > 0 and record["peak_rss_mb"] > 50
    assert record["provenance"]["git_sha"] and record["recipe"] == "plain"
    assert record["settings"]["data"] == "tasks:passkey"


def test_training_lowers_the_loss(tmp_path):
    summary = train(config(tmp_path, steps=12, lr=3e-3, batch_tokens=128, lora="none"))
    losses = json.loads((summary.out / "train.json").read_text())["losses"]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.5


def test_a_run_killed_with_sigkill_resumes_to_the_same_result(tmp_path):
    settings = {"length": 128, "batch_tokens": 128, "steps": 30, "save_every": 1, "lr": 1e-3}
    killed = config(tmp_path, **settings, out=tmp_path / "killed")
    script = (
        "import sys; from pathlib import Path; from longreach.train.loop import TrainConfig, train; "
        f"train(TrainConfig('tiny-llama', 'plain', 'tasks:passkey', 128, 30, Path({str(killed.out)!r}), "
        "lr=1e-3, batch_tokens=128, dtype='fp32', save_every=1, quiet=True))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and not (killed.out / "checkpoints/step-000004").is_dir():
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    _, err = process.communicate()
    assert process.returncode == -signal.SIGKILL, f"killed mid-run: {err.decode()[-2000:]}"
    assert not (killed.out / "model").exists()
    torch.set_num_threads(1)
    resumed = train(dataclasses.replace(killed, resume=True, save_every=10))  # save_every may change on resume
    record = json.loads((killed.out / "train.json").read_text())
    assert resumed.steps == 30 and record["resumed_at"] and 4 <= record["resumed_at"][0] < 30
    whole = config(tmp_path, **{**settings, "save_every": 30}, out=tmp_path / "whole")
    reference = json.loads((train(whole).out / "train.json").read_text())
    assert record["losses"] == pytest.approx(reference["losses"], rel=1e-4)  # same data order, same states


def test_resume_refuses_changed_settings_and_a_new_run_refuses_a_used_folder(tmp_path):
    train(config(tmp_path))
    with pytest.raises(LongreachError, match="already holds a training run"):
        train(config(tmp_path))
    with pytest.raises(LongreachError, match="--resume: length was 128"):
        train(config(tmp_path, length=256, resume=True))
    again = train(config(tmp_path, resume=True, quiet=True))  # a finished run resumes to its end: nothing to do
    assert again.steps == 2


def test_bad_settings_fail_in_one_line_before_loading(tmp_path):
    for changes, message in [
        ({"recipe": "abff"}, "did you mean 'abf'"),
        ({"data": "tasks:nope"}, "unknown task"),
        ({"data": "text:/no/such/folder"}, "no such folder"),
        ({"lora": "r=0"}, "r must be >= 1"),
        ({"lora": "rank=4"}, "unknown parameter 'rank'"),
        ({"length": 1}, "--length must be >= 2"),
        ({"device": "gpu"}, "unknown device"),
        ({"model": "no-such-model"}, "unknown model"),
        ({"data": "tasks:bio_multi"}, "task bio_multi does not fit 128 tokens"),  # found before the weights load
    ]:
        with pytest.raises(LongreachError, match=message):
            train(config(tmp_path, **changes))
    assert parse_lora("none") is None and parse_lora("8").r == 8


def test_text_folders_give_documents_and_prompt_response_records_score_the_response(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "sub").mkdir(parents=True)
    (corpus / "book.txt").write_text("The grass is green. " * 30)
    (corpus / "sub" / "notes.md").write_text("# Notes\nThe sky is blue.")
    (corpus / "pairs.jsonl").write_text(
        json.dumps({"text": "A record of text."}) + "\n" + json.dumps({"prompt": "Say hi.", "response": "Hi."}) + "\n"
    )
    (corpus / "ignored.csv").write_text("a,b")
    tokenizer = tiny_tokenizer()
    documents = list(itertools.islice(open_documents(f"text:{corpus}", tokenizer, 64, 0, prompt="raw"), 8))
    assert len({d.tokens for d in documents}) == 4  # four documents, then the next shuffled pass
    pair = next(d for d in documents if d.loss_start)
    assert tokenizer.decode(pair.tokens[pair.loss_start :]) == "Hi.</s>"
    assert all(d.tokens[-1] == tokenizer.eos_token_id and d.kind == "long" for d in documents)
    train(config(tmp_path, data=f"text:{corpus}", length=32, batch_tokens=32))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.jsonl").write_text('{"title": 1}\n')
    with pytest.raises(LongreachError, match="x.jsonl:1: a record needs"):
        next(open_documents(f"text:{bad}", tokenizer, 64, 0))


def test_task_samples_are_exact_length_scored_on_the_answer_with_training_seeds():
    tokenizer = tiny_tokenizer()
    task = parse_task("passkey")
    documents = list(itertools.islice(open_documents("tasks:passkey", tokenizer, 256, 0), 3))
    assert all(len(d.tokens) == 256 for d in documents)
    answer = tokenizer.decode(documents[0].tokens[documents[0].loss_start :])
    assert answer.endswith(".</s>") and answer.strip(" .</s>").isdigit()
    depth = stream(TRAIN_SEED_OFFSET, task.spec, "train-depth", 0).random()
    sample = task.task.generate(tokenizer, 256, depth, TRAIN_SEED_OFFSET, 0)
    assert answer.startswith(task.task.reference_answer(sample))  # sample 0 of seed 10^9 + 0
    evaluation = {task.task.generate(tokenizer, 256, d, seed, 0).answers[0] for seed in range(5) for d in (0, 0.5, 1)}
    assert sample.answers[0] not in evaluation  # evaluation seeds draw other keys
    assert task_document(task, tokenizer, 256, 0, 0, RAW) == documents[0]  # deterministic


def test_a_dequantized_gguf_model_saves_as_plain_weights_and_packed_ones_are_refused(tmp_path):
    from types import SimpleNamespace

    from longreach.models import adapter

    model = tiny_llama(torch.float32)
    model.hf_quantizer = SimpleNamespace(packed_modules={}, quantization_config=SimpleNamespace(quant_method="gguf"))
    model.config.quantization_config = {"quant_method": "gguf"}
    adapter.forget_dequantized_quantizer(model)  # what a GGUF load leaves once its weights are plain tensors
    assert model.hf_quantizer is None and not hasattr(model.config, "quantization_config")
    model.save_pretrained(tmp_path / "saved")
    model.hf_quantizer = SimpleNamespace(
        packed_modules={"x": 1}, quantization_config=SimpleNamespace(quant_method="gguf")
    )
    with pytest.raises(ValueError, match="packed gguf blocks"):
        adapter.forget_dequantized_quantizer(model)
