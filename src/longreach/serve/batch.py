"""Requests of one stack decoding together: one left-padded cache of all their rows, and the mask of which slots
of each row are real. Rows join after their own prefill and leave when they finish; slots that every row pads
are dropped when rows leave."""

from __future__ import annotations

import torch

from longreach.models import LoadedModel, adapter
from longreach.serve.jobs import Job


class DecodeBatch:
    """Jobs of one batchable stack whose caches are plain (see :func:`longreach.models.adapter.is_plain_cache`)."""

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.cache: object = None
        self.mask = torch.ones(0, 0, dtype=torch.long)

    def clear(self) -> None:
        """No rows left: free the cache."""
        self.jobs, self.cache, self.mask = [], None, torch.ones(0, 0, dtype=torch.long)

    def add(self, job: Job, cache: object) -> None:
        """Take ``job``'s prefilled batch-1 cache in as a new row."""
        length = cache.get_seq_length()
        if not self.jobs:
            self.cache, self.mask = cache, torch.ones(1, length, dtype=torch.long)
        else:
            self.cache, _ = adapter.merge_rows([self.cache, cache])
            slots = self.cache.get_seq_length()
            row = torch.zeros(1, slots, dtype=torch.long)
            row[0, slots - length :] = 1
            self.mask = torch.cat([torch.nn.functional.pad(self.mask, (slots - self.mask.shape[1], 0)), row])
        self.jobs.append(job)

    def remove(self, gone: set[Job]) -> None:
        """Drop the rows of ``gone`` (their cache storage is freed)."""
        keep = [i for i, job in enumerate(self.jobs) if job not in gone]
        if len(keep) == len(self.jobs):
            return
        if not keep:
            self.clear()
            return
        mask = self.mask[keep]
        drop = int(mask.any(0).nonzero()[0])
        adapter.select_rows(self.cache, keep, drop)
        self.mask, self.jobs = mask[:, drop:], [self.jobs[i] for i in keep]

    def step(self, loaded: LoadedModel) -> torch.Tensor:
        """Read every row's next token at its own position: the logits (rows, vocab) of the tokens after them."""
        ids = torch.tensor([[job.next_id] for job in self.jobs])
        positions = torch.tensor([[job.position] for job in self.jobs])
        mask = torch.cat([self.mask, torch.ones(len(self.jobs), 1, dtype=torch.long)], dim=1)
        logits, self.cache = adapter.forward_rows(loaded.model, ids, self.cache, positions, mask)
        self.mask = mask
        return logits[:, -1]
