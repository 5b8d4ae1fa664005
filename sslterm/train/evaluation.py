"""Evaluation of the method's ``eval_encoder()`` during training: frozen features, sharded
kNN and the offline linear probe, with BatchNorm statistics synced across ranks first."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
from accelerate import Accelerator
from timm.utils import distribute_bn
from torch import Tensor, nn

from sslterm.data.evalset import eval_batches
from sslterm.data.registry import Splits
from sslterm.eval.features import extract_features
from sslterm.eval.linear import train_linear_probe
from sslterm.eval.sharded import gather_to_main, sharded_knn_accuracy
from sslterm.profile.schema import ProbeConfig, Profile

# How long a rank waits in a collective for the others. Evaluation runs kNN and the linear
# probe while the other ranks wait (the probe on rank 0 alone), and on ImageNet that takes
# minutes, past NCCL's default of 10; a truly hung rank is still ended, only later.
COLLECTIVE_TIMEOUT = timedelta(hours=2)

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def eval_rows(n: int, cap: int, seed: int) -> Tensor:
    """Indices of the images an evaluation uses: all ``n``, or (``cap`` > 0) a fixed random
    subset of ``cap``, sorted and the same at every evaluation, so that kNN on a huge dataset
    stays affordable and its numbers stay comparable over the run."""
    if cap == 0 or cap >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:cap].sort().values


def eval_cost(probe: ProbeConfig, n_train: int, n_val: int, dim: int, world: int) -> str:
    """One line on what an evaluation costs, so a huge dataset's price is seen at run start
    (and ``probe.knn_max_*`` can be set) rather than found out hours later."""
    parts = []
    if probe.knn:
        bank = min(n_train, probe.knn_max_train or n_train)
        queries = min(n_val, probe.knn_max_queries or n_val)
        parts.append(f"kNN {queries:,} queries x {bank:,} bank x {dim}-d = "
                     f"{2 * queries * bank * dim / 1e12:.3g} TFLOP per validation, "
                     f"{math.ceil(bank / world) * dim * 4 / 2**20:.1f} MiB of bank per process")
    if probe.enabled:
        parts.append(f"linear probe on {n_train:,} x {dim}-d features "
                     f"({n_train * dim * 4 / 2**20:.1f} MiB) on the main process only")
    hours = COLLECTIVE_TIMEOUT.total_seconds() / 3600
    return (f"evaluation: {'; '.join(parts) or 'off'}; other processes wait up to "
            f"{hours:g} h for it")


def shard(n: int, rank: int, world: int) -> Tensor:
    """Contiguous, equal-length index shards (the last padded by repeating) for eval."""
    per = math.ceil(n / world)
    idx = torch.arange(rank * per, (rank + 1) * per)
    return idx.clamp_(max=n - 1)


def sync_batchnorm(model: nn.Module, world: int) -> None:
    """Average BatchNorm running statistics over the ranks (timm's ``distribute_bn``)
    before an evaluation or a checkpoint: each rank updates its own from its part of the
    batch (DDP broadcasts rank 0's only at the next training forward), so otherwise every
    rank evaluates a different encoder and the checkpoint holds rank 0's alone."""
    if world > 1:
        distribute_bn(model, world, reduce=True)


class Evaluator:
    """Frozen-feature evaluations of ``encoder()`` (the method's ``eval_encoder``), on every
    rank together; results on the main process, None on the others."""

    def __init__(self, acc: Accelerator, p: Profile, splits: Splits, size: int,
                 use_tensors: bool, channels_last: bool, encoder: Callable[[], nn.Module]) -> None:
        self.acc, self.p, self.splits, self.size = acc, p, splits, size
        self.use_tensors, self.channels_last, self.encoder = use_tensors, channels_last, encoder
        self.rank, self.world, self.device = acc.process_index, acc.num_processes, acc.device

    def local_features(self, split: str, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Frozen-encoder features and labels, on the device, of this rank's shard of ``rows``
        (image indices into the split; equal-length shards, see :func:`shard`)."""
        idx = rows[shard(len(rows), self.rank, self.world)]
        batches = eval_batches(
            self.splits, split, idx, size=self.size, batch_size=self.p.train.predict_batch_size,
            device=self.device, use_tensors=self.use_tensors,
            num_workers=self.p.data.num_workers,
        )
        feats, labels = extract_features(
            self.encoder(), batches, self.device, channels_last=self.channels_last,
            autocast_dtype=AUTOCAST.get(self.p.train.precision),
        )
        return feats.to(self.device), labels.to(self.device)

    def features(self, split: str) -> tuple[Tensor, Tensor] | None:
        """Features of the whole split on the main process's device, None on the others:
        only the main process trains the probe, so no other holds the full set."""
        n = len(getattr(self.splits, split))
        feats, labels = (gather_to_main(t) for t in self.local_features(split, torch.arange(n)))
        return None if feats is None or labels is None else (feats[:n], labels[:n])

    def knn(self) -> dict[str, float] | None:
        """kNN top-1/5 of the held-out split against the training features (each capped by
        ``probe.knn_max_*``); every rank keeps only its shard of the bank, on its device
        (:func:`sharded_knn_accuracy`)."""
        pr, seed = self.p.probe, self.p.train.seed
        bank_rows = eval_rows(len(self.splits.train), pr.knn_max_train, seed)
        query_rows = eval_rows(len(self.splits.val), pr.knn_max_queries, seed + 1)
        bank, bank_labels = self.local_features("train", bank_rows)
        offset = self.rank * len(bank)
        real = max(0, min(len(bank), len(bank_rows) - offset))  # the last shard's padding out
        queries, query_labels = self.local_features("val", query_rows)
        if self.world > 1:
            queries, query_labels = self.acc.gather(queries), self.acc.gather(query_labels)
        n = len(query_rows)
        return sharded_knn_accuracy(
            bank[:real], bank_labels[:real], offset, queries[:n], query_labels[:n],
            self.splits.info.num_classes, bank_size=len(bank_rows), k=pr.knn_k,
            temperature=pr.knn_temperature,
        )

    def linear(self) -> dict[str, Any] | None:
        """Offline linear evaluation on frozen features (the original protocol): metrics as
        ``{split}_{metric}`` of the held-out splits."""
        pr = self.p.probe
        held_out = ("test",) if self.splits.val_is_test else ("val", "test")
        feats = {s: self.features(s) for s in ("train", *held_out) if len(getattr(self.splits, s))}
        if not self.acc.is_main_process:
            return None
        result = train_linear_probe(
            feats["train"], self.splits.info.num_classes, epochs=pr.epochs,
            batch_size=pr.batch_size, base_lr=pr.base_lr, weight_decay=pr.weight_decay,
            momentum=pr.momentum, seed=self.p.train.seed,
            evaluate={k: v for k, v in feats.items() if k != "train"},
            device=self.device, eval_batch_size=pr.val_batch_size,
        )
        return {f"{split}_{name}": value
                for split, metrics in result.metrics.items() for name, value in metrics.items()}
