"""Probing precomputed features: linear eval and kNN from a features export, no images.

This is the original's "using precomputed features". Only the probe settings of the
profile apply here: ``enabled`` and ``interval`` schedule probes during training and
mean nothing for saved features; ``knn`` turns the kNN part on or off.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sslterm.eval.export import load_features
from sslterm.eval.knn import knn_accuracy
from sslterm.eval.linear import probe_lr, train_linear_probe
from sslterm.profile.schema import ProbeConfig

SOURCE_KEYS = ("dataset", "encoder", "small_stem", "image_size", "checkpoint", "run", "protocol")


def probe_features(
    path: str | Path, cfg: ProbeConfig, *, seed: int = 0, device: str | torch.device = "cpu"
) -> dict:
    """Train the linear probe and run kNN on saved features; return a results dict.

    Shape::

        {"source": {"path", "num_classes", "feature_dim", "splits": {name: N}, dataset, ...},
         "linear": {"protocol": "offline linear eval", "epochs", "batch_size", "lr",
                    "weight_decay", "momentum", "seed",
                    "train": {"top1", "top5"}, "val": {...}, "test": {...}},
         "knn": {"protocol": "knn", "k", "temperature", "val": {...}, "test": {...}}}

    kNN queries every split but train (a train query would find itself) and is left out
    when cfg.knn is off or there is no other split. "lr" is the peak lr after batch scaling.
    """
    splits, meta = load_features(path)
    num_classes = meta["num_classes"]
    train, others = splits["train"], {n: s for n, s in splits.items() if n != "train"}
    probe = train_linear_probe(
        train,
        num_classes,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        base_lr=cfg.base_lr,
        weight_decay=cfg.weight_decay,
        momentum=cfg.momentum,
        seed=seed,
        evaluate=others,
        device=device,
        eval_batch_size=cfg.val_batch_size,
    )
    results: dict = {
        "source": {
            "path": str(path),
            "num_classes": num_classes,
            "feature_dim": meta["feature_dim"],
            "splits": {name: len(labels) for name, (_, labels) in splits.items()},
            **{key: meta[key] for key in SOURCE_KEYS if key in meta},
        },
        "linear": {
            "protocol": "offline linear eval",
            "epochs": cfg.epochs,
            "batch_size": cfg.batch_size,
            "lr": probe_lr(0, 1, cfg.base_lr, cfg.batch_size),
            "weight_decay": cfg.weight_decay,
            "momentum": cfg.momentum,
            "seed": seed,
            **probe.metrics,
        },
    }
    if cfg.knn and others:
        train_features = train[0].to(device)
        train_labels = train[1].to(device)
        results["knn"] = {
            "protocol": "knn",
            "k": min(cfg.knn_k, len(train_labels)),
            "temperature": cfg.knn_temperature,
            **{
                name: knn_accuracy(
                    train_features,
                    train_labels,
                    features,
                    labels,
                    num_classes,
                    k=cfg.knn_k,
                    temperature=cfg.knn_temperature,
                )
                for name, (features, labels) in others.items()
            },
        }
    return results
