"""The openai backend against a small fake OpenAI-compatible server on 127.0.0.1 (fast; the real llama.cpp
server is in tests/integration/test_llama_cpp_server.py)."""

from __future__ import annotations

import copy
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from helpers import run_config
from longreach import tokens
from longreach.backends.openai import BackendUnavailable, OpenAIBackend, RemoteTokenizer, RequestRejected
from longreach.errors import LongreachError
from longreach.generation import Request
from longreach.methods import parse_stack
from longreach.models.tiny import tiny_tokenizer
from longreach.runner import RunConfig, run_sweep
from longreach.tasks import parse_task

NONE = parse_stack("none")
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% if not loop.last or not continue_final_message %}"
    "</s>{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def chat_tokenizer():
    """The tiny tokenizer with a small chat template (continue_final_message leaves the last turn open)."""
    tokenizer = copy.deepcopy(tiny_tokenizer())
    tokenizer.chat_template = TEMPLATE
    return tokenizer


def served_text(body: dict, honour_continue: bool) -> str:
    """The text a server reads: the prompt, or the messages through the template."""
    if "prompt" in body:
        return body["prompt"]
    keep_open = honour_continue and body.get("continue_final_message", False)
    return chat_tokenizer().apply_chat_template(
        body["messages"],
        tokenize=False,
        add_generation_prompt=not keep_open,
        continue_final_message=keep_open,
    )


class FakeServer:
    """Answers /v1/completions and /v1/chat/completions with the pass key found in the prompt, and
    /extras/tokenize with the tiny tokenizer. ``script`` lists status codes to send before answering."""

    def __init__(
        self, port: int = 0, delay: float = 0.0, answer_limit: int | None = None, honour_continue: bool = True
    ) -> None:
        self.bodies: list[dict] = []
        self.script: list[int] = []
        self.delay, self.answer_limit = delay, answer_limit
        self.in_flight = self.max_in_flight = self.answered = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path == "/extras/tokenize":
                    return self._send(200, {"tokens": tiny_tokenizer()(body["input"])["input_ids"]})
                if self.path == "/extras/detokenize":
                    return self._send(200, {"text": tiny_tokenizer().decode(body["tokens"])})
                with server.lock:
                    server.bodies.append(body)
                    code = server.script.pop(0) if server.script else 200
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay)
                finally:
                    # Out of flight before answering: once the answer is sent the client may send its next
                    # request, which must not find this one still counted.
                    with server.lock:
                        server.in_flight -= 1
                if code != 200:
                    return self._send(code, {"error": {"message": f"scripted {code}"}})
                prompt = served_text(body, honour_continue)
                found = re.findall(r"pass key is (\d+)", prompt)
                text = f" {found[0]}." if found else " nothing"
                choice = {"text": text} if "prompt" in body else {"message": {"content": text}}
                count = len(tiny_tokenizer()(prompt, add_special_tokens="prompt" in body)["input_ids"])
                usage = {"prompt_tokens": count, "completion_tokens": 3}
                self._send(200, {"choices": [choice], "usage": usage})
                with server.lock:
                    server.answered += 1
                    if server.answer_limit is not None and server.answered >= server.answer_limit:
                        threading.Thread(target=server.stop, daemon=True).start()

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.stop()


def backend(server, **kwargs) -> OpenAIBackend:
    kwargs.setdefault("tokenizer", tiny_tokenizer())
    kwargs.setdefault("backoff", 0.01)
    return OpenAIBackend(server.url, "served-model", **kwargs)


def test_completions_and_chat_are_greedy_and_parsed(server):
    prompt = "The pass key is 4242. What is the pass key? The pass key is"
    out = backend(server).generate([Request(prompt, 12, ("\n",))], NONE)[0]
    assert out.text == " 4242." and out.prompt_tokens == tokens.count(tiny_tokenizer(), prompt)
    body = server.bodies[-1]
    assert body["prompt"] == prompt and body["temperature"] == 0.0 and body["max_tokens"] == 12
    assert body["stop"] == ["\n"] and body["model"] == "served-model"
    turns = ("The pass key is 4242. What is the pass key?", "The pass key is")
    chat = backend(server, api="chat").generate([Request(prompt, 5, chat=turns)], NONE)[0]
    body = server.bodies[-1]
    assert chat.text == " 4242." and body["messages"] == [
        {"role": "user", "content": turns[0]},
        {"role": "assistant", "content": turns[1]},
    ]
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    with pytest.raises(RequestRejected, match="run with --prompt chat"):
        backend(server, api="chat").generate([Request(prompt, 5)], NONE)


def test_429_and_5xx_are_retried_with_backoff(server):
    server.script = [429, 503, 500]
    out = backend(server, retries=3).generate([Request("pass key is 7", 4)], NONE)[0]
    assert out.text == " 7." and len(server.bodies) == 4


def test_a_server_that_keeps_failing_is_unavailable(server):
    server.script = [503] * 5
    with pytest.raises(BackendUnavailable, match=r"did not answer after 3 tries \(HTTP 503"):
        backend(server, retries=2).generate([Request("x", 4)], NONE)


def test_a_rejected_request_is_not_retried(server):
    server.script = [400]
    with pytest.raises(RequestRejected, match="answered 400"):
        backend(server, retries=3).generate([Request("x", 4)], NONE)
    assert len(server.bodies) == 1


def test_at_most_concurrency_requests_are_in_flight(server):
    server.delay = 0.15
    requests = [Request(f"pass key is {i}", 4) for i in range(9)]
    started = time.perf_counter()
    outs = backend(server, concurrency=3).generate(requests, NONE)
    assert [o.text for o in outs] == [f" {i}." for i in range(9)], "answers come back in request order"
    assert server.max_in_flight == 3
    assert time.perf_counter() - started < 9 * 0.15, "requests overlapped"


def test_a_request_past_its_timeout_is_retried_then_unavailable(server):
    server.delay = 1.0
    with pytest.raises(BackendUnavailable, match="did not answer after 2 tries"):
        backend(server, timeout=0.2, retries=1).generate([Request("x", 4)], NONE)


def test_nobody_listening_is_unavailable():
    fake = FakeServer()
    fake.stop()
    with pytest.raises(BackendUnavailable, match="did not answer"):
        OpenAIBackend(fake.url, "m", tokenizer=tiny_tokenizer(), retries=1, backoff=0.01).generate(
            [Request("x", 4)], NONE
        )


def test_methods_cannot_be_applied_to_a_served_model(server):
    with pytest.raises(LongreachError, match="cannot apply"):
        backend(server).generate([Request("x", 4)], _FakeStack())


class _FakeStack:
    repr = "yarn:factor=4"


def test_the_servers_tokenize_endpoint_gives_exact_lengths(server):
    remote = RemoteTokenizer(backend(server).client, "served-model")
    assert remote.kind == "llama.cpp" and remote.specials == 0
    sample = parse_task("niah_single_2").task.generate(remote, 700, 0.5, seed=0, index=0)
    assert tokens.count(tiny_tokenizer(), sample.prompt) == 700 == sample.meta["realized_tokens"]
    assert remote.decode(tiny_tokenizer()("hello world")["input_ids"]) == "hello world"


def _config(tmp_path, url, **overrides) -> RunConfig:
    values = dict(
        model="tiny-llama",
        tasks=("passkey",),
        lengths=(300, 400),
        out=tmp_path / "run",
        depths=(0.0, 0.5, 1.0),
        samples=2,
        backend="openai",
        base_url=url,
        tokenizer="tiny-llama",
        concurrency=2,
    )
    values.update(overrides)
    return run_config(**values)


def test_a_sweep_through_the_server_scores_and_stores_every_cell(tmp_path, server):
    summary = run_sweep(_config(tmp_path, server.url), show_progress=False)
    assert (summary.planned, summary.ran, summary.failed) == (12, 12, 0)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert all(c["score"] == 1.0 for c in report["cells"])
    assert all(c["realized_tokens"] == c["context_length"] for c in report["cells"]), "the server's usage agrees"
    (provenance,) = report["provenance"].values()
    assert provenance["settings"]["backend"].startswith("openai:") and server.url in provenance["model_source"]
    assert {c["backend"] for c in report["cells"]} == {"openai"}, "the backend is an axis of every cell"


def test_a_server_dying_mid_sweep_loses_nothing_and_resume_finishes(tmp_path):
    first = FakeServer(answer_limit=5)
    config = _config(tmp_path, first.url, timeout=2.0, concurrency=1, retries=1)
    with pytest.raises(LongreachError, match="did not answer after .* rerun with --resume"):
        run_sweep(config, show_progress=False)
    import sqlite3

    db = sqlite3.connect(tmp_path / "run" / "results.sqlite")
    assert db.execute("SELECT COUNT(*), SUM(status = 'ok') FROM cells").fetchone() == (5, 5)
    db.close()
    second = FakeServer(port=first.port)
    try:
        summary = run_sweep(_config(tmp_path, second.url, resume=True), show_progress=False)
    finally:
        second.stop()
    assert (summary.skipped, summary.ran, summary.failed) == (5, 7, 0)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert len(report["cells"]) == 12 and all(c["score"] == 1.0 for c in report["cells"])


@pytest.mark.parametrize("honour_continue", [True, False])
def test_chat_api_lengths_are_exact_or_the_cell_says_why(honour_continue):
    """--prompt chat over the chat API: the server's template rebuilds the counted prompt exactly when it keeps the
    answer prefix's turn open (continue_final_message); a server that does not reads other tokens, and the cell
    fails saying so instead of storing a wrong length."""
    from longreach.prompts import chat_format
    from longreach.results import Cell
    from longreach.runner.worker import run_cell

    fake = FakeServer(honour_continue=honour_continue)
    try:
        tokenizer = chat_tokenizer()
        remote = OpenAIBackend(fake.url, "m", api="chat", tokenizer=tokenizer, backoff=0.01)
        task = parse_task("passkey").task
        frame = chat_format(tokenizer)
        cell = Cell("passkey", "none", 500, 0.5, 0, backend="openai", prompt="chat")
        record = run_cell(cell, task, NONE, remote, 0, frame)
    finally:
        fake.stop()
    body = fake.bodies[-1]
    assert body["messages"][-1] == {"role": "assistant", "content": "The pass key is"}
    if honour_continue:
        assert record.status == "ok" and record.metrics["realized_tokens"] == 500 and record.metrics["score"] == 1.0
    else:
        assert record.status == "error" and "tokenizer or chat template differs" in record.error
