"""The scheduler: one thread owns the model and runs every forward pass; requests wait in a queue.

Each turn of its loop it (1) drops requests that were cancelled (the client left) or ran past their deadline,
freeing their cache; (2) admits the request at the head of the queue when fewer than ``max_concurrency`` run and
the KV bytes it can grow to (``(prompt + max_tokens) x bytes per token``) fit in the budget beside what running
requests hold, then prefills it; (3) runs one decode step for every running request: one batched forward per
batchable stack (rows left-padded into one cache), one forward per request otherwise. After a prefill a request's
hold shrinks to its measured cache plus what its remaining tokens can add, so compressed caches admit more.
A request the budget could never hold is refused before it is queued (see :meth:`Scheduler.check`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import torch

from longreach.engine import Engine
from longreach.generation import Request
from longreach.models import adapter
from longreach.serve.batch import DecodeBatch
from longreach.serve.jobs import Delta, Failed, Finished, Job
from longreach.serve.metrics import Metrics
from longreach.serve.schemas import ApiError


@dataclass(frozen=True)
class Limits:
    max_concurrency: int
    max_queue: int
    kv_budget_bytes: int


class Scheduler:
    """Queue, admission by KV bytes, prefill and (batched) decode on one thread."""

    def __init__(self, engine: Engine, limits: Limits, metrics: Metrics) -> None:
        self.engine, self.limits, self.metrics = engine, limits, metrics
        self.waiting: deque[Job] = deque()
        self.batches: dict[str, DecodeBatch] = {}
        self.alone: list[Job] = []
        self.reserved = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="longreach-scheduler", daemon=True)
        metrics.set("longreach_kv_budget_bytes", limits.kv_budget_bytes)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)

    def tokens_fit(self, bytes_per_token: int) -> int:
        """Tokens of cache one request may hold under the budget."""
        return self.limits.kv_budget_bytes // bytes_per_token

    def submit(self, job: Job) -> None:
        """Queue ``job``; a full queue answers 429 with Retry-After."""
        with self._lock:
            if len(self.waiting) >= self.limits.max_queue:
                raise ApiError(
                    429,
                    f"the queue is full ({len(self.waiting)} requests waiting); retry later",
                    code="queue_full",
                    kind="rate_limit_error",
                    headers={"Retry-After": "1"},
                )
            self.waiting.append(job)
        self._wake.set()

    @property
    def running(self) -> list[Job]:
        return [job for batch in self.batches.values() for job in batch.jobs] + self.alone

    def _loop(self) -> None:
        while not self._stopping:
            busy = self._turn()
            if not busy:
                self._wake.wait(0.05)
                self._wake.clear()

    def _turn(self) -> bool:
        self._reap()
        admitted = self._admit()
        stepped = self._decode()
        self._publish()
        return admitted or stepped

    def _reap(self) -> None:
        """Drop cancelled and expired requests, queued or running; an expired one is told so (408)."""
        with self._lock:
            queued = [job for job in self.waiting if job.cancelled or job.expired()]
            for job in queued:
                self.waiting.remove(job)
        gone = {job for job in self.running if job.cancelled or job.expired()}
        for job in [*queued, *gone]:
            if not job.cancelled:
                job.emit(Failed(ApiError(408, "the request ran past the server's timeout", code="timeout")))
        self._release(gone)

    def _release(self, jobs: set[Job]) -> None:
        """Free the caches and KV holds of ``jobs`` (finished, cancelled or failed)."""
        if not jobs:
            return
        for batch in self.batches.values():
            batch.remove(jobs)
        self.alone = [job for job in self.alone if job not in jobs]
        for job in jobs:
            self.reserved -= job.reserved
            job.reserved, job.cache = 0, None
            self.metrics.add("longreach_generation_tokens_total", len(job.new_ids))

    def _admit(self) -> bool:
        """Admit and prefill the head of the queue if it fits; True when one was admitted."""
        with self._lock:
            if not self.waiting or len(self.running) >= self.limits.max_concurrency:
                return False
            job = self.waiting[0]
            need = job.need_tokens * job.served.kv_bytes_per_token
            if self.running and self.reserved + need > self.limits.kv_budget_bytes:
                return False
            self.waiting.popleft()
            job.reserved = need
            self.reserved += need
        try:
            self._prefill(job)
        except Exception as exc:  # a failing forward fails its request, never the server
            self._fail({job}, exc)
        return True

    def _prefill(self, job: Job) -> None:
        stack, loaded = job.served.stack, self.engine.loaded
        request = Request(job.prompt, job.sampling.max_tokens, job.sampling.stop)
        start = time.perf_counter()
        if stack.of_kind("reader") is not None:
            self._read_whole(job, request)
            return
        with torch.inference_mode(), stack.applied(loaded):
            read = self.engine.read_prompt(job.prompt_ids, request, stack)
        self.metrics.add("longreach_prefill_seconds_total", time.perf_counter() - start)
        self.metrics.add("longreach_prompt_tokens_total", len(job.prompt_ids))
        if job.accept(job.choose(read.logits[0, -1]), self.engine.eos_ids, self.engine.tokenizer):
            self._release({job})
            return
        held = adapter.cache_bytes(read.cache) + job.sampling.max_tokens * job.served.kv_bytes_per_token
        self.reserved += held - job.reserved
        job.reserved = held
        if job.served.batched and adapter.is_plain_cache(read.cache):
            self.batches.setdefault(job.served.model_id, DecodeBatch()).add(job, read.cache)
        else:
            job.cache = read.cache
            self.alone.append(job)

    def _read_whole(self, job: Job, request: Request) -> None:
        """A reader stack runs the whole request through the engine (the reader owns the loop)."""
        generation = self.engine.generate(request, job.served.stack)
        self.metrics.add("longreach_prefill_seconds_total", generation.prefill_seconds)
        self.metrics.add("longreach_decode_seconds_total", generation.decode_seconds)
        self.metrics.add("longreach_prompt_tokens_total", generation.prompt_tokens)
        self.metrics.add("longreach_generation_tokens_total", generation.new_tokens)
        job.emit(Delta(generation.text))
        reason = "length" if generation.new_tokens >= job.sampling.max_tokens else "stop"
        job.emit(Finished(reason, generation.prompt_tokens, generation.new_tokens))
        self._release({job})

    def _decode(self) -> bool:
        """One decode step for every running request; True when any ran."""
        loaded, stepped = self.engine.loaded, False
        for batch in self.batches.values():
            if not batch.jobs:
                continue
            jobs = list(batch.jobs)
            try:
                start = time.perf_counter()
                with torch.inference_mode(), jobs[0].served.stack.applied(loaded):
                    logits = batch.step(loaded)
                self._count_step(start)
                done = {job for job, row in zip(jobs, logits, strict=True) if self._accept(job, row)}
            except Exception as exc:  # one failing step fails its requests, never the server
                self._fail(set(jobs), exc)
                continue
            self._release(done)
            stepped = True
        for job in list(self.alone):
            try:
                start = time.perf_counter()
                with torch.inference_mode(), job.served.stack.applied(loaded):
                    ids = torch.tensor([[job.next_id]])
                    logits, job.cache = adapter.forward(loaded.model, ids, job.cache, job.position)
                self._count_step(start)
                if self._accept(job, logits[0, -1]):
                    self._release({job})
            except Exception as exc:
                self._fail({job}, exc)
            stepped = True
        return stepped

    def _count_step(self, start: float) -> None:
        self.metrics.add("longreach_decode_seconds_total", time.perf_counter() - start)
        self.metrics.add("longreach_decode_steps_total")

    def _accept(self, job: Job, logits: torch.Tensor) -> bool:
        return job.accept(job.choose(logits), self.engine.eos_ids, self.engine.tokenizer)

    def _fail(self, jobs: set[Job], exc: Exception) -> None:
        error = ApiError(500, f"generation failed: {type(exc).__name__}: {exc}", kind="server_error")
        for job in jobs:
            job.emit(Failed(error))
        self._release(jobs)

    def _publish(self) -> None:
        caches = [batch.cache for batch in self.batches.values() if batch.jobs]
        caches += [job.cache for job in self.alone if job.cache is not None]
        self.metrics.set("longreach_kv_bytes_in_use", sum(adapter.cache_bytes(cache) for cache in caches))
        self.metrics.set("longreach_kv_bytes_reserved", self.reserved)
        self.metrics.set("longreach_running_requests", len(self.running))
        self.metrics.set("longreach_queue_depth", len(self.waiting))
