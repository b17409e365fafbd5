"""``longreach serve`` driven by real clients: a live server on 127.0.0.1 (tiny-llama, fp32) answers the official
``openai`` package, ``longreach eval --backend openai`` (same predictions as the local ``hf`` backend), raw HTTP
with bad input of every kind (a 4xx error object naming the field, and the server still answers), a full queue
(429) and a client that leaves mid-stream (its KV bytes are freed)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from helpers import SMOLLM2_DTYPE, run_config
from longreach.engine import Engine
from longreach.generation import Request
from longreach.methods import parse_stack
from longreach.models import load_model
from longreach.runner import run_sweep

KEY = "test-key"
STACKS = ("none", "yarn:factor=4", "quantized")
PROMPT = "The pass key is 4242. Remember it. What is the pass key? The pass key is"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, *options: str, dtype: str = "fp32") -> tuple[subprocess.Popen, str]:
    """``longreach serve`` in a subprocess; returns it and its root URL once /health answers."""
    port = free_port()
    command = [sys.executable, "-m", "longreach.cli", "serve", "--model", model, "--dtype", dtype, "--port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    process = subprocess.Popen([*command, *options], env=env, stderr=subprocess.PIPE, text=True)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"longreach serve exited: {process.stderr.read()}")
        try:
            if httpx.get(f"{root}/health", timeout=1).status_code == 200:
                return process, root
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("longreach serve did not start in 120 s")


def stop_server(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="module")
def server():
    options = ["--api-key", KEY, "--max-concurrency", "4", "--max-queue", "4", "--kv-budget-mb", "1"]
    for stack in STACKS:
        options += ["--method", stack]
    process, root = start_server("tiny-llama", *options)
    yield root
    stop_server(process)
    assert process.returncode in (0, -15), "the server shut down cleanly"


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def metric(root: str, name: str) -> float:
    text = httpx.get(f"{root}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))


def test_models_list_one_id_per_stack_with_batching_said(client):
    cards = {card.id: card for card in client.models.list().data}
    assert list(cards) == ["tiny-llama", "tiny-llama+yarn:factor=4", "tiny-llama+quantized"]
    extra = {name: card.model_extra["longreach"] for name, card in cards.items()}
    assert extra["tiny-llama"]["batched"] and extra["tiny-llama+yarn:factor=4"]["batched"]
    assert (
        not extra["tiny-llama+quantized"]["batched"]
        and "not a plain cache" in extra["tiny-llama+quantized"]["serial_reason"]
    )
    assert cards["tiny-llama+yarn:factor=4"].model_extra["max_model_len"] == 4 * 2048


@pytest.mark.parametrize("stack", STACKS)
def test_greedy_completions_match_the_engine_with_exact_usage(client, stack):
    name = "tiny-llama" if stack == "none" else f"tiny-llama+{stack}"
    answer = client.completions.create(model=name, prompt=PROMPT, max_tokens=12, temperature=0)
    expected = Engine(load_model("tiny-llama", "fp32")).generate(Request(PROMPT, 12), parse_stack(stack))
    assert answer.choices[0].text == expected.text
    assert answer.usage.prompt_tokens == expected.prompt_tokens
    assert answer.usage.completion_tokens == expected.new_tokens == 12
    assert answer.choices[0].finish_reason == "length"


def test_chat_streaming_stop_and_seeded_sampling(client):
    whole = client.completions.create(model="tiny-llama", prompt=PROMPT, max_tokens=10, temperature=0)
    # tiny-llama has no chat template: the chat API reads the messages' contents joined (--prompt auto)
    chat = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": PROMPT}], max_tokens=10, temperature=0
    )
    assert chat.choices[0].message.content == whole.choices[0].text
    stream = client.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == 10 and chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    streamed = client.completions.create(model="tiny-llama", prompt=PROMPT, max_tokens=10, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text
    text = whole.choices[0].text
    stop = " " + text.split()[1]  # stops apply as in the engine: after some non-blank output
    cut = client.completions.create(model="tiny-llama", prompt=PROMPT, max_tokens=10, temperature=0, stop=[stop])
    assert cut.choices[0].text == text[: text.find(stop, 1)] and cut.choices[0].finish_reason == "stop"
    sampled = [
        client.completions.create(model="tiny-llama", prompt=PROMPT, max_tokens=10, temperature=1.0, seed=seed)
        .choices[0]
        .text
        for seed in (3, 3, 4)
    ]
    assert sampled[0] == sampled[1] != sampled[2]


def test_openai_error_objects(client):
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="nope", prompt="x", max_tokens=2)
    assert missing.value.body["param"] == "model" and "tiny-llama+quantized" in missing.value.body["message"]
    with pytest.raises(openai.BadRequestError) as negative:
        client.completions.create(model="tiny-llama", prompt="x", max_tokens=-1)
    assert negative.value.body["param"] == "max_tokens"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=client.base_url, api_key="wrong", max_retries=0).models.list()


LONG = "word " * 1000  # 3001 tokens: past tiny-llama's 2048-token window, within yarn:factor=4's 8192
BAD = [
    # (body or raw bytes, expected status, the param the error names)
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (b"", 400, None),
    ({"model": "tiny-llama"}, 400, "prompt"),
    ({"model": "nope", "prompt": "x"}, 404, "model"),
    ({"model": 7, "prompt": "x"}, 400, "model"),
    ({"model": "tiny-llama", "prompt": 5}, 400, "prompt"),
    ({"model": "tiny-llama", "prompt": ""}, 400, "prompt"),
    ({"model": "tiny-llama", "prompt": []}, 400, "prompt"),
    ({"model": "tiny-llama", "prompt": [10**9]}, 400, "prompt"),
    ({"model": "tiny-llama", "prompt": "x", "max_tokens": -5}, 400, "max_tokens"),
    ({"model": "tiny-llama", "prompt": "x", "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny-llama", "prompt": "x", "max_tokens": "ten"}, 400, "max_tokens"),
    ({"model": "tiny-llama", "prompt": "x", "max_tokens": 10**12}, 400, "max_tokens"),
    ({"model": "tiny-llama", "prompt": "x", "max_tokens": 2.5}, 400, "max_tokens"),
    ({"model": "tiny-llama", "prompt": "x", "temperature": -1}, 400, "temperature"),
    ({"model": "tiny-llama", "prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ({"model": "tiny-llama", "prompt": "x", "top_p": 0}, 400, "top_p"),
    ({"model": "tiny-llama", "prompt": "x", "stop": 3}, 400, "stop"),
    ({"model": "tiny-llama", "prompt": "x", "stream": "yes"}, 400, "stream"),
    ({"model": "tiny-llama", "prompt": "x", "n": 2}, 400, "n"),
    ({"model": "tiny-llama", "prompt": "x", "echo": True}, 400, "echo"),
    ({"model": "tiny-llama", "prompt": "x", "logprobs": 3}, 400, "logprobs"),
    ({"model": "tiny-llama", "prompt": LONG, "max_tokens": 4}, 400, "prompt"),
    ({"model": "tiny-llama+yarn:factor=4", "prompt": LONG, "max_tokens": 4}, 400, "max_tokens"),
]


@pytest.mark.parametrize(("body", "status", "param"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_completions_get_a_4xx_naming_the_field_and_the_server_lives(server, body, status, param):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**auth(), "Content-Type": "application/json"}
    answer = httpx.post(f"{server}/v1/completions", content=data, headers=headers, timeout=30)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param and error["message"]
    assert httpx.get(f"{server}/health").status_code == 200


def test_budget_refusal_says_how_many_tokens_fit(server):
    body = {"model": "tiny-llama+yarn:factor=4", "prompt": LONG, "max_tokens": 4}
    answer = httpx.post(f"{server}/v1/completions", json=body, headers=auth())
    assert "holds 2048 tokens per request" in answer.json()["error"]["message"]  # 1 MiB / 512 B per token


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/chat/completions", {"model": "tiny-llama", "messages": []}, 400, "messages"),
        (
            "/v1/chat/completions",
            {"model": "tiny-llama", "messages": [{"role": "wizard", "content": "x"}]},
            400,
            "messages.0.role",
        ),  # fmt: skip
        (
            "/v1/chat/completions",
            {"model": "tiny-llama", "messages": [{"role": "user", "content": 5}]},
            400,
            "messages.0.content",
        ),  # fmt: skip
        ("/tokenize", {"prompt": 5}, 400, "prompt"),
        ("/tokenize", {}, 400, "prompt"),
        ("/detokenize", {"tokens": [-1]}, 400, "tokens"),
        ("/detokenize", {"tokens": "abc"}, 400, "tokens"),
        ("/v1/nothing", {}, 404, None),
    ],
)
def test_bad_input_on_every_route(server, path, body, status, param):
    answer = httpx.post(f"{server}{path}", json=body, headers=auth())
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == param
    assert httpx.get(f"{server}/health").status_code == 200


def test_oversized_body_wrong_key_and_tokenize(server):
    huge = httpx.post(f"{server}/v1/completions", content=b"x" * (17 * 2**20), headers=auth())
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "body_too_large"
    assert httpx.post(f"{server}/v1/completions", json={"prompt": "x"}).status_code == 401
    ids = httpx.post(f"{server}/tokenize", json={"model": "tiny-llama", "prompt": "hello world"}, headers=auth())
    tokens = ids.json()["tokens"]
    assert ids.json()["count"] == len(tokens) > 0
    text = httpx.post(f"{server}/detokenize", json={"tokens": tokens}, headers=auth()).json()["prompt"]
    assert text == "hello world"
    assert httpx.get(f"{server}/health").status_code == 200


def test_a_full_queue_answers_429_with_retry_after(server):
    body = {"model": "tiny-llama+quantized", "prompt": PROMPT, "max_tokens": 400, "temperature": 0}

    def one(_: int) -> httpx.Response:
        return httpx.post(f"{server}/v1/completions", json=body, headers=auth(), timeout=120)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))
    codes = sorted(a.status_code for a in answers)
    assert set(codes) == {200, 429} and codes.count(200) >= 4, codes
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.headers["retry-after"] == "1" and refused.json()["error"]["type"] == "rate_limit_error"


def test_a_client_leaving_mid_stream_frees_its_kv_bytes(server):
    before = metric(server, "longreach_generation_tokens_total")
    body = {"model": "tiny-llama", "prompt": PROMPT, "max_tokens": 1900, "temperature": 0, "stream": True}
    with httpx.stream("POST", f"{server}/v1/completions", json=body, headers=auth(), timeout=30) as answer:
        for count, _ in enumerate(answer.iter_lines()):
            if count == 5:
                assert metric(server, "longreach_kv_bytes_in_use") > 0
                break
    deadline = time.monotonic() + 20
    while metric(server, "longreach_running_requests") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(server, "longreach_kv_bytes_in_use") == 0 == metric(server, "longreach_kv_bytes_reserved")
    assert metric(server, "longreach_generation_tokens_total") - before < 1900, "the generation was cancelled"


@pytest.mark.parametrize("task", ["passkey", "niah_single_2"])
def test_eval_through_the_server_matches_the_local_backend(tmp_path, server, task):
    """The same instances, greedy, with and without a method stack: identical predictions and scores."""
    grid = dict(tasks=(task,), lengths=(300, 500), depths=(0.25, 0.75), methods=("none", "yarn:factor=4"))
    local = run_sweep(run_config(tmp_path / "hf", **grid), show_progress=False)
    served = run_config(tmp_path / "served", **grid, base_url=f"{server}/v1", concurrency=4, timeout=60, api_key=KEY)
    remote = run_sweep(served, show_progress=False)
    assert local.failed == remote.failed == 0 and local.ran == remote.ran == 8
    cells = {}
    for name in ("hf", "served"):
        report = json.loads((tmp_path / name / "report.json").read_text())
        cells[name] = {(c["method"], c["context_length"], c["depth"]): (c["prediction"], c["score"]) for c in
                       report["cells"]}  # fmt: skip
    assert cells["served"] == cells["hf"]


@pytest.mark.slow
def test_smollm2_served_answers_as_the_engine():
    """SmolLM2-135M (Q4_1 GGUF dequantized to bf16, or fp32 on a CPU without fast bf16) behind the server: a greedy
    chat answer equals the engine's."""
    process, root = start_server("smollm2-135m", dtype=SMOLLM2_DTYPE)
    try:
        client = openai.OpenAI(base_url=f"{root}/v1", api_key="none", max_retries=0)
        answer = client.completions.create(model="smollm2-135m", prompt=PROMPT, max_tokens=8, temperature=0)
        loaded = load_model("smollm2-135m", SMOLLM2_DTYPE)
        expected = Engine(loaded).generate(Request(PROMPT, 8), parse_stack("none"))
        assert answer.choices[0].text == expected.text and answer.usage.prompt_tokens == expected.prompt_tokens
        chat = client.chat.completions.create(
            model="smollm2-135m", messages=[{"role": "user", "content": "What is 2+2?"}], max_tokens=8, temperature=0
        )
        assert chat.usage.prompt_tokens > 10, "the chat template wrapped the message"
    finally:
        stop_server(process)
