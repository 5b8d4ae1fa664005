"""Weighted kNN classifier on frozen features, plus the accuracy helpers the probes share.

The kNN monitor follows InstDisc: L2-normalise the features, take the k most similar
training samples (cosine similarity) and let each vote for its class with weight
exp(sim / T). Queries are processed in chunks so only a [chunk, N] similarity block is
ever alive: 10k x 50k queries stay within a few hundred MB instead of 10 GB.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sslterm.errors import UserError
from sslterm.eval.precision import full_fp32


class NonFiniteError(UserError):
    """NaN/inf in features or in a probe's loss; reported instead of a NaN metric."""


def check_finite(name: str, tensor: Tensor) -> None:
    """Raise NonFiniteError if ``tensor`` holds NaN or inf, so no NaN reaches results."""
    if not bool(torch.isfinite(tensor).all()):
        raise NonFiniteError(
            f"{name} contain NaN or inf values; the encoder (or the data) that produced "
            "them diverged"
        )


def topk_accuracy(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies in percent, keyed ``top1``, ``top5``, ...

    Ties between class scores go to the lower class index (stable sort), so the numbers do
    not depend on the sort kernel. With fewer than k classes top-k is 100%.
    """
    if scores.ndim != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"scores {tuple(scores.shape)} and labels {tuple(labels.shape)} disagree")
    if scores.shape[0] == 0:
        raise ValueError("accuracy of an empty set is undefined")
    maxk = min(max(ks), scores.shape[1])
    ranked = scores.sort(dim=1, descending=True, stable=True).indices[:, :maxk]
    hits = ranked == labels.to(ranked.device, torch.int64).unsqueeze(1)
    return {f"top{k}": hits[:, :k].any(dim=1).double().mean().item() * 100.0 for k in ks}


def _topk_lowest_index(sim: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Row-wise top-k of ``sim``; ties at the k-th value go to the lowest column index.

    ``torch.topk`` picks arbitrarily among equal values (duplicated images give exact
    ties), which would make scores depend on the kernel and the chunk size. A tie group
    straddles the cut exactly when the (k+1)-th value equals the k-th, so one extra
    element of topk finds those rows; only they are re-ranked with a stable sort.
    """
    if k == sim.shape[1]:
        return sim.topk(k, dim=1)
    values, indices = sim.topk(k + 1, dim=1)
    straddles = values[:, k] == values[:, k - 1]
    values, indices = values[:, :k], indices[:, :k]
    if bool(straddles.any()):
        rows = straddles.nonzero().squeeze(1)
        ranked = sim[rows].sort(dim=1, descending=True, stable=True)
        values[rows] = ranked.values[:, :k]
        indices[rows] = ranked.indices[:, :k]
    return values, indices


def _check_inputs(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    chunk_size: int,
) -> None:
    if train_features.ndim != 2 or query_features.ndim != 2:
        raise ValueError("features must be 2-D [samples, dim]")
    if train_features.shape[1] != query_features.shape[1]:
        raise ValueError(
            f"train features have dim {train_features.shape[1]}, queries {query_features.shape[1]}"
        )
    if train_labels.shape != train_features.shape[:1]:
        raise ValueError(
            f"{train_features.shape[0]} train features but labels of shape {tuple(train_labels.shape)}"
        )
    if train_features.shape[0] == 0:
        raise ValueError("kNN needs at least one training sample")
    if k < 1 or temperature <= 0 or chunk_size < 1 or num_classes < 1:
        raise ValueError("k, temperature, chunk_size and num_classes must be positive")
    if int(train_labels.min()) < 0 or int(train_labels.max()) >= num_classes:
        raise ValueError(f"train labels must lie in [0, {num_classes})")
    check_finite("train features", train_features)
    check_finite("query features", query_features)


def knn_predict(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> Tensor:
    """Class scores [Q, C]: each query's weighted vote share per class (rows sum to 1).

    Weights are exp(sim / T) over the k nearest training samples (k is capped at the
    training-set size). Shares rather than raw sums: they are computed as
    exp((sim - max sim) / T) so a small T cannot overflow, and the shift cancels in the
    share. Runs on ``train_features.device``; queries may live elsewhere (e.g. CPU).
    """
    _check_inputs(
        train_features, train_labels, query_features, num_classes, k, temperature, chunk_size
    )
    train = F.normalize(train_features.float(), dim=1)
    labels = train_labels.to(train.device, torch.int64)
    k = min(k, train.shape[0])
    chunks = []
    with full_fp32(train.device.type):
        for start in range(0, query_features.shape[0], chunk_size):
            query = query_features[start : start + chunk_size].to(train.device, torch.float32)
            sim = F.normalize(query, dim=1) @ train.T
            top_sim, top_idx = _topk_lowest_index(sim, k)
            chunks.append(_vote(top_sim, labels[top_idx], num_classes, temperature))
    if not chunks:
        return torch.zeros(0, num_classes, device=train.device)
    return torch.cat(chunks)


def _vote(top_sim: Tensor, top_labels: Tensor, num_classes: int, temperature: float) -> Tensor:
    """Vote shares [Q, C] of neighbours sorted by similarity (best first)."""
    weights = torch.exp((top_sim - top_sim[:, :1]) / temperature)
    votes = torch.zeros(top_sim.shape[0], num_classes, device=top_sim.device)
    votes.scatter_add_(1, top_labels, weights)
    return votes / votes.sum(dim=1, keepdim=True)


def shard_neighbours(
    bank: Tensor, bank_labels: Tensor, offset: int, queries: Tensor, k: int
) -> Tensor:
    """One shard's part of a sharded kNN: [3, Q, k] float64 of (similarity, global index,
    label) of each query's k nearest rows of ``bank`` (L2-normalised rows ``offset``.. of
    the whole bank; normalised once by the caller, not once per query chunk).

    Sharded so no process holds the whole bank: each holds its rows, all see the queries,
    and :func:`merge_neighbours` on one process combines the shards' parts. float64 holds
    float32 similarities and integer indices exactly, so one collective moves all three.
    Shards with fewer than k rows pad with similarity -inf, which never outranks a real row.
    """
    sim = F.normalize(queries.to(bank.device, torch.float32), dim=1) @ bank.T
    part = torch.zeros(3, queries.shape[0], k, dtype=torch.float64, device=bank.device)
    part[0] = -math.inf
    width = min(k, bank.shape[0])
    if width:
        top_sim, top_idx = _topk_lowest_index(sim, width)
        part[0, :, :width] = top_sim
        part[1, :, :width] = top_idx + offset
        part[2, :, :width] = bank_labels.to(bank.device)[top_idx]
    return part


def merge_neighbours(parts: list[Tensor], k: int, num_classes: int, temperature: float) -> Tensor:
    """Class scores [Q, C] from every shard's :func:`shard_neighbours`, as :func:`knn_predict`
    on the whole bank gives them: the k most similar, ties to the lowest global index."""
    sim, index, label = torch.cat(parts, dim=2)
    by_index = index.argsort(dim=1, stable=True)
    sim, label = sim.gather(1, by_index), label.gather(1, by_index)
    best = sim.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return _vote(sim.gather(1, best).float(), label.gather(1, best).long(), num_classes, temperature)


def knn_accuracy(
    train_features: Tensor,
    train_labels: Tensor,
    query_features: Tensor,
    query_labels: Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> dict[str, float]:
    """Top-1/top-5 accuracy (percent) of :func:`knn_predict` on labelled queries."""
    scores = knn_predict(
        train_features, train_labels, query_features, num_classes, k, temperature, chunk_size
    )
    return topk_accuracy(scores, query_labels)
