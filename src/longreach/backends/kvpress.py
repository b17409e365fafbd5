"""``kvpress``: NVIDIA kvpress 0.5.5's presses on the token ids our engine reads, as a peer row for the cache methods.

Spec: ``kvpress[:venv=.venv-kvpress][:threads=0]``; ``--model`` names the model (a zoo name, HF folder, GGUF file or
source spec whose files transformers can load: not the in-memory ``tiny-llama``), ``--dtype`` its dtype.

kvpress 0.5.5 needs transformers < 5.3, so it never runs in this process: :func:`ensure_venv` builds its own virtual
environment once (minutes), and the backend starts one persistent worker there
(:mod:`longreach.backends._kvpress_worker`, which imports only torch, transformers and kvpress) that loads the
model from the files our source resolves to and speaks JSON lines over stdin/stdout.

What is compared: each request is encoded with our tokenizer and split where our engine splits it (question-aware:
all tokens but the last are read and compressed, then the last; question-agnostic: the context, then the rest), and
the worker reads the same ids by kvpress's pipeline protocol (the first part inside ``with press(model)``, the rest
at explicit positions, then greedy decoding, stopping at EOS, ``max_new_tokens`` or a stop string as our engine
does). So a row ``kvpress`` differs from the ``hf`` row of the same stack only by the presses' own code (and by
transformers 5.2 against ours). Times, the worker's peak RSS and the physical bytes of its cache are measured inside
the worker.

Stacks it runs (:func:`press_of`): ``none``; ``snapkv``, ``streaming``, ``knorm``, ``pyramid`` at a
``compression_ratio`` with our default settings (= kvpress's defaults); ``h2o:compression_ratio=R:recent=0``
(= ``ObservedAttentionPress``, which needs eager attention). Everything else (other settings, ``budget``, other
methods) has no kvpress equivalent and is refused in ``prepare``. CPU only: the venv's torch is a CPU build.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import venv
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

from longreach import tokens
from longreach.backends.base import BackendSpec, ModelSettings, Preparation, register_backend
from longreach.backends.hf import GENERATION_BUDGET
from longreach.backends.openai import BackendUnavailable
from longreach.engine import question_split
from longreach.errors import LongreachError
from longreach.generation import Generation, Request
from longreach.methods import MethodStack
from longreach.models import DTYPES, ModelSource, adapter, load_tokenizer, quiet_transformers, resolve, weights_note

WORKER = Path(__file__).with_name("_kvpress_worker.py")
STEPS: tuple[tuple[str, ...], ...] = (  # torch first and pinned: an unpinned resolve pulls a multi-GB CUDA build
    ("torch==2.13.0",),
    ("transformers==5.2.0",),
    ("--no-deps", "kvpress==0.5.5"),  # its declared dependencies would pull far more than it imports
    ("cachetools<6", "datasets", "fire<0.7", "gguf", "accelerate"),  # what it imports, and what a GGUF load needs
)
STAMP = ".longreach-kvpress"  # written last: the venv is complete (its text: the steps it was built with)
BUILDING = ".longreach-kvpress-building"  # written first: a folder this function may clear and rebuild

# our cache method -> (kvpress press, our fields fixed to that press's behaviour besides compression_ratio)
PRESSES: dict[str, tuple[str, dict[str, Any]]] = {
    "snapkv": ("SnapKVPress", {}),
    "streaming": ("StreamingLLMPress", {}),
    "knorm": ("KnormPress", {}),
    "h2o": ("ObservedAttentionPress", {"recent": 0.0}),
    "pyramid": ("PyramidKVPress", {}),
    "expected": ("ExpectedAttentionPress", {}),
}
RUNS = (  # what press_of accepts, for its refusals
    "none; snapkv, streaming, knorm, pyramid, expected with compression_ratio=R and default settings; "
    "h2o:compression_ratio=R:recent=0"
)


def ensure_venv(path: Path) -> Path:
    """The python of kvpress's venv at ``path``, built first (minutes, once) when it is missing or incomplete.
    A lock on its parent folder keeps two processes from building it at once; a folder that this function did not
    make (another venv, a project) is never cleared."""
    path = path.expanduser().resolve()
    python, stamp = path / "bin" / "python", path / STAMP
    built = "".join(" ".join(step) + "\n" for step in STEPS)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent):
        if stamp.is_file() and stamp.read_text() == built:
            return python
        ours = stamp.is_file() or (path / BUILDING).is_file()
        if path.is_dir() and any(path.iterdir()) and not ours:
            raise LongreachError(
                f"kvpress: {path} exists and is not a kvpress venv built here; name a new folder (venv=DIR)"
            )
        print(f"building kvpress 0.5.5's virtual environment in {path} (takes minutes, once)", file=sys.stderr)
        venv.create(path, with_pip=True, clear=path.exists())
        (path / BUILDING).touch()
        for step in STEPS:
            _pip(python, step)
        stamp.write_text(built)
        (path / BUILDING).unlink()
    return python


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` (flock on the directory itself: no lock file is left behind)."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)


def _pip(python: Path, args: tuple[str, ...]) -> None:
    command = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        raise LongreachError(f"building kvpress's venv: pip install {' '.join(args)} failed ({tail})")


def press_of(stack: MethodStack) -> dict[str, Any] | None:
    """The kvpress press that runs ``stack`` (``{"press": name, "compression_ratio": r}``; None for ``none``), or a
    LongreachError naming the stack and what kvpress can run."""
    if not stack.methods:
        return None
    method = stack.of_kind("cache")
    if method is None or len(stack.methods) > 1 or method.name not in PRESSES:
        others = ", ".join(m.name for m in stack.methods if m.name not in PRESSES) or stack.repr
        raise LongreachError(f"kvpress cannot run {stack.repr!r}: {others} has no kvpress press; it runs {RUNS}")
    press, fixed = PRESSES[method.name]
    ratio = method.compression_ratio  # type: ignore[attr-defined]
    expected = type(method)(compression_ratio=ratio, **fixed)
    differing = [
        f"{f.name}={getattr(method, f.name)}"
        for f in dataclasses.fields(method)
        if getattr(method, f.name) != getattr(expected, f.name)
    ]
    if differing:
        raise LongreachError(
            f"kvpress cannot run {stack.repr!r}: {', '.join(differing)} differs from what {press} does at its "
            f"defaults (the only settings the peer runs); it runs {RUNS}"
        )
    return {"press": press, "compression_ratio": ratio}


class _Worker:
    """The worker process: one JSON line in, one JSON line out; stderr kept in a file and quoted in errors. It is
    stopped (stdin closed, then killed if it lingers) when this object is collected or the interpreter exits."""

    def __init__(self, python: Path, config: dict[str, Any]) -> None:
        self.stderr: IO[bytes] = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [str(python), "-I", "-u", str(WORKER), json.dumps(config)],  # -I: the worker's folder is not on sys.path
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        self._lock = threading.Lock()
        self._stop = weakref.finalize(self, _stop, self.process, self.stderr)
        self.ready = self._answer("starting")

    def ask(self, message: dict[str, Any]) -> dict[str, Any]:
        if not self._stop.alive:
            raise LongreachError("this kvpress backend was closed; build a new one")
        with self._lock:
            if self.process.poll() is not None or self.process.stdin is None:
                raise self._gone("before the request")
            try:
                self.process.stdin.write(json.dumps(message) + "\n")
                self.process.stdin.flush()
            except BrokenPipeError:
                raise self._gone("while sending the request") from None
            return self._answer("answering")

    def _answer(self, doing: str) -> dict[str, Any]:
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line:
            raise self._gone(f"while {doing}")
        return json.loads(line)

    def _gone(self, when: str) -> BackendUnavailable:
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # stdout closed but the process lingers
            self.process.kill()
            code = self.process.wait()
        self.stderr.seek(0)
        tail = " | ".join(self.stderr.read().decode(errors="replace").strip().splitlines()[-3:])
        return BackendUnavailable(f"the kvpress worker exited (code {code}) {when}: {tail or 'no stderr'}")

    def close(self) -> None:
        self._stop()


def _stop(process: subprocess.Popen[str], stderr: IO[bytes]) -> None:
    """Close the worker's stdin (it exits at EOF); kill it if it has not exited after 10 s. Always reaped."""
    try:
        if process.stdin is not None:
            process.stdin.close()
        process.wait(timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        process.kill()
        process.wait()
    finally:
        if process.stdout is not None:
            process.stdout.close()
        stderr.close()


class KvpressBackend:
    """Requests one at a time through the kvpress worker (``concurrency = 1``)."""

    concurrency = 1

    def __init__(self, worker: _Worker, tokenizer: Any, facts: dict[str, Any], hard_max_length: int | None) -> None:
        self.worker, self.tokenizer = worker, tokenizer
        self._facts, self.hard_max_length = facts, hard_max_length

    def facts(self) -> dict[str, Any]:
        return dict(self._facts)

    def prepare(self, stacks: list[MethodStack], longest: dict[str, int], calibrated: dict[str, str]) -> Preparation:
        for stack in stacks:
            press_of(stack)
        reads = max(longest.values(), default=0)
        if self.hard_max_length is not None and reads + GENERATION_BUDGET > self.hard_max_length:
            raise LongreachError(
                f"{self._facts['model']} has absolute positions up to {self.hard_max_length} tokens; {reads} tokens "
                f"cannot run. Use lengths <= {self.hard_max_length - GENERATION_BUDGET}"
            )
        return Preparation({stack.repr: stack for stack in stacks})

    def generate(self, requests: list[Request], stack: MethodStack) -> list[Generation]:
        press = press_of(stack)
        return [self._one(request, press) for request in requests]

    def _one(self, request: Request, press: dict[str, Any] | None) -> Generation:
        ids = tokens.encode(self.tokenizer, request.prompt)
        split = question_split(self.tokenizer, request, ids, press is not None)
        answer = self._generate(ids, split, press, request.max_new_tokens, request.stop)
        return Generation(
            text=answer["text"],
            prompt_tokens=len(ids),
            new_tokens=len(answer["new_ids"]),
            seconds=answer["seconds"],
            prefill_seconds=answer["prefill_seconds"],
            peak_rss_mb=answer["peak_rss_mb"],
            kv_cache_bytes=answer["kv_cache_bytes"],
            decode_seconds=answer["decode_seconds"],
            decode_steps=answer["decode_steps"],
            compressed_kv_bytes=answer["compressed_kv_bytes"],
        )

    def generate_ids(
        self, ids: list[int], split: int | None, stack: MethodStack, max_new_tokens: int, stop: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """kvpress's answer to token ids read in two parts at ``split`` (None: at once) under ``stack``'s press: the
        worker's record (``new_ids``, ``text``, wall and CPU seconds of the prefill and the decode, ``decode_steps``,
        peak RSS, cache bytes), for benchmarks that compare on ids rather than prompts."""
        return self._generate(ids, split, press_of(stack), max_new_tokens, stop)

    def _generate(
        self, ids: list[int], split: int | None, press: dict[str, Any] | None, max_new_tokens: int, stop: Any
    ) -> dict[str, Any]:
        message = {"op": "generate", "ids": ids, "split": split, "press": press}
        answer = self.worker.ask({**message, "max_new_tokens": max_new_tokens, "stop": list(stop)})
        if "error" in answer:
            raise RuntimeError(f"kvpress: {answer['error']}")
        return answer

    def inspect(self, ids: list[int], split: int, stack: MethodStack) -> dict[str, Any]:
        """kvpress's reading of ``ids`` under ``stack``'s press, compressing the first ``split`` tokens: each layer's
        kept positions per KV head (``kept_positions``, None for ``none``) and the float32 logits of the first
        answer token (``first_logits``; None with ``error`` when the rest of the prompt cannot be read)."""
        return self.worker.ask({"op": "inspect", "ids": ids, "split": split, "press": press_of(stack)})

    def close(self) -> None:
        """Stop the worker now (it is also stopped when this backend is collected or the interpreter exits)."""
        self.worker.close()


def _model_files(source: ModelSource) -> dict[str, Any]:
    """Where the worker loads the model from: an HF folder, or a GGUF file's folder and name."""
    path = Path(source.path)
    if source.kind == "hf_dir":
        return {"model_dir": str(path), "gguf_file": None}
    if source.kind == "gguf":
        return {"model_dir": str(path.parent), "gguf_file": path.name}
    raise LongreachError(
        f"kvpress loads the model from files transformers reads (an HF folder or a .gguf); {source.kind!r} "
        f"({source.describe()}) is not one: save it with save_pretrained and pass the folder"
    )


def _config_facts(source: ModelSource, files: dict[str, Any]) -> tuple[int, int | None]:
    """(native window, absolute-position limit or None) from the model's config, read in this process."""
    from transformers import AutoConfig

    extra = {"gguf_file": files["gguf_file"]} if files["gguf_file"] else {}
    with quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(files["model_dir"], **extra)
        except (OSError, ValueError) as exc:
            raise LongreachError(f"cannot read the config of {source.describe()}: {str(exc).splitlines()[0]}") from None
    return adapter.native_context_length(config), adapter.hard_max_length(config)


@register_backend
@dataclass(frozen=True)
class KvpressSpec(BackendSpec):
    """NVIDIA kvpress 0.5.5's presses in their own venv, on the token ids our engine reads (a peer row)."""

    venv: str = field(
        default=".venv-kvpress",
        metadata={"help": "kvpress's virtual environment, relative to the working directory (built on first use)"},
    )
    threads: int = field(default=0, metadata={"help": "torch threads in the worker (0: every core)"})

    name: ClassVar[str] = "kvpress"
    summary: ClassVar[str] = "NVIDIA kvpress 0.5.5's presses (own venv, worker process) on our token ids; CPU"
    transport: ClassVar[tuple[str, ...]] = ("venv",)

    def __post_init__(self) -> None:
        if not self.venv:
            raise LongreachError("kvpress: venv must name a folder (e.g. kvpress:venv=.venv-kvpress)")
        if self.threads < 0:
            raise LongreachError(f"kvpress: threads must be >= 0 (0: every core); got {self.threads}")

    def load_tokenizer(self, settings: ModelSettings) -> Any:
        return load_tokenizer(resolve(settings.model))

    def build(self, settings: ModelSettings) -> KvpressBackend:
        if settings.device != "cpu":
            raise LongreachError(
                f"kvpress runs on the CPU only (its venv's torch is a CPU build); got {settings.device!r}"
            )
        if settings.dtype not in DTYPES:
            raise LongreachError(f"unknown dtype {settings.dtype!r}; valid: {', '.join(DTYPES)}")
        source = resolve(settings.model)
        files = _model_files(source)
        native, hard_max = _config_facts(source, files)
        tokenizer = load_tokenizer(source)
        python = ensure_venv(Path(self.venv))
        saved = Path(tempfile.mkdtemp(prefix="longreach-kvpress-tokenizer-"))
        try:
            tokenizer.save_pretrained(saved)
            config = {**files, "tokenizer_dir": str(saved), "dtype": settings.dtype, "threads": self.threads}
            worker = _Worker(python, config)
        finally:
            shutil.rmtree(saved, ignore_errors=True)
        versions = worker.ready["versions"]
        facts = {
            "model": settings.model,
            "model_source": source.describe(),
            "weights": weights_note(settings.model, source, settings.dtype),
            "native_context_length": native,
            "dtype": settings.dtype,
            "device": "cpu",
            "kvpress_version": versions["kvpress"],
            "transformers_version": versions["transformers"],
            "torch_version": versions["torch"],
            "torch_threads": worker.ready["threads"],
        }
        return KvpressBackend(worker, tokenizer, facts, hard_max)
