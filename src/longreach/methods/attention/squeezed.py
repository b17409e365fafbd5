"""``squeezed``: Squeezed Attention (Hooper et al. 2024, "Squeezed Attention: Accelerating Long Context Length
LLM Inference", arXiv 2411.09688): cluster the keys of a fixed context offline, then let each new query attend
exactly to the keys of the clusters whose centroids it would attend to.

Ein legend: b batch, h query heads, k KV heads, g = h / k, t new tokens, n keys, F fixed-context tokens,
C centroids per KV head, d head dim.

Offline, once the fixed context (the first read of a sequence: the context in question-agnostic evaluation) is
in the cache, per layer and KV head: the keys but the last ``observation`` ones, L2-normalised, are clustered by
k-means (k-means++ init, ``iterations`` Lloyd steps) into C = ``clusters`` x F centroids; each centroid keeps the
mean of its raw keys and its size N_c. A global threshold (shared by all layers) is calibrated with the last
``observation`` queries of the context: every key's estimated attention
``est_j = mean_q exp(q.C_c(j) s) / sum_c N_c exp(q.C_c s)`` is computed and ``tau`` is its ``sparsity`` quantile.

Online, for each new query q and query head: ``S_c = exp(q.C_c s) / sum_c' N_c' exp(q.C_c' s)``; the keys of
clusters with S_c > tau are attended (union over a KV head's query heads, as GQA shares the keys), together with
the last ``observation`` context tokens and every token after the context; attention over them is exact.
``hierarchical``: the fine centroids are clustered again into C x ``coarse`` coarse ones; a query first keeps the
coarse clusters above tau x ``coarse_scale`` (a lower bar), then the fine clusters above tau inside them.

Memory: nothing is evicted (the method saves attention work, which needs the paper's kernels to become speed);
the cache grows by the centroids, sizes and labels, all counted in the physical bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from longreach.methods.base import Kind, Method
from longreach.methods.spec import register
from longreach.models import adapter
from longreach.params import require

if TYPE_CHECKING:
    from longreach.models import LoadedModel


def kmeans(points: torch.Tensor, count: int, iterations: int, generator: torch.Generator) -> torch.Tensor:
    """Euclidean k-means of ``points`` (m, n, d) in m independent problems: labels (m, n) in [0, count).
    k-means++ initialisation, then Lloyd steps; an emptied cluster keeps its last centroid."""
    m, n, d = points.shape
    centroids = torch.empty(m, count, d, dtype=points.dtype)
    rows = torch.arange(m)
    first = torch.randint(n, (m,), generator=generator)
    centroids[:, 0] = points[rows, first]
    nearest = ((points - centroids[:, :1]) ** 2).sum(-1)  # (m, n)
    for c in range(1, count):
        weights = nearest.clamp_min(0) + 1e-12
        pick = torch.multinomial(weights, 1, generator=generator).squeeze(-1)
        centroids[:, c] = points[rows, pick]
        nearest = torch.minimum(nearest, ((points - centroids[:, c : c + 1]) ** 2).sum(-1))
    labels = torch.zeros(m, n, dtype=torch.long)
    for _ in range(iterations):
        distance = (centroids**2).sum(-1)[:, None, :] - 2 * points @ centroids.transpose(1, 2)  # (m, n, count)
        labels = distance.argmin(dim=-1)
        sums = torch.zeros(m, count, d, dtype=points.dtype).scatter_add_(1, labels[..., None].expand(-1, -1, d), points)
        sizes = torch.zeros(m, count, dtype=points.dtype).scatter_add_(
            1, labels, torch.ones_like(labels, dtype=points.dtype)
        )
        filled = sizes > 0
        centroids = torch.where(filled[..., None], sums / sizes.clamp_min(1)[..., None], centroids)
    return labels


def grouped_means(values: torch.Tensor, labels: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per problem, the mean of ``values`` (m, n, d) in each of ``count`` groups and the group sizes (m, count)."""
    m, n, d = values.shape
    sums = torch.zeros(m, count, d, dtype=values.dtype).scatter_add_(1, labels[..., None].expand(-1, -1, d), values)
    sizes = torch.zeros(m, count, dtype=values.dtype).scatter_add_(
        1, labels, torch.ones_like(labels, dtype=values.dtype)
    )
    return sums / sizes.clamp_min(1)[..., None], sizes


class SqueezedStorage:
    """A layer cache holding every key and value plus the clustering of its fixed-context keys."""

    def attach(self, index: dict[str, torch.Tensor], fixed: int, clustered: int) -> None:
        self.centroids, self.sizes, self.labels = index["centroids"], index["sizes"], index["labels"]
        self.coarse_centroids = index.get("coarse_centroids")
        self.coarse_sizes = index.get("coarse_sizes")
        self.parents = index.get("parents")
        self.fixed, self.clustered = fixed, clustered


def log_cluster_scores(query: torch.Tensor, centroids: torch.Tensor, sizes: torch.Tensor, scale: float) -> torch.Tensor:
    """log S_c for queries (b, k, g, t, d) and centroids (b, k, C, d), sizes (b, k, C): (b, k, g, t, C)."""
    logits = (query.float() @ centroids.float()[:, :, None].transpose(-1, -2)) * scale
    log_sizes = sizes.float().clamp_min(1e-30).log()[:, :, None, None, :]
    log_sizes = torch.where(sizes[:, :, None, None, :] > 0, log_sizes, torch.full_like(log_sizes, float("-inf")))
    return logits - torch.logsumexp(logits + log_sizes, dim=-1, keepdim=True)


@register
@dataclass(frozen=True)
class Squeezed(Method):
    """Centroid lookup over a clustered fixed context, then exact attention to the chosen keys."""

    sparsity: float = field(default=0.7, metadata={"help": "calibrated fraction of fixed-context keys skipped"})
    clusters: float = field(default=0.05, metadata={"help": "centroids per fixed-context key, per KV head"})
    observation: int = field(default=100, metadata={"help": "last context tokens: calibration queries, always seen"})
    iterations: int = field(default=20, metadata={"help": "k-means Lloyd steps"})
    hierarchical: bool = field(default=False, metadata={"help": "two-level lookup (coarse, then fine centroids)"})
    coarse: float = field(default=0.25, metadata={"help": "hierarchical: coarse centroids per fine centroid"})
    coarse_scale: float = field(default=0.5, metadata={"help": "hierarchical: coarse threshold = tau x this"})

    name: ClassVar[str] = "squeezed"
    reads_length: ClassVar[bool] = True
    kind: ClassVar[Kind] = "attention"
    summary: ClassVar[str] = "Squeezed Attention: k-means key centroids of the context pick the keys each query sees"
    paper: ClassVar[str] = "Hooper et al. 2024, Squeezed Attention: Accelerating Long Context Length LLM Inference"
    example: ClassVar[str] = "squeezed:observation=16"

    def __post_init__(self) -> None:
        require(0.0 <= self.sparsity < 1.0, f"squeezed: sparsity must be in [0, 1); got {self.sparsity}")
        require(0.0 < self.clusters <= 1.0, f"squeezed: clusters must be in (0, 1]; got {self.clusters}")
        require(self.observation >= 1, f"squeezed: observation must be >= 1; got {self.observation}")
        require(self.iterations >= 1, f"squeezed: iterations must be >= 1; got {self.iterations}")
        require(0.0 < self.coarse <= 1.0, f"squeezed: coarse must be in (0, 1]; got {self.coarse}")
        require(self.coarse_scale > 0.0, f"squeezed: coarse_scale must be > 0; got {self.coarse_scale}")

    def build_index(self, keys: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Clustering of one layer's fixed keys (b, k, F', d): centroids (b, k, C, d), sizes, labels (b, k, F')."""
        b, k, n, d = keys.shape
        count = max(1, min(n, round(self.clusters * n)))
        raw = keys.float().reshape(b * k, n, d)
        labels = kmeans(torch.nn.functional.normalize(raw, dim=-1), count, self.iterations, generator)
        centroids, sizes = grouped_means(raw, labels, count)
        index = {
            "centroids": centroids.to(keys.dtype).reshape(b, k, count, d),
            "sizes": sizes.to(torch.int32).reshape(b, k, count),
            "labels": labels.to(torch.int32).reshape(b, k, n),
        }
        if self.hierarchical:
            coarse = max(1, round(self.coarse * count))
            parents = kmeans(torch.nn.functional.normalize(centroids, dim=-1), coarse, self.iterations, generator)
            weighted, _ = grouped_means(centroids * sizes[..., None], parents, coarse)
            coarse_sizes = torch.zeros(b * k, coarse).scatter_add_(1, parents, sizes)
            members = torch.zeros(b * k, coarse).scatter_add_(1, parents, torch.ones_like(sizes))
            coarse_centroids = weighted * members[..., None] / coarse_sizes.clamp_min(1)[..., None]
            index["coarse_centroids"] = coarse_centroids.to(keys.dtype).reshape(b, k, coarse, d)
            index["coarse_sizes"] = coarse_sizes.to(torch.int32).reshape(b, k, coarse)
            index["parents"] = parents.to(torch.int32).reshape(b, k, count)
        return index

    def estimated_attention(self, queries: torch.Tensor, index: dict[str, torch.Tensor], scale: float) -> torch.Tensor:
        """est_j per query head and fixed key: mean over the queries (b, h, t, d) of S_c(j): (b, h, F')."""
        b, h, t, d = queries.shape
        k = index["centroids"].shape[1]
        grouped = queries.reshape(b, k, h // k, t, d)
        scores = log_cluster_scores(grouped, index["centroids"], index["sizes"], scale).exp().mean(dim=3)  # (b,k,g,C)
        labels = index["labels"].long()[:, :, None, :].expand(-1, -1, h // k, -1)
        return scores.gather(-1, labels).reshape(b, h, -1)

    def visible(self, layer: Any, query: torch.Tensor, tau: float, scale: float) -> torch.Tensor:
        """Which fixed-context keys each new query sees: (b, k, t, F') bool (union over the group's heads)."""
        b, h, t, d = query.shape
        k = layer.centroids.shape[1]
        grouped = query.reshape(b, k, h // k, t, d)
        chosen = log_cluster_scores(grouped, layer.centroids, layer.sizes, scale) > torch.tensor(tau).log()
        if self.hierarchical:
            coarse = log_cluster_scores(grouped, layer.coarse_centroids, layer.coarse_sizes, scale)
            open_coarse = coarse > torch.tensor(tau * self.coarse_scale).log()  # (b, k, g, t, C1)
            parents = layer.parents.long()[:, :, None, None, :].expand(-1, -1, h // k, t, -1)
            chosen = chosen & open_coarse.gather(-1, parents)
        chosen = chosen.any(dim=2)  # (b, k, t, C)
        labels = layer.labels.long()[:, :, None, :].expand(-1, -1, t, -1)
        return chosen.gather(-1, labels)

    @contextlib.contextmanager
    def applied(self, loaded: LoadedModel) -> Iterator[None]:
        n_layers = len(adapter.attention_modules(loaded.model))
        state: dict[str, Any] = {"observed": {}, "tau": None}

        def cluster_all(cache: Any, scale: float) -> None:
            generator = torch.Generator().manual_seed(0)
            estimates, indexes = [], []
            for layer in range(n_layers):
                keys, _ = adapter.layer_kv(cache, layer)
                fixed = keys.shape[2]
                clustered = fixed - self.observation
                if clustered < 2:
                    return  # too short to cluster: attention stays dense
                index = self.build_index(keys[:, :, :clustered], generator)
                indexes.append((index, fixed, clustered))
                estimates.append(self.estimated_attention(state["observed"][layer], index, scale).flatten())
            pooled = torch.cat(estimates)
            sample = pooled[torch.randperm(pooled.numel(), generator=generator)[: 2**24 - 1]]
            state["tau"] = float(torch.quantile(sample, self.sparsity)) if self.sparsity > 0 else 0.0
            for layer, (index, fixed, clustered) in enumerate(indexes):
                keys, values = adapter.layer_kv(cache, layer)
                replacement = adapter.layer_type(SqueezedStorage)()
                replacement.lazy_initialization(keys, values)
                replacement.keys, replacement.values = keys, values
                replacement.attach(index, fixed, clustered)
                adapter.set_layer(cache, layer, replacement)

        def kernel(call: adapter.AttentionCall, inner: object) -> torch.Tensor:
            query = call.rotate(call.query, call.positions)
            key = call.rotate(call.key, call.positions)
            if call.cache is None:
                return call.standard(query, key, call.value)
            layer = call.cache.layers[call.layer]
            if int(call.positions[0]) == 0:  # the fixed context: dense attention, then clustering
                if call.layer == 0:
                    state["observed"], state["tau"] = {}, None
                keys, values = call.cache.update(key, call.value, call.layer)
                state["observed"][call.layer] = query[:, :, -self.observation :]
                output = call.standard(query, keys, values)
                if call.layer == n_layers - 1:
                    cluster_all(call.cache, call.scaling)
                return output
            keys, values = call.cache.update(key, call.value, call.layer)
            if not isinstance(layer, SqueezedStorage) or state["tau"] is None:
                return call.standard(query, keys, values)
            b, h, t, _ = query.shape
            n = keys.shape[2]
            seen = self.visible(layer, query, state["tau"], call.scaling)  # (b, k, t, F')
            rest = n - layer.clustered
            key_positions = torch.arange(n)
            causal = (key_positions[None, layer.clustered :] <= call.positions[:, None]).expand(
                b, seen.shape[1], t, rest
            )
            mask = torch.cat((seen, causal), dim=-1).repeat_interleave(call.groups, dim=1)  # (b, h, t, n)
            keys = keys.repeat_interleave(call.groups, dim=1)
            values = values.repeat_interleave(call.groups, dim=1)
            output = torch.nn.functional.scaled_dot_product_attention(
                query, keys, values, attn_mask=mask, scale=call.scaling
            )
            return output.transpose(1, 2)

        with adapter.attention_kernel(loaded.model, kernel):
            yield
